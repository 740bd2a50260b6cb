"""The entitlement store (ENTITLEMENTS.md: Privacy, Credential matching, Invalid sets;
PROTOCOL.md: Entitlement sync): hashed credentials, matching, duplicates, atomic snapshot
and delta, purging, restart from the persisted index, damaged files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import sqlite3
import sys
import threading
from array import array
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import gateway.store as store_module
from gateway import gil, staged_set, store_generation, store_index
from gateway.entitlements import Member, Ticket, parse_records, parse_rules
from gateway.errors import StoreError
from gateway.record_codec import RecordCodec
from gateway.store import EntitlementStore, StagedSet, Staging
from tests.support.sets import contract, member, rules, ticket

KEY = b"k" * 32
AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
RULES = parse_rules(rules())


def records(*raws: dict[str, Any]) -> list[Member | Ticket]:
    return parse_records(list(raws), RULES)


def card(uid: str) -> dict[str, str]:
    return {"kind": "nfc", "uid": uid}


def found(store: EntitlementStore, uid: str) -> str | None:
    """The id of the record a card resolves to."""
    record = store.find("nfc", uid)
    return None if record is None else record.id


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[EntitlementStore]:
    s = EntitlementStore.open(path, KEY)
    yield s
    s.close()


def rows_of(path: Path, rid: str) -> int:
    """Rows a record id has in the database file (read with a separate connection)."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM records WHERE rid = ?", (rid,)).fetchone()[0])


# --- privacy ---------------------------------------------------------------------------------


def test_no_clear_uid_or_code_is_ever_written_to_disk(tmp_path: Path, path: Path) -> None:
    secrets = [b"04A1B2C3D4E5F6", b"SECRET-CODE-77", b"TICKET-CODE-99", b"04BEEF01", b"NEW-77"]
    s = EntitlementStore.open(path, KEY)
    creds = [card("04:a1:b2:c3:d4:e5:f6"), {"kind": "code", "value": "SECRET-CODE-77"}]
    s.replace(1, RULES, records(member(credentials=creds), ticket(code="TICKET-CODE-99")), {}, AT)
    delta = records(
        member("M2", credentials=[card("04BEEF01"), {"kind": "code", "value": "NEW-77"}])
    )
    s.apply_delta(2, 1, delta, [], None, None, AT)
    files = list(tmp_path.iterdir())
    assert any(p.name.endswith("-wal") for p in files)  # the WAL is grepped too
    raw_open = b"".join(p.read_bytes() for p in files)
    s.close()
    raw_closed = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in secrets:
        for raw in (raw_open, raw_closed):
            assert secret not in raw and secret.lower() not in raw


def test_a_stored_member_keeps_its_phone_and_display_but_no_card_values(
    store: EntitlementStore,
) -> None:
    phone = {
        "kind": "phone",
        "device": "dev-1",
        "key": "A" * 43 + "=",
        "bound_at": "2026-11-01T10:00:00+01:00",
    }
    store.replace(1, RULES, records(member(credentials=[card("04A1B2C3"), phone])), {}, AT)
    m = store.member("M1")
    assert m is not None and m.display == "Kari N."
    assert [c.kind for c in m.credentials] == ["phone"] and m.phone and m.phone.device == "dev-1"


# --- credential matching ---------------------------------------------------------------------


def test_uid_matches_ignoring_case_and_separators(store: EntitlementStore) -> None:
    store.replace(1, RULES, records(member(credentials=[card("04A1B2C3D4E5F6")])), {}, AT)
    assert found(store, "04:a1:b2:c3:d4:e5:f6") == "M1"
    assert found(store, "04-A1-B2 c3d4e5f6") == "M1"
    assert found(store, "04a1b2c3d4e5f7") is None
    assert found(store, "not hex") is None


def test_codes_are_trimmed_and_wiegand_numbers_need_their_format(
    store: EntitlementStore,
) -> None:
    creds = [
        {"kind": "code", "value": "FLX-1"},
        {"kind": "nfc", "uid": "12345", "format": "wiegand26"},
    ]
    store.replace(1, RULES, records(member(credentials=creds)), {}, AT)
    assert store.find("code", " FLX-1\n").id == "M1"  # type: ignore[union-attr]
    assert store.find("code", "flx-1") is None  # codes compare exactly
    assert store.find("nfc", "012345", "wiegand26").id == "M1"  # type: ignore[union-attr]
    assert store.find("nfc", "12345", "wiegand34") is None
    assert store.find("nfc", "12345") is None


def test_a_ticket_is_found_by_its_code(store: EntitlementStore) -> None:
    store.replace(1, RULES, records(ticket()), {}, AT)
    found_ticket = store.find("code", "EVT-1")
    assert isinstance(found_ticket, Ticket) and found_ticket.ticket == "T-1"
    assert store.ticket("T-1").uses == 1  # type: ignore[union-attr]
    assert store.member("T-1") is None and store.ticket("M1") is None


def test_a_card_listed_twice_in_one_record_still_opens(store: EntitlementStore) -> None:
    creds = [card("04A1B2C3"), card("04:a1:b2:c3")]
    notes = store.replace(1, RULES, records(member(credentials=creds)), {}, AT)
    assert notes == [] and found(store, "04A1B2C3") == "M1"
    notes = store.apply_delta(2, 1, records(member(credentials=creds)), [], None, None, AT)
    assert notes == [] and found(store, "04A1B2C3") == "M1"


# --- a credential belongs to one record ------------------------------------------------------


def test_a_credential_given_twice_in_a_snapshot_stays_with_the_later_record(
    store: EntitlementStore,
) -> None:
    m1 = member("M1", credentials=[card("04A1B2C3"), card("04000001")])
    notes = store.replace(1, RULES, records(m1, member("M2"), member("M3")), {}, AT)
    assert found(store, "04A1B2C3") == "M3"
    assert found(store, "04000001") == "M1"  # M1 keeps its other card
    assert notes == [
        "a card or code of M1 was also given to M2: M2 keeps it",
        "a card or code of M2 was also given to M3: M3 keeps it",
    ]


def test_a_delta_moving_a_credential_notes_it_and_the_old_holder_keeps_the_rest(
    store: EntitlementStore,
) -> None:
    store.replace(
        1, RULES, records(member("M1", credentials=[card("04A1B2C3"), card("04000001")])), {}, AT
    )
    notes = store.apply_delta(2, 1, records(member("M2")), [], None, None, AT)
    assert notes == ["a card or code of M1 was also given to M2: M2 keeps it"]
    assert found(store, "04A1B2C3") == "M2" and found(store, "04000001") == "M1"
    assert store.member("M1") is not None and store.record_count == 2


def test_two_records_of_one_delta_with_the_same_card_the_later_keeps_it(
    store: EntitlementStore,
) -> None:
    store.replace(1, RULES, records(member("M1", credentials=[card("04000001")])), {}, AT)
    delta = records(
        member("M2", credentials=[card("04000009")]), member("M3", credentials=[card("04000009")])
    )
    notes = store.apply_delta(2, 1, delta, [], None, None, AT)
    assert found(store, "04000009") == "M3"
    assert notes == ["a card or code of M2 was also given to M3: M3 keeps it"]


def test_a_record_listed_twice_keeps_the_later_copy(store: EntitlementStore) -> None:
    first = member("M1", credentials=[card("04000001")], display="first")
    second = member("M1", credentials=[card("04000002")], display="second")
    store.replace(1, RULES, records(first, second), {}, AT)
    assert store.record_count == 1 and store.member("M1").display == "second"  # type: ignore[union-attr]
    assert found(store, "04000001") is None and found(store, "04000002") == "M1"
    store.apply_delta(2, 1, records(second, first), [], None, None, AT)
    assert store.record_count == 1 and store.member("M1").display == "first"  # type: ignore[union-attr]
    assert found(store, "04000002") is None and found(store, "04000001") == "M1"


# --- deltas ----------------------------------------------------------------------------------


def test_delta_upserts_deletes_and_updates_rules_and_counts(store: EntitlementStore) -> None:
    store.replace(
        1,
        RULES,
        records(member("M1"), member("M2", credentials=[card("04000002")])),
        {"door-1": 5},
        AT,
    )
    frozen = contract("C1", freezes=[{"from": "2026-11-01", "to": "2026-11-30"}])
    later = datetime(2026, 11, 25, 10, tzinfo=UTC)
    new_rules = parse_rules(rules(max_offline_hours=12))
    store.apply_delta(
        2, 1, records(member("M1", contracts=[frozen])), ["M2"], new_rules, {"door-1": 9}, later
    )
    assert (store.version, store.checkins_upto, store.updated_at) == (2, {"door-1": 9}, later)
    assert store.rules is not None and store.rules.max_offline_hours == 12
    assert store.find("nfc", "04A1B2C3").contracts[0].freezes  # type: ignore[union-attr]
    assert store.record_count == 1
    store.apply_delta(3, 2, [], [], None, None, later)
    assert store.rules.max_offline_hours == 12 and store.checkins_upto == {"door-1": 9}


def test_a_delta_on_the_wrong_base_is_refused_and_changes_nothing(
    store: EntitlementStore,
) -> None:
    with pytest.raises(StoreError, match="no set yet"):
        store.apply_delta(1, 0, records(member("M1")), [], None, None, AT)
    store.replace(1, RULES, records(member("M1")), {}, AT)
    with pytest.raises(StoreError, match="based on version 2, but the store has version 1"):
        store.apply_delta(
            3, 2, records(member("M9", credentials=[card("04000009")])), ["M1"], None, None, AT
        )
    assert (
        store.version == 1 and found(store, "04A1B2C3") == "M1" and found(store, "04000009") is None
    )


def test_a_delta_that_fails_half_way_is_not_applied_at_all(
    path: Path, store: EntitlementStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.replace(
        1, RULES, records(member("M1"), member("M2", credentials=[card("04000002")])), {}, AT
    )
    real = RecordCodec.stored

    def fail_on_m4(self: RecordCodec, record: Member | Ticket) -> Any:
        if record.id == "M4":
            raise RuntimeError("power cut")
        return real(self, record)

    monkeypatch.setattr(RecordCodec, "stored", fail_on_m4)
    delta = records(
        member("M3", credentials=[card("04000003")]), member("M4", credentials=[card("04000004")])
    )
    with pytest.raises(RuntimeError):
        store.apply_delta(2, 1, delta, ["M2"], None, None, AT)
    monkeypatch.undo()
    assert store.version == 1 and store.record_count == 2
    assert found(store, "04000002") == "M2" and found(store, "04000003") is None
    store.close()
    again = EntitlementStore.open(path, KEY)
    assert again.version == 1 and found(again, "04000002") == "M2" and again.member("M3") is None
    again.close()


def test_a_deleted_member_is_purged_at_once(path: Path, store: EntitlementStore) -> None:
    store.replace(
        1, RULES, records(member("M1"), member("M2", credentials=[card("04000002")])), {}, AT
    )
    store.apply_delta(2, 1, [], ["M2"], None, None, AT)
    assert found(store, "04000002") is None and store.member("M2") is None
    assert rows_of(path, "M2") == 0
    store.apply_delta(3, 2, records(member("M1", display="Kari")), [], None, None, AT)
    assert rows_of(path, "M1") == 1  # the superseded row is gone too


# --- atomic for readers ----------------------------------------------------------------------


def version_set(v: int, n: int = 2000) -> list[Member | Ticket]:
    """n members whose contracts all carry the version tag ``v{v}``."""
    return records(
        *[
            member(f"M{i}", credentials=[card(f"04{i:06X}")], contracts=[contract(f"v{v}")])
            for i in range(n)
        ]
    )


def read_pass(store: EntitlementStore, n: int, seen: list[int], problems: list[str]) -> None:
    """Read three members by card and by id; note their version tags, or that one vanished."""
    for i in (0, n // 2, n - 1):
        record = store.find("nfc", f"04{i:06X}")
        by_id = store.member(f"M{i}")
        if record is None or by_id is None:
            problems.append(f"M{i} vanished")
            continue
        seen += [int(record.contracts[0].id[1:]), int(by_id.contracts[0].id[1:])]


@contextlib.contextmanager
def reading(store: EntitlementStore) -> Iterator[tuple[list[int], list[str]]]:
    """A thread reading ``store`` over and over (:func:`read_pass`) until the block ends."""
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def reader_loop() -> None:
        while not stop.is_set():
            read_pass(store, 2000, seen, problems)

    reader = threading.Thread(target=reader_loop)
    reader.start()
    try:
        yield seen, problems
    finally:
        stop.set()
        reader.join()


def assert_never_goes_back(seen: list[int]) -> None:
    assert seen and all(a <= b for a, b in itertools.pairwise(seen)), "an older set came back"


@pytest.mark.parametrize("where", ["file", "memory"])
def test_replace_in_a_thread_is_atomic_for_a_reader_thread(path: Path, where: str) -> None:
    s = EntitlementStore.open(path if where == "file" else ":memory:", KEY)
    s.replace(1, RULES, version_set(1), {}, AT)
    with reading(s) as (seen, problems):
        for v in (2, 3):
            s.replace(v, RULES, version_set(v), {}, AT)
    assert problems == []
    assert_never_goes_back(seen)
    assert set(seen) <= {1, 2, 3} and found(s, "04000000") == "M0"
    assert s.member("M1999").contracts[0].id == "v3"  # type: ignore[union-attr]
    s.close()


async def test_replace_and_delta_in_worker_threads_are_atomic_for_the_event_loop(
    store: EntitlementStore,
) -> None:
    n = 1500
    store.replace(1, RULES, version_set(1, n), {}, AT)
    done = False
    seen: list[int] = []
    problems: list[str] = []

    async def loop_reader() -> None:
        while not done:
            read_pass(store, n, seen, problems)
            await asyncio.sleep(0)

    task = asyncio.create_task(loop_reader())
    await asyncio.to_thread(store.replace, 2, RULES, version_set(2, n), {}, AT)
    await asyncio.to_thread(store.apply_delta, 3, 2, version_set(3, n), [], None, None, AT)
    done = True
    await task
    assert problems == []
    assert_never_goes_back(seen)
    assert store.find("nfc", f"04{n - 1:06X}").contracts[0].id == "v3"  # type: ignore[union-attr]


# --- restart ---------------------------------------------------------------------------------


def test_everything_survives_a_restart_and_the_index_loads_from_blob_and_log(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = EntitlementStore.open(path, KEY)
    s.replace(
        1, RULES, records(member("M1"), member("M2", credentials=[card("04000002")])), {"gw": 3}, AT
    )
    s.apply_delta(
        2,
        1,
        records(member("M3", credentials=[card("04000003"), card("04A1B2C3")])),
        ["M2"],
        None,
        None,
        AT,
    )
    s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM index_log").fetchone()[0] > 0

    def no_rebuild(conn: sqlite3.Connection, gen: int) -> None:
        raise AssertionError("the index was rebuilt from the records")

    monkeypatch.setattr(store_index, "rebuilt", no_rebuild)
    s = EntitlementStore.open(path, KEY)
    assert (s.version, s.record_count, s.checkins_upto, s.updated_at) == (2, 2, {"gw": 3}, AT)
    assert s.rules is not None and s.rules.site == "oslo-sentrum"
    assert found(s, "04000003") == "M3" and found(s, "04A1B2C3") == "M3"
    assert found(s, "04000002") is None and s.member("M2") is None
    assert s.member("M1") is not None and s.member("M1").credentials == []  # type: ignore[union-attr]
    s.close()


def test_the_index_is_compacted_into_a_new_blob_and_still_correct(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "COMPACT_AFTER", 5)
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(member("M1")), {}, AT)
    for v in range(2, 8):
        s.apply_delta(
            v,
            v - 1,
            records(member(f"M{v}", credentials=[card(f"040000{v:02X}")])),
            [f"M{v - 1}"] if v > 2 else [],
            None,
            None,
            AT,
        )
    assert s._view.index.overlay_size <= 5
    rebuilt = store_index.rebuilt(s._writer, s._view.gen)  # what the records in the file give
    assert s._view.index.compacted() == rebuilt
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM index_log").fetchone()[0] <= 5
    assert (
        found(s, "04000007") == "M7"
        and found(s, "04000006") is None
        and found(s, "04A1B2C3") == "M1"
    )
    s.close()
    s = EntitlementStore.open(path, KEY)
    assert found(s, "04000007") == "M7" and found(s, "04000006") is None and s.record_count == 2
    s.close()


def test_leftovers_of_an_interrupted_snapshot_are_removed_at_start(path: Path) -> None:
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(member("M1")), {}, AT)
    s.close()
    with sqlite3.connect(path) as db:  # as if the power went out between two batches
        db.execute(
            "INSERT INTO records (gen, rid, kind, hashes, body) "
            "VALUES (2, 'M1', 'member', x'', '{}')"
        )
    s = EntitlementStore.open(path, KEY)
    assert s.record_count == 1 and rows_of(path, "M1") == 1 and found(s, "04A1B2C3") == "M1"
    s.close()


def test_touch_confirms_the_set_without_changing_it(path: Path, store: EntitlementStore) -> None:
    store.touch(AT)
    assert store.updated_at is None  # nothing to confirm yet
    store.replace(1, RULES, records(member()), {}, AT)
    later = datetime(2026, 11, 26, tzinfo=UTC)
    store.touch(later)
    assert (store.version, store.updated_at) == (1, later)
    store.close()
    again = EntitlementStore.open(path, KEY)
    assert again.updated_at == later
    again.close()


# --- prefix collisions -----------------------------------------------------------------------


def test_a_prefix_collision_never_returns_the_wrong_record(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (store_module, store_index, store_generation):  # all collide
        monkeypatch.setattr(module, "prefix_of", lambda digest: 7)
    real_entries = staged_set.index_entries

    def colliding_entries(first: int, blobs: Sequence[bytes]) -> tuple[array[int], list[int]]:
        prefixes, rowids = real_entries(first, blobs)
        return array("q", [7] * len(prefixes)), rowids

    for module in (staged_set, store_module):
        monkeypatch.setattr(module, "index_entries", colliding_entries)
    s = EntitlementStore.open(path, KEY)
    notes = s.replace(
        1,
        RULES,
        records(
            member("M1", credentials=[card("04000001")]),
            member("M2", credentials=[card("04000002")]),
            member("M3", credentials=[card("04000001"), card("04000003")]),
        ),
        {},
        AT,
    )
    assert notes == ["a card or code of M1 was also given to M3: M3 keeps it"]
    assert [found(s, f"0400000{i}") for i in (1, 2, 3, 4)] == ["M3", "M2", "M3", None]
    notes = s.apply_delta(
        2, 1, records(member("M4", credentials=[card("04000002")])), ["M3"], None, None, AT
    )
    assert notes == ["a card or code of M2 was also given to M4: M4 keeps it"]
    assert [found(s, f"0400000{i}") for i in (1, 2, 3, 4)] == [None, "M4", None, None]
    assert s.member("M2") is not None
    s.close()
    s = EntitlementStore.open(path, KEY)
    assert [found(s, f"0400000{i}") for i in (1, 2, 3)] == [None, "M4", None]
    s.close()


# --- damaged or missing files ----------------------------------------------------------------


def test_a_damaged_file_is_a_clear_error(path: Path) -> None:
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match=r"is damaged .*delete it.*fresh snapshot"):
        EntitlementStore.open(path, KEY)


def test_damaged_contents_are_a_clear_error(path: Path) -> None:
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(member()), {}, AT)
    s.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'not json' WHERE key = 'rules'")
    with pytest.raises(StoreError, match="is damaged"):
        EntitlementStore.open(path, KEY)


def test_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot be opened.*directory"):
        EntitlementStore.open(tmp_path / "nowhere" / "store.sqlite", KEY)


def test_an_empty_store_finds_nothing(store: EntitlementStore) -> None:
    assert store.version is None and store.rules is None and store.record_count == 0
    assert store.find("nfc", "04A1B2C3") is None and store.member("M1") is None


def test_memory_store_for_the_cli() -> None:
    s = EntitlementStore.open(":memory:", KEY)
    s.replace(4, RULES, records(member(), ticket()), {}, AT)
    assert (s.version, s.record_count, found(s, "04A1B2C3")) == (4, 2, "M1")
    s.close()


def test_an_empty_set_survives_a_restart(path: Path) -> None:
    s = EntitlementStore.open(path, KEY)
    s.replace(3, RULES, [], {}, AT)
    s.close()
    s = EntitlementStore.open(path, KEY)
    assert (s.version, s.record_count, found(s, "04A1B2C3")) == (3, 0, None)
    s.close()


# --- a whole new set staged in a file of its own, then adopted --------------------------------


def staged(store: EntitlementStore, chunks: dict[int, list[Member | Ticket]]) -> StagedSet:
    """A staged set for ``store`` with ``chunks`` added in the order given."""
    new = StagedSet(store.staging(), chunk_size=CHUNK)
    for i, part in chunks.items():
        new.add(i, part)
    return new


CHUNK = 3


def test_a_staged_set_written_out_of_order_is_the_set_in_chunk_order(
    path: Path, store: EntitlementStore
) -> None:
    store.replace(
        1, RULES, records(member("M1"), member("M9", credentials=[card("04000009")])), {}, AT
    )
    first = records(member("M1", credentials=[card("04A1B2C3")]), member("M2", display="old"))
    second = records(member("M2", display="new", credentials=[card("04A1B2C3")]))
    new = staged(store, {1: second, 0: first})  # chunk 1 arrives first
    count, notes = new.finish(2, RULES, {"gw-a": 7}, AT)
    assert (count, notes) == (2, ["a card or code of M1 was also given to M2: M2 keeps it"])
    assert store.version == 1 and found(store, "04000009") == "M9"  # nothing seen yet
    store.adopt(new.path)
    assert store.version == 2 and store.record_count == 2 and store.checkins_upto == {"gw-a": 7}
    assert found(store, "04A1B2C3") == "M2" and found(store, "04000009") is None
    assert store.member("M2").display == "new"  # type: ignore[union-attr]
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "store.sqlite",
        "store.sqlite-shm",
        "store.sqlite-wal",
    ]  # the staged file became the store; the replaced one is gone
    store.close()
    again = EntitlementStore.open(path, KEY)  # durable: the adopted file is the store now
    assert again.version == 2 and found(again, "04A1B2C3") == "M2"
    again.apply_delta(
        3, 2, records(member("M3", credentials=[card("04000003")])), [], None, None, AT
    )
    assert found(again, "04000003") == "M3" and again.record_count == 3
    again.close()


def test_a_staged_set_keeps_no_card_value_in_clear(path: Path, store: EntitlementStore) -> None:
    store.replace(1, RULES, records(member("M1")), {}, AT)
    creds = [card("04BEEF01020304"), {"kind": "code", "value": "STAGED-CODE-1"}]
    new = staged(store, {0: records(member("M2", credentials=creds), ticket(code="TCODE-42"))})
    new.finish(2, RULES, {}, AT)
    store.adopt(new.path)
    assert store.find("code", "TCODE-42") is not None
    data = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert not any(s in data for s in (b"04BEEF01020304", b"STAGED-CODE-1", b"TCODE-42"))


def test_readers_see_the_old_set_or_the_new_one_while_a_staged_set_is_adopted(
    path: Path, store: EntitlementStore
) -> None:
    store.replace(1, RULES, version_set(1), {}, AT)
    with reading(store) as (seen, problems):
        for v in (2, 3):
            new = StagedSet(store.staging(), chunk_size=2000)
            new.add(0, version_set(v))
            new.finish(v, RULES, {}, AT)
            store.adopt(new.path)
    assert problems == []
    assert_never_goes_back(seen)
    assert store.member("M1999").contracts[0].id == "v3"  # type: ignore[union-attr]


def test_a_staged_set_that_is_not_finished_is_refused_and_the_store_keeps_its_set(
    store: EntitlementStore,
) -> None:
    store.replace(1, RULES, records(member("M1")), {}, AT)
    new = staged(store, {0: records(member("M2"))})
    with pytest.raises(StoreError, match="cannot be read"):
        store.adopt(new.path)  # no index, no meta yet
    new.discard()
    assert store.version == 1 and found(store, "04A1B2C3") == "M1"
    with pytest.raises(StoreError, match="cannot be read"):
        store.adopt(new.path)  # gone


def test_a_staged_set_of_an_older_generation_is_refused(store: EntitlementStore) -> None:
    store.replace(1, RULES, records(member("M1")), {}, AT)
    current = store.staging()
    old = StagedSet(Staging(current.path, KEY, current.gen - 1, current.first_rowid), chunk_size=3)
    old.add(0, records(member("M2")))
    old.finish(2, RULES, {}, AT)
    with pytest.raises(StoreError, match="older than the store"):
        store.adopt(old.path)
    assert store.version == 1 and found(store, "04A1B2C3") == "M1"


def test_a_chunk_with_too_many_records_is_refused(store: EntitlementStore) -> None:
    store.replace(1, RULES, records(member("M1")), {}, AT)
    new = StagedSet(store.staging(), chunk_size=1)
    with pytest.raises(ValueError, match="at most 1"):
        new.add(0, records(member("M2"), member("M3")))
    new.discard()


def test_a_staged_set_left_by_a_crash_is_removed_at_start(path: Path) -> None:
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(member("M1")), {}, AT)
    new = staged(s, {0: records(member("M2"))})  # the power goes out here
    retired = path.with_name(path.name + ".old")
    retired.write_bytes(b"a replaced file the power cut left behind")
    s.close()
    assert Path(new.path).exists()
    s = EntitlementStore.open(path, KEY)
    assert not Path(new.path).exists() and not retired.exists() and s.version == 1
    s.close()


def test_a_memory_store_cannot_stage() -> None:
    s = EntitlementStore.open(":memory:", KEY)
    with pytest.raises(StoreError, match="in-memory"):
        s.staging()
    with pytest.raises(StoreError, match="in-memory"):
        s.adopt("/nonexistent")
    s.close()


# --- how a record is kept ------------------------------------------------------------------


def test_a_stored_record_reads_back_as_it_was_given_whatever_is_left_at_its_default(
    path: Path,
) -> None:
    phone = {"kind": "phone", "device": "d1", "key": "AAAA", "bound_at": "2026-11-01T10:00:00Z"}
    full = member(
        "M1",
        role="staff",
        display=None,
        credentials=[card("04A1B2C3"), phone],
        contracts=[
            contract("C1", "clipcard", credits=0, sites=["oslo"], zones=["gym"],
                     freezes=[{"from": "2026-02-01", "to": "2026-02-10"}],
                     max_visits={"per": "week", "count": 0}),
            contract("C2"),
        ],
        bookings=[{"id": "B1", "zone": "spin", "from": "2026-11-22T18:00:00+01:00",
                   "to": "2026-11-22T19:00:00+01:00"}],
        blocks=[{"from": "2026-11-01T00:00:00+01:00", "to": "2026-11-02T00:00:00+01:00"}],
        unpaid=True,
        medical_until="2026-12-31",
        message="",
    )  # fmt: skip
    given = records(full, member("M2"), ticket(uses=1, zones=["*"]))
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, given, {}, AT)
    m1, m2 = s.member("M1"), s.member("M2")
    assert m1 is not None and m2 is not None
    # card values are kept only as hashes: the card is gone from the record, the phone stays
    assert m1 == given[0].model_copy(update={"credentials": [given[0].credentials[1]]})
    assert m2 == given[1].model_copy(update={"credentials": []})
    assert s.ticket("T-1") == given[2].model_copy(update={"code": "#hashed"})
    assert found(s, "04A1B2C3") == "M2"  # given twice: the later record keeps it
    s.close()


@pytest.mark.parametrize("collector_on", [True, False])
def test_loading_a_set_leaves_the_garbage_collector_as_it_found_it(
    path: Path, collector_on: bool
) -> None:
    import gc

    was = gc.isenabled()
    s = EntitlementStore.open(path, KEY)
    try:
        (gc.enable if collector_on else gc.disable)()
        s.replace(1, RULES, records(member()), {}, AT)
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was else gc.disable)()
        s.close()


def test_a_big_delta_is_not_read_record_by_record(path: Path) -> None:
    """A delta of members updated with the cards they had: their old rows are read a few
    hundred at a query, and their credentials are not looked up one by one (the store's
    thread holds the interpreter lock for every statement it prepares in Python, and the
    doors' loop waits for it)."""
    n = 2000
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(*(member(f"M{i}", credentials=[card(f"04{i:06X}")])
                                  for i in range(n))), {}, AT)  # fmt: skip
    statements: list[str] = []
    s._writer.set_trace_callback(statements.append)
    updated = records(*(member(f"M{i}", display=f"Renamed {i}", credentials=[card(f"04{i:06X}")])
                        for i in range(n)))  # fmt: skip
    assert s.apply_delta(2, 1, updated, [], None, None, AT) == []
    s._writer.set_trace_callback(None)
    reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    assert len(reads) <= 10, f"{len(reads)} reads for a delta of {n} records"
    assert found(s, "04000007") == "M7" and s.member("M7").display == "Renamed 7"
    assert s.record_count == n


def test_no_garbage_collection_runs_while_a_delta_is_applied(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection holds the interpreter lock from start to end: run by the store's thread
    in the middle of a delta, it kept the doors' loop waiting as long. (One may run as the
    collector is switched on again after, over what the delta left.)"""
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(*(member(f"M{i}") for i in range(500))), {}, AT)
    updated = records(*(member(f"M{i}", display=f"Renamed {i}") for i in range(500)))
    collections: list[int] = []
    working = threading.Event()
    write = EntitlementStore._write_delta

    def watched(self: EntitlementStore, *args: Any) -> Any:
        working.set()
        try:
            return write(self, *args)
        finally:
            working.clear()

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and working.is_set():
            collections.append(info["generation"])

    monkeypatch.setattr(EntitlementStore, "_write_delta", watched)

    was = gc.get_threshold()
    gc.set_threshold(50)  # a collection every few allocations, if the collector is on
    gc.callbacks.append(seen)
    try:
        s.apply_delta(2, 1, updated, [], None, None, AT)
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*was)
    assert collections == []
    assert gc.isenabled()  # on again after
    assert s.member("M7").display == "Renamed 7"  # type: ignore[union-attr]


def test_a_delta_is_computed_with_short_turns_for_the_doors_loop(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store's thread computes a delta, the doors' loop waiting for the
    interpreter lock gets it after gateway.gil.COMPUTING_S, not the doors' 1 ms (74-95
    wakes of a thread beside a 20,000-record delta were more than 1 ms late)."""
    s = EntitlementStore.open(path, KEY)
    s.replace(1, RULES, records(*(member(f"M{i}") for i in range(50))), {}, AT)
    updated = records(*(member(f"M{i}", display=f"Renamed {i}") for i in range(50)))
    was = sys.getswitchinterval()
    seen: list[float] = []
    moves = EntitlementStore._moves

    def watched(self: EntitlementStore, *args: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return moves(self, *args)

    monkeypatch.setattr(EntitlementStore, "_moves", watched)
    gil.use_doors_interval()
    try:
        s.apply_delta(2, 1, updated, [], None, None, AT)
        assert seen == [pytest.approx(gil.COMPUTING_S)]
        assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)  # back after
        with pytest.raises(StoreError):
            s.apply_delta(9, 7, updated, [], None, None, AT)  # refused: back all the same
        assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)
    finally:
        sys.setswitchinterval(was)
