"""One record that cannot be finalised for a moment must not stop the others (defect 2).

Before: ``Entrance.present`` had no ``finally`` between the release and the finalise, a
failed finalise left the record open, and the outbox stopped at it until a restart.
"""

from __future__ import annotations

from gateway.errors import HardwareError, JournalError
from tests.supervision.helpers import (
    ScriptedReader,
    load_members,
    offline_config,
    running,
    until,
)


async def unacked_seqs(gw) -> list[int]:  # type: ignore[no-untyped-def]
    return [r["seq"] for r in await gw.journal.unacked(0, 10_000)]


async def test_a_finalise_that_fails_is_retried_and_later_records_publish_meanwhile(tmp_path):
    async with running(offline_config(tmp_path)) as gw:
        load_members(gw, 1, 2)
        entrance = gw.entrances["in"]
        entrance.retry_initial = entrance.retry_max = 0.05
        real_finalise = gw.journal.finalise
        disk_full: set[int] = set()

        async def flaky_finalise(seq, *, passed, charged):  # type: ignore[no-untyped-def]
            if not disk_full and seq == gw.journal.last_seq:
                disk_full.add(seq)  # the first check-in's finalise finds the disk full
            if seq in disk_full:
                raise JournalError("journal: the disk is full (database or disk is full)")
            return await real_finalise(seq, passed=passed, charged=charged)

        gw.journal.finalise = flaky_finalise  # type: ignore[method-assign]
        reader = ScriptedReader("r1")
        gw.attach_reader(reader, "in", 0)
        reader.nfc("04000001")
        await until(lambda: reader.feedbacks == [True])  # the member got in, told at once
        [stuck] = disk_full
        assert gw.state.own_inside.get("gym", 0) == 1  # the local state took the passage
        reader.nfc("04000002")  # the door is not held by the stuck record
        await until(lambda: reader.feedbacks == [True, True])
        published = [r["message"] for r in await gw.journal.unacked(0, 10_000)]
        assert stuck not in [m["seq"] for m in published]
        assert [m["member"] for m in published if "member" in m] == ["M2"]  # not held back
        assert entrance.unfinished == 1
        disk_full.clear()  # space again: the retry finalises it and it follows
        await until(lambda: entrance.unfinished == 0)
        late = await gw.journal.unacked(0, 10_000)
        [m1] = [r["message"] for r in late if r["seq"] == stuck]
        assert (m1["member"], m1["passed"], m1["charged"]) == ("M1", True, 0)


async def test_a_release_that_raises_still_closes_the_record(tmp_path):
    async with running(offline_config(tmp_path)) as gw:
        load_members(gw, 1)

        async def broken_release():  # type: ignore[no-untyped-def]
            raise HardwareError("door 'in' is not running: start it first")

        gw.doors["in"].release = broken_release  # type: ignore[method-assign]
        reader = ScriptedReader("r1")
        gw.attach_reader(reader, "in", 0)
        reader.nfc("04000001")
        await until(lambda: reader.feedbacks)  # decided (granted) before the door failed
        await until(lambda: gw.entrances["in"]._one_at_a_time.locked() is False)
        [record] = [r for r in await gw.journal.unacked(0, 100) if r["kind"] == "checkin"]
        assert (record["message"]["passed"], record["message"]["charged"]) == (False, 0)
        assert await gw.journal.pending_count() == len(await gw.journal.unacked(0, 100))
