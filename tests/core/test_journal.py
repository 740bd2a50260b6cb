"""PROTOCOL.md, Check-ins and Events: the journal (gap-free seq, UUIDv7 ids, durable before
the lock, kept until acknowledged, crash-left decisions finalised)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import JournalError
from gateway.journal import Journal

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CHECKIN_KEYS = {
    "id", "seq", "gw", "at", "door", "zone", "direction", "credential", "member", "ticket",
    "decision", "reason", "contract", "charged", "passed", "warnings", "offline",
    "entitlements_version",
}  # fmt: skip


def checkin(n: int = 0, *, at: datetime = AT, decision: str = "granted") -> dict:
    """A check-in as the entrance hands it to the journal (no id, seq, gw yet)."""
    return {
        "at": at.isoformat(timespec="milliseconds"),
        "door": "main-in",
        "zone": "gym",
        "direction": "in",
        "credential": "nfc",
        "member": f"M{n}",
        "ticket": None,
        "decision": decision,
        "reason": "ok" if decision == "granted" else "unknown_credential",
        "contract": "C1",
        "charged": 1,
        "passed": False,
        "warnings": [],
        "offline": False,
        "entitlements_version": 1,
    }


@pytest.fixture
async def journal(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    yield j
    await j.close()


async def reopen(j: Journal, tmp_path) -> Journal:
    await j.close()
    return await Journal.open(tmp_path / "j.sqlite", "door-1")


async def test_seq_counts_up_from_one_without_gaps_and_ids_are_unique_uuid7(journal):
    entries = [await journal.record_decision(checkin(i)) for i in range(5)]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(uuid.UUID(e.id).version == 7 for e in entries)
    assert len({e.id for e in entries}) == 5
    assert journal.last_seq == 5


async def test_the_journal_assigns_id_seq_and_gw_whatever_the_caller_put_there(journal):
    entry = await journal.record_decision({**checkin(), "id": "x", "seq": 99, "gw": "other"})
    final = await journal.finalise(entry.seq, passed=True, charged=1)
    assert (final["id"], final["seq"], final["gw"]) == (entry.id, entry.seq, "door-1")


async def test_finalise_makes_a_decision_publishable_as_the_protocol_checkin(journal):
    e = await journal.record_decision(checkin())
    assert await journal.unacked() == []  # not final yet: not published
    final = await journal.finalise(e.seq, passed=True, charged=1)
    assert set(final) == CHECKIN_KEYS
    assert (final["seq"], final["id"], final["gw"]) == (e.seq, e.id, "door-1")
    assert (final["passed"], final["charged"]) == (True, 1)
    [record] = await journal.unacked()
    assert record == {"kind": "checkin", "seq": e.seq, "message": final}


async def test_a_final_checkin_never_changes_again(journal):
    e = await journal.record_decision(checkin())
    first = await journal.finalise(e.seq, passed=True, charged=1)
    assert await journal.finalise(e.seq, passed=False, charged=0) == first
    [record] = await journal.unacked()
    assert record["message"]["passed"] is True


async def test_finalising_an_event_or_an_unknown_seq_is_refused(journal):
    ev = await journal.record_event("started", door=None, detail={}, at=AT)
    with pytest.raises(JournalError, match="event"):
        await journal.finalise(ev.seq, passed=True, charged=0)
    with pytest.raises(JournalError, match="not in the journal"):
        await journal.finalise(42, passed=True, charged=0)


async def test_events_share_the_checkins_counter_and_are_final_at_once(journal):
    a = await journal.record_decision(checkin())
    await journal.finalise(a.seq, passed=False, charged=0)
    b = await journal.record_event("door_forced", door="main-in", detail={"s": 3}, at=AT)
    assert b.seq == a.seq + 1
    records = await journal.unacked()
    assert [r["kind"] for r in records] == ["checkin", "event"]
    assert records[1]["message"] == {
        "id": b.id,
        "seq": b.seq,
        "gw": "door-1",
        "at": "2026-11-25T09:00:00.000+00:00",
        "door": "main-in",
        "type": "door_forced",
        "detail": {"s": 3},
    }


async def test_unacked_passes_over_a_record_not_yet_final_and_it_follows_when_final(journal):
    await journal.record_event("started", door=None, detail={}, at=AT)
    open_one = await journal.record_decision(checkin())
    await journal.record_event("door_closed", door="main-in", detail={}, at=AT)
    assert [r["seq"] for r in await journal.unacked()] == [1, 3]  # 2 does not hold 3 back
    assert await journal.unacked(after_seq=3) == []
    await journal.finalise(open_one.seq, passed=False, charged=0)
    late = await journal.unacked(after_seq=3)  # the outbox is past it: it comes anyway
    assert [r["seq"] for r in late] == [2]
    assert await journal.unacked(after_seq=3) == []  # once
    assert [r["seq"] for r in await journal.unacked()] == [1, 2, 3]  # a restart sees all


async def test_unacked_pages_after_a_seq_with_a_limit(journal):
    await journal.record_many([checkin(i) for i in range(10)])
    assert [r["seq"] for r in await journal.unacked(after_seq=4, limit=3)] == [5, 6, 7]


async def test_ack_prunes_final_records_and_keeps_those_not_final(journal):
    await journal.record_event("started", door=None, detail={}, at=AT)
    open_one = await journal.record_decision(checkin())
    await journal.record_event("door_closed", door="main-in", detail={}, at=AT)
    assert await journal.ack(3) == 2
    assert await journal.pending_count() == 1
    final = await journal.finalise(open_one.seq, passed=True, charged=1)
    assert [r["message"] for r in await journal.unacked()] == [final]


async def test_seq_never_goes_back_after_pruning_everything_and_a_restart(journal, tmp_path):
    for _ in range(3):
        await journal.record_event("started", door=None, detail={}, at=AT)
    assert await journal.ack(3) == 3
    assert await journal.pending_count() == 0
    journal = await reopen(journal, tmp_path)
    assert (journal.last_seq, journal.acked_upto) == (3, 3)
    assert (await journal.record_event("started", door=None, detail={}, at=AT)).seq == 4


async def test_a_decision_left_open_by_a_crash_is_finalised_as_not_passed(journal, tmp_path):
    e = await journal.record_decision(checkin())
    journal = await reopen(journal, tmp_path)  # the process "died" before the passage
    [record] = await journal.unacked()
    assert (record["seq"], record["message"]["id"]) == (e.seq, e.id)
    assert (record["message"]["passed"], record["message"]["charged"]) == (False, 0)


async def test_a_decision_whose_caller_was_cancelled_does_not_block_the_outbox(journal):
    writing, go = threading.Event(), threading.Event()
    insert = journal._insert

    def slow_insert(*args):  # holds the journal thread mid-write, as a slow fsync would
        writing.set()
        go.wait(10)
        return insert(*args)

    journal._insert = slow_insert
    task = asyncio.ensure_future(journal.record_decision(checkin()))
    await asyncio.to_thread(writing.wait, 10)
    task.cancel()  # e.g. the gateway is stopping: no lock will move for this decision
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    journal._insert = insert
    after = await journal.record_event("started", door=None, detail={}, at=AT)
    # It is finalised on the writing thread as its insert ends; the outbox reads on a thread
    # of its own, which sees the last commit: once the writing thread has done what was
    # queued (a count is queued behind it), the abandoned decision reads as final.
    await journal.pending_count()
    records = await journal.unacked()
    assert [r["seq"] for r in records] == [1, after.seq]
    assert (records[0]["message"]["passed"], records[0]["message"]["charged"]) == (False, 0)


async def test_records_since_gives_final_granted_checkins_from_that_time(journal):
    old = await journal.record_decision(checkin(1, at=AT - timedelta(days=2)))
    new = await journal.record_decision(checkin(2, at=AT + timedelta(hours=1)))
    denied = await journal.record_decision(
        checkin(3, at=AT + timedelta(hours=1), decision="denied")
    )
    pending = await journal.record_decision(checkin(4, at=AT + timedelta(hours=2)))
    for e in (old, new, denied):
        await journal.finalise(e.seq, passed=True, charged=1)
    await journal.record_event("started", door=None, detail={}, at=AT + timedelta(hours=1))
    since = await journal.records_since(AT)
    assert [m["seq"] for m in since] == [new.seq]
    assert pending.seq not in [m["seq"] for m in since]


async def test_record_many_writes_one_transaction_in_order(journal):
    entries = await journal.record_many([checkin(i) for i in range(100)])
    assert [e.seq for e in entries] == list(range(1, 101))
    assert len(await journal.unacked(limit=1000)) == 100


async def test_a_record_that_is_not_json_is_refused_and_uses_no_seq(journal):
    with pytest.raises(JournalError, match="not plain JSON"):
        await journal.record_decision({**checkin(), "at": AT})  # a datetime, not a string
    assert (await journal.record_decision(checkin())).seq == 1


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


def chattr(flag: str, path) -> bool:
    """Set or clear the immutable flag (even root cannot write such a file)."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, path], capture_output=True).returncode == 0


async def test_read_only_journal_gets_a_clear_error(tmp_path):
    path = tmp_path / "j.sqlite"
    await (await Journal.open(path, "door-1")).close()
    if not await asyncio.to_thread(chattr, "+i", path):
        pytest.skip("chattr +i (immutable file) is not available here")
    try:
        with pytest.raises(JournalError, match="read-only"):
            await Journal.open(path, "door-1")
    finally:
        await asyncio.to_thread(chattr, "-i", path)


async def test_a_full_disk_gets_a_clear_error_and_the_journal_recovers(journal):
    # a page limit makes SQLite report SQLITE_FULL, as a full disk does
    await journal._run(journal._conn.execute, "PRAGMA max_page_count=8")
    with pytest.raises(JournalError, match="disk is full"):
        for _ in range(100):
            await journal.record_many([{"member": "x" * 1000}] * 5)
    last = journal.last_seq
    assert await journal.ack(last) > 0  # the central catches up: space is freed
    assert (await journal.record_event("started", door=None, detail={}, at=AT)).seq == last + 1


async def test_a_closed_journal_refuses_writes(tmp_path):
    j = await Journal.open(tmp_path / "j.sqlite", "door-1")
    await j.close()
    await j.close()  # twice is fine
    with pytest.raises(JournalError, match="closed"):
        await j.record_decision(checkin())


async def test_a_grant_left_open_at_a_door_without_a_passage_sensor_stays_passed(journal, tmp_path):
    """A restart must not relabel a sensorless door's grant as not passed, not charged."""
    body = {**checkin(1), "charged": 1, "contract": "C1"}
    sensorless = await journal.record_decision(body, passage_assumed=True)
    sensed = await journal.record_decision({**checkin(2), "charged": 1}, passage_assumed=False)
    refused = await journal.record_decision(checkin(3, decision="denied"), passage_assumed=True)
    journal = await reopen(journal, tmp_path)  # as after a SIGKILL: nothing was finalised
    try:
        by_seq = {r["seq"]: r["message"] for r in await journal.unacked()}
    finally:
        await journal.close()
    assert (by_seq[sensorless.seq]["passed"], by_seq[sensorless.seq]["charged"]) == (True, 1)
    assert (by_seq[sensed.seq]["passed"], by_seq[sensed.seq]["charged"]) == (False, 0)
    assert by_seq[refused.seq]["passed"] is False


async def test_a_journal_from_before_the_passage_column_opens_and_gains_it(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "kind TEXT NOT NULL, final INTEGER NOT NULL, body TEXT NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('last_seq', 1), ('acked_upto', 0);"
    )
    body = '{"seq":1,"decision":"granted","passed":false,"charged":1}'
    conn.execute("INSERT INTO records VALUES (1, 'x', 'checkin', 0, ?)", (body,))
    conn.commit()
    conn.close()
    j = await Journal.open(path, "door-1")
    try:
        [record] = await j.unacked()
        assert (record["message"]["passed"], record["message"]["charged"]) == (False, 0)
        await j.record_decision(checkin(), passage_assumed=True)
    finally:
        await j.close()


async def test_the_outbox_reads_while_a_commit_waits_for_the_disk(journal):
    # Until 2026-12-03 unacked() ran on the one writing thread: a backlog's read queued
    # behind a commit's fsync, and on a disk that took hundreds of milliseconds for one the
    # drain stopped with it. Here the writing thread is held as a stalled fsync holds it.
    await journal.record_many([checkin(i) for i in range(5)])
    disk = threading.Event()
    stalled = journal._executor.submit(disk.wait, 30)
    try:
        async with asyncio.timeout(10):  # a guard: before, this waited for the disk
            records = await journal.unacked()
        assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    finally:
        disk.set()
        await asyncio.wrap_future(stalled)


async def test_a_decision_finalised_while_the_outbox_reads_goes_out_exactly_once(journal):
    # The read and the finalising run on two threads: whatever their interleaving, every
    # record is read once the outbox has read past it, and none twice (as the outbox reads:
    # from the highest seq it was given).
    seen: list[int] = []
    after = 0

    async def read() -> None:
        nonlocal after
        for record in await journal.unacked(after_seq=after, limit=7):
            seen.append(record["seq"])
            after = max(after, record["seq"])

    for _ in range(5):
        opened = [await journal.record_decision(checkin(i)) for i in range(60)]
        seen.clear()
        finalising = asyncio.gather(
            *(journal.finalise(o.seq, passed=True, charged=0) for o in opened)
        )
        while not finalising.done():
            await read()
        await finalising
        for _ in range(20):  # what is left: at most a few reads of 7
            await read()
        assert sorted(seen) == [o.seq for o in opened]
        await journal.ack(opened[-1].seq)
