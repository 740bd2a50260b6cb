"""The journal: gap-free seq, UUIDv7 ids, durable before the lock, kept until acknowledged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.errors import JournalError
from gateway.journal import Journal
from gateway.uuid7 import uuid7

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def checkin(n: int = 0) -> dict:
    return {
        "at": AT.isoformat(),
        "door": "main-in",
        "zone": "gym",
        "direction": "in",
        "credential": "nfc",
        "member": f"M{n}",
        "ticket": None,
        "decision": "granted",
        "reason": "ok",
        "contract": "C1",
        "charged": 1,
        "passed": False,
        "warnings": [],
        "offline": False,
        "entitlements_version": 1,
    }


async def test_seq_counts_up_without_gaps_and_ids_are_uuid7(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    entries = [await j.record_decision(checkin(i)) for i in range(5)]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(uuid.UUID(e.id).version == 7 for e in entries)
    assert len({e.id for e in entries}) == 5
    await j.close()


async def test_finalise_makes_a_decision_publishable_with_its_final_state(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    e = await j.record_decision(checkin())
    assert await j.unacked() == []  # not final yet
    final = await j.finalise(e.seq, passed=True, charged=1)
    assert (final["seq"], final["id"], final["gw"], final["passed"]) == (
        e.seq,
        e.id,
        "door-1",
        True,
    )
    [record] = await j.unacked()
    assert record["kind"] == "checkin" and record["message"] == final
    await j.close()


async def test_events_share_the_checkins_counter(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    a = await j.record_decision(checkin())
    b = await j.record_event("door_forced", door="main-in", detail={}, at=AT)
    assert b.seq == a.seq + 1
    await j.close()


async def test_unacked_stops_at_the_first_record_not_yet_final(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    await j.record_event("started", door=None, detail={}, at=AT)
    open_one = await j.record_decision(checkin())
    await j.record_event("door_closed", door="main-in", detail={}, at=AT)
    assert [r["seq"] for r in await j.unacked()] == [1]
    await j.finalise(open_one.seq, passed=False, charged=0)
    assert [r["seq"] for r in await j.unacked()] == [1, 2, 3]
    await j.close()


async def test_ack_prunes_final_records_and_keeps_open_ones(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    await j.record_event("started", door=None, detail={}, at=AT)
    await j.record_decision(checkin())  # still open
    assert await j.ack(2) == 1
    assert await j.pending_count() == 1
    await j.close()


async def test_seq_never_goes_back_after_pruning_and_restart(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    for _ in range(3):
        await j.record_event("started", door=None, detail={}, at=AT)
    await j.ack(3)
    await j.close()
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    assert (await j.record_event("started", door=None, detail={}, at=AT)).seq == 4
    assert j.last_seq == 4 and j.acked_upto == 3
    await j.close()


async def test_a_decision_left_open_by_a_crash_is_finalised_as_not_passed(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    e = await j.record_decision(checkin())
    await j.close()  # the process "died" before the passage was seen
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    [record] = await j.unacked()
    assert record["seq"] == e.seq
    assert (record["message"]["passed"], record["message"]["charged"]) == (False, 0)
    await j.close()


async def test_record_many_writes_one_transaction_in_order(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    entries = await j.record_many([checkin(i) for i in range(100)])
    assert [e.seq for e in entries] == list(range(1, 101))
    assert len(await j.unacked(limit=1000)) == 100
    await j.close()


async def test_unwritable_path_gets_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="state_dir"):
        await Journal.open(blocker / "j.sqlite", "door-1")


async def test_damaged_file_gets_a_clear_error(tmp_path):
    bad = tmp_path / "j.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="damaged"):
        await Journal.open(bad, "door-1")


def test_uuid7_sort_by_time_and_are_unique():
    ids = [uuid7(1_795_000_000_000 + i) for i in range(100)]
    assert ids == sorted(ids)
    assert len({uuid7() for _ in range(10_000)}) == 10_000
    u = uuid7()
    assert u.version == 7 and u.variant == uuid.RFC_4122
