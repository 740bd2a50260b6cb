"""The journal's bound (``[journal] max_pending``): a warning at 80 %, raised once and
cleared once drained; at the bound new decisions are refused and nothing is dropped.

Before, the journal grew without a bound and nobody was told while the central system did
not acknowledge (issue 9, chaos suite: 72 h offline).
"""

from __future__ import annotations

from pathlib import Path

from tests.supervision.helpers import (
    ScriptedReader,
    events,
    load_members,
    offline_config,
    running,
    until,
)
from tests.supervision.test_components import until_events

BOUND = 100


async def test_the_journal_warns_at_80_percent_refuses_at_the_bound_and_drops_nothing(
    tmp_path: Path,
) -> None:
    text = offline_config(tmp_path) + f"[journal]\nmax_pending = {BOUND}\n"
    async with running(text) as gw:
        load_members(gw, 1)
        reader = ScriptedReader("r1", gw)
        gw.attach_reader(reader, "in", 0)
        assert gw.status()["journal"] == {"state": "ok", "max_pending": BOUND, "filling": False}

        async def tap_until(count: int) -> None:
            while len(reader.feedbacks) < count:
                reader.nfc("04000099")  # nobody's card: a quick denial, journalled
                await until(lambda n=len(reader.feedbacks): len(reader.feedbacks) > n)

        await tap_until(70)
        await until(lambda: gw.journal.pending >= 70)
        assert not gw.status()["journal"]["filling"]
        await tap_until(BOUND + 20)  # up to the bound, and beyond it
        await until(lambda: gw.status()["journal"]["state"] == "full")
        status = gw.status()["journal"]
        assert status["filling"] is True and status["decisions_refused"] >= 1
        [filling] = await events(gw, "journal_filling")  # raised once, not per record
        assert filling["detail"]["max_pending"] == BOUND
        assert filling["detail"]["pending"] >= 0.8 * BOUND
        assert reader.feedbacks[-1] is False  # refused at the reader, with feedback
        # nothing dropped: every journalled record is still there, in seq order
        kept = await gw.journal.unacked(0, 10_000)
        assert [r["seq"] for r in kept] == list(range(1, gw.journal.last_seq + 1))
        decisions = [r for r in kept if r["kind"] == "checkin"]
        refused = status["decisions_refused"]
        assert len(decisions) + refused >= BOUND + 20 - 1

        # the central system acknowledges: room again, the warning is cleared once
        await gw.journal.ack(gw.journal.last_seq - 10)
        await until(lambda: gw.status()["journal"]["state"] == "ok")
        await until(lambda: not gw.status()["journal"]["filling"])
        [drained] = await until_events(gw, "journal_drained")
        assert drained["detail"]["pending"] < 0.6 * BOUND
        [full] = await until_events(gw, "journal_full")
        assert full["detail"]["decisions_refused"] == refused
        reader.nfc("04000001")  # decisions are taken again
        await until(lambda: reader.feedbacks[-1] is True)
        assert all(e["seq"] <= gw.journal.last_seq - 10 for e in [filling])  # acked, not again
        assert await events(gw, "journal_filling") == []
