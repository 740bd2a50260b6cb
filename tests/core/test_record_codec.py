"""The record codec (ENTITLEMENTS.md, Privacy): the rows a set is stored as are exactly those
of the reference encoding below, however the codec and the staged set work them out.

The reference is the straightforward encoding, kept here on purpose: a member's JSON
without its card and code values (each excluded by index), a ticket's with its code
replaced, the credentials' canonical keys (:func:`credential_key` of each) hashed with
HMAC-SHA-256, each distinct hash once, in order. Records are drawn from a seeded generator
so that every run checks the same few thousand, with every credential kind and the
duplicates, defaults and odd strings a set can hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.credential_index import IndexBuilder
from gateway.entitlements import (
    Member,
    Ticket,
    credential_key,
    parse_record,
)
from gateway.record_codec import (
    TICKET_CODE_PLACEHOLDER,
    RecordCodec,
    StoredRow,
    index_entries,
    prefix_of,
    split_hashes,
    unhashed,
)
from gateway.staged_set import StagedSet, Staging

KEY = b"\x07" * 32
SEED = 20261202
PHONE_KEY = base64.b64encode(bytes(range(32))).decode("ascii")


def reference_row(record: Member | Ticket, key: bytes = KEY) -> StoredRow:
    """The stored row of ``record`` as the codec has always encoded it."""
    if isinstance(record, Member):
        keys = [
            credential_key(
                c.kind, c.uid if c.kind == "nfc" else c.value, getattr(c, "format", None)
            )
            for c in record.credentials
            if c.kind != "phone"
        ]
        cards = {i for i, c in enumerate(record.credentials) if c.kind != "phone"}
        body = record.model_dump_json(
            by_alias=True, exclude={"credentials": cards}, exclude_defaults=True
        )
        rid, kind = record.member, "member"
    else:
        keys = [credential_key("code", record.code)]
        body = record.model_copy(update={"code": TICKET_CODE_PLACEHOLDER}).model_dump_json(
            by_alias=True, exclude_defaults=True
        )
        rid, kind = record.ticket, "ticket"
    digests: dict[bytes, None] = {}
    for canonical in keys:
        assert canonical is not None  # the record validated
        digests[hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).digest()] = None
    return rid, kind, b"".join(digests), body


# --- generated records ---------------------------------------------------------------------

ODD = ["", "Kari N.", 'say "hi"', "back\\slash", "tab\there", "Ørjan Å", "line\u2028sep", "😀"]


def credential(rng: random.Random) -> dict[str, Any]:
    """A credential of any kind, its value from a small pool (so records share some and
    list some twice), written in any of the forms that mean the same key."""
    n = rng.randrange(12)
    kind = rng.choice(["nfc", "nfc", "code", "phone", "wiegand"])
    if kind == "nfc":
        uid = f"{n:02X}" * rng.choice([4, 7, 10])
        form = rng.randrange(4)
        if form == 1:
            uid = uid.lower()
        elif form == 2:
            uid = ":".join(uid[i : i + 2] for i in range(0, len(uid), 2))
        elif form == 3:
            uid = " " + "-".join(uid[i : i + 4] for i in range(0, len(uid), 4)) + " "
        return {"kind": "nfc", "uid": uid}
    if kind == "wiegand":
        number = rng.choice([str(n), f"000{n}", f" {n} "])
        return {"kind": "nfc", "uid": number, "format": rng.choice(["h10301", " H10301 ", "c1k"])}
    if kind == "code":
        return {"kind": "code", "value": rng.choice([f"CODE-{n}", f"  CODE-{n} ", f"kode {n}"])}
    return {
        "kind": "phone",
        "device": f"phone-{n}",
        "key": rng.choice([PHONE_KEY, "not-a-key"]),
        "bound_at": rng.choice(["2026-03-01T10:00:00+01:00", "2026-03-01T09:00:00Z"]),
    }


def contract(rng: random.Random, i: int) -> dict[str, Any]:
    """A contract with some fields at their defaults (given or left out) and some not."""
    out: dict[str, Any] = {"id": f"C{i}", "type": rng.choice(["recurring", "fixed", "clipcard"])}
    if out["type"] == "clipcard" or rng.random() < 0.2:
        out["credits"] = rng.randrange(0, 20)
    if rng.random() < 0.8:
        out["start"] = "2026-01-01"
    out["end"] = rng.choice([None, None, "2026-12-31"])
    if rng.random() < 0.3:
        out["sites"] = rng.choice([["*"], ["oslo-sentrum"], []])
    if rng.random() < 0.3:
        out["zones"] = rng.choice([["*"], ["gym", "spa"]])
    if rng.random() < 0.3:
        out["schedule"] = rng.choice([None, "open", "offpeak"])
    if rng.random() < 0.2:
        out["freezes"] = [{"from": "2026-07-01", "to": "2026-07-31"}]
    if rng.random() < 0.2:
        out["max_visits"] = {"per": rng.choice(["day", "week", "month"]), "count": 3}
    return out


def raw_member(rng: random.Random, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"member": rng.choice([f"M{i:07d}", f"mé-{i}", f'm"{i}'])}
    if rng.random() < 0.7:
        out["display"] = rng.choice([None, *ODD])
    if rng.random() < 0.5:
        out["role"] = rng.choice(["member", "staff"])
    if rng.random() < 0.9:
        out["credentials"] = [credential(rng) for _ in range(rng.choice([0, 1, 2, 2, 3, 5]))]
    if rng.random() < 0.9:
        out["contracts"] = [contract(rng, c) for c in range(rng.randrange(3))]
    if rng.random() < 0.1:
        out["bookings"] = [
            {"id": "B1", "zone": "squash-2", "from": "2026-11-25T10:00:00+01:00",
             "to": "2026-11-25T11:00:00+01:00"}
        ]  # fmt: skip
    if rng.random() < 0.1:
        out["blocks"] = [{"from": "2026-11-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"}]
    for field, values in (
        ("unpaid", [False, True]),
        ("medical_until", [None, "2027-01-31"]),
        ("message", [None, *ODD]),
        ("a_field_of_a_newer_central", [1, "x"]),  # ignored
    ):
        if rng.random() < 0.2:
            out[field] = rng.choice(values)
    return out


def raw_ticket(rng: random.Random, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ticket": f"T{i}",
        "code": rng.choice([f"TK-{i % 9}", f" TK-{i % 9} ", "guest pass"]),
        "valid_from": "2026-11-25T08:00:00+01:00",
        "valid_to": rng.choice(["2026-11-25T22:00:00+01:00", "2026-11-26T00:00:00Z"]),
    }
    if rng.random() < 0.3:
        out["zones"] = rng.choice([["*"], ["gym"]])
    if rng.random() < 0.3:
        out["uses"] = rng.choice([1, 2, 10])
    return out


def generated_records(count: int, seed: int = SEED) -> list[Member | Ticket]:
    rng = random.Random(seed)
    raws = [raw_ticket(rng, i) if rng.random() < 0.15 else raw_member(rng, i) for i in range(count)]
    return [parse_record(raw) for raw in raws]


RECORDS = generated_records(3000)


def test_the_generated_records_hold_every_case_the_codec_tells_apart() -> None:
    members = [r for r in RECORDS if isinstance(r, Member)]
    kinds = {c.kind for m in members for c in m.credentials}
    assert kinds == {"nfc", "code", "phone"}
    assert any(isinstance(r, Ticket) for r in RECORDS)
    assert any(not m.credentials for m in members)
    assert any(all(c.kind == "phone" for c in m.credentials) and m.credentials for m in members)
    assert any(len(set(m.credential_keys())) < len(m.credential_keys()) for m in members)
    assert any(len(reference_row(m)[2]) == 0 and m.credentials for m in members)


def test_stored_rows_are_those_of_the_reference_encoding() -> None:
    codec = RecordCodec(KEY)
    for record in RECORDS:
        assert codec.stored(record) == reference_row(record)


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 100])
def test_credentials_are_hmac_sha256_with_a_key_of_any_length(size: int) -> None:
    key = bytes(range(7, 7 + size))
    codec = RecordCodec(key)
    for value in ["", "nfc:04A1B2C3", "code:Ørjan 😀", "x" * 200]:
        expected = hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()
        assert codec.hash(value) == expected
    for record in RECORDS[:300]:
        assert codec.stored(record) == reference_row(record, key)


def test_a_chunk_hashed_at_once_is_each_row_hashed_alone() -> None:
    codec = RecordCodec(KEY)
    rows = [unhashed(r) for r in RECORDS]
    assert codec.hashed_rows(rows) == [reference_row(r) for r in RECORDS]
    assert codec.hashed_rows([]) == []


def test_index_entries_are_the_prefix_of_each_hash_with_its_rowid() -> None:
    blobs = [reference_row(r)[2] for r in RECORDS]
    prefixes, rowids = index_entries(41, blobs)
    expected = [
        (prefix_of(digest), rowid)
        for rowid, blob in enumerate(blobs, 41)
        for digest in split_hashes(blob)
    ]
    assert list(zip(prefixes, rowids, strict=True)) == expected
    assert index_entries(1, []) == (index_entries(1, [b""])[0], [])


def test_entries_added_at_once_index_as_those_added_one_by_one() -> None:
    rng = random.Random(SEED)
    # a few prefixes shared (a credential given twice, or a collision), rowids in any order
    prefixes = [rng.getrandbits(64) - 2**63 for _ in range(3000)] + [7, -(2**63), 2**63 - 1] * 9
    entries = [(rng.choice(prefixes), rng.randrange(1, 500)) for _ in range(5000)]
    one_by_one, at_once = IndexBuilder(), IndexBuilder()
    for prefix, rowid in entries:
        one_by_one.add(prefix, rowid)
    at_once.extend([p for p, _ in entries], [r for _, r in entries])
    built = at_once.build()
    assert list(zip(built.prefixes, built.rowids, strict=True)) == sorted(entries)
    assert one_by_one.build() == built
    dropped = {r for _, r in entries if r % 7 == 0}
    again = IndexBuilder()
    again.extend([p for p, _ in entries], [r for _, r in entries])
    kept = again.build(dropped)
    assert list(zip(kept.prefixes, kept.rowids, strict=True)) == sorted(
        (p, r) for p, r in entries if r not in dropped
    )


def test_distinct_prefixes_added_out_of_order_come_out_sorted() -> None:
    rng = random.Random(SEED + 1)
    entries = {rng.getrandbits(64) - 2**63: rowid for rowid in range(1, 20_000)}
    builder = IndexBuilder()
    items = list(entries.items())
    rng.shuffle(items)
    builder.extend([p for p, _ in items], [r for _, r in items])
    built = builder.build()
    assert list(zip(built.prefixes, built.rowids, strict=True)) == sorted(entries.items())


def test_a_staged_set_writes_the_reference_rows_with_their_rowids(tmp_path: Path) -> None:
    records = RECORDS[:997]
    size = 100
    staged = StagedSet(Staging(str(tmp_path / "staged.sqlite"), KEY, 3, 5000), chunk_size=size)
    chunks = list(range(0, len(records), size))
    random.Random(SEED).shuffle(chunks)  # chunks come in any order
    for start in chunks:
        staged.add(start // size, records[start : start + size])
    with sqlite3.connect(tmp_path / "staged.sqlite") as conn:
        written = conn.execute(
            "SELECT rowid, gen, rid, kind, hashes, body FROM records ORDER BY rowid"
        ).fetchall()
    conn.close()
    assert written == [(5001 + i, 3, *reference_row(r)) for i, r in enumerate(records)]
    staged.discard()
