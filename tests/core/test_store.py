"""The entitlement store: hashed credentials, matching, atomic replace and delta, restart."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

import gateway.store as store_module
from gateway.entitlements import parse_records, parse_rules
from gateway.errors import StoreError
from gateway.store import EntitlementStore
from tests.support.sets import contract, member, rules, ticket

KEY = b"k" * 32
AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
RULES = parse_rules(rules())


def records(*raws):
    return parse_records(list(raws), RULES)


def card(uid):
    return {"kind": "nfc", "uid": uid}


@pytest.fixture
def store(tmp_path):
    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    yield s
    s.close()


def test_uid_matches_ignoring_case_and_separators(store):
    store.replace(1, RULES, records(member(credentials=[card("04A1B2C3D4E5F6")])), {}, AT)
    assert store.find("nfc", "04:a1:b2:c3:d4:e5:f6").member == "M1"
    assert store.find("nfc", "04a1b2c3d4e5f7") is None


def test_codes_are_trimmed_and_wiegand_numbers_need_their_format(store):
    creds = [
        {"kind": "code", "value": "FLX-1"},
        {"kind": "nfc", "uid": "12345", "format": "wiegand26"},
    ]
    store.replace(1, RULES, records(member(credentials=creds)), {}, AT)
    assert store.find("code", " FLX-1\n").member == "M1"
    assert store.find("nfc", "012345", "wiegand26").member == "M1"
    assert store.find("nfc", "12345") is None


def test_no_clear_uid_or_code_is_ever_written_to_disk(tmp_path):
    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    creds = [card("04A1B2C3D4E5F6"), {"kind": "code", "value": "SECRET-CODE-77"}]
    s.replace(1, RULES, records(member(credentials=creds), ticket(code="TICKET-CODE-99")), {}, AT)
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (b"04A1B2C3D4E5F6", b"SECRET-CODE-77", b"TICKET-CODE-99"):
        assert secret not in raw and secret.lower() not in raw


def test_a_ticket_is_found_by_its_code(store):
    store.replace(1, RULES, records(ticket()), {}, AT)
    assert store.find("code", "EVT-1").ticket == "T-1"
    assert store.ticket("T-1").uses == 1


def test_a_credential_given_twice_stays_with_the_later_record(store):
    notes = store.replace(1, RULES, records(member("M1"), member("M2")), {}, AT)
    assert store.find("nfc", "04A1B2C3").member == "M2"
    assert len(notes) == 1 and "M1" in notes[0] and "M2" in notes[0]


def test_a_delta_moving_a_credential_notes_it(store):
    store.replace(1, RULES, records(member("M1")), {}, AT)
    notes = store.apply_delta(2, 1, records(member("M2")), [], None, None, AT)
    assert store.find("nfc", "04A1B2C3").member == "M2" and notes


def test_delta_upserts_deletes_and_checks_its_base(store):
    store.replace(
        1,
        RULES,
        records(member("M1"), member("M2", credentials=[card("04000002")])),
        {"door-1": 5},
        AT,
    )
    frozen = contract("C1", freezes=[{"from": "2026-11-01", "to": "2026-11-30"}])
    store.apply_delta(
        2, 1, records(member("M1", contracts=[frozen])), ["M2"], None, {"door-1": 9}, AT
    )
    assert store.version == 2 and store.checkins_upto == {"door-1": 9}
    assert store.find("nfc", "04A1B2C3").contracts[0].freezes
    assert store.find("nfc", "04000002") is None and store.member("M2") is None
    assert store.record_count == 1
    with pytest.raises(StoreError, match="based on version 1"):
        store.apply_delta(3, 1, [], [], None, None, AT)


def test_everything_survives_a_restart(tmp_path):
    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    s.replace(1, RULES, records(member("M1"), member("M2", credentials=[card("04000002")])), {}, AT)
    s.apply_delta(
        2, 1, records(member("M3", credentials=[card("04000003")])), ["M2"], None, None, AT
    )
    s.close()
    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    assert (s.version, s.record_count, s.rules.site) == (2, 2, "oslo-sentrum")
    assert s.find("nfc", "04000003").member == "M3"
    assert s.find("nfc", "04000002") is None
    assert s.find("nfc", "04A1B2C3").member == "M1"
    s.close()


def test_touch_confirms_the_set_without_changing_it(store):
    store.replace(1, RULES, records(member()), {}, AT)
    later = datetime(2026, 11, 26, tzinfo=UTC)
    store.touch(later)
    assert (store.version, store.updated_at) == (1, later)


def test_a_prefix_collision_never_returns_the_wrong_record(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "prefix_of", lambda digest: 7)  # every hash collides
    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    notes = s.replace(
        1,
        RULES,
        records(
            member("M1", credentials=[card("04000001")]),
            member("M2", credentials=[card("04000002")]),
        ),
        {},
        AT,
    )
    assert notes == []
    assert s.find("nfc", "04000001").member == "M1"
    assert s.find("nfc", "04000002").member == "M2"
    assert s.find("nfc", "04000003") is None
    s.close()


def test_replace_is_atomic_for_a_concurrent_reader(tmp_path):
    def version_set(v):
        return records(
            *[
                member(f"M{i}", credentials=[card(f"04{i:06X}")], contracts=[contract(f"v{v}")])
                for i in range(3000)
            ]
        )

    s = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    s.replace(1, RULES, version_set(1), {}, AT)
    new = version_set(2)
    order: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            for i in (0, 1500, 2999):
                record = s.find("nfc", f"04{i:06X}")
                if record is None:
                    problems.append(f"M{i} vanished during the replace")
                    continue
                order.append(record.contracts[0].id)

    reader = threading.Thread(target=read_loop)
    reader.start()
    s.replace(2, RULES, new, {}, AT)
    stop.set()
    reader.join()
    assert problems == []
    assert set(order) <= {"v1", "v2"}
    # once the new set was seen, the old one never comes back
    assert "v1" not in order[order.index("v2") :] if "v2" in order else True
    assert s.find("nfc", "04000000").contracts[0].id == "v2"
    s.close()


def test_a_damaged_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "store.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="fresh snapshot"):
        EntitlementStore.open(bad, KEY)


def test_an_empty_store_finds_nothing(store):
    assert store.version is None and store.find("nfc", "04A1B2C3") is None
