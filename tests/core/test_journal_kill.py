"""PROTOCOL.md, Check-ins: ``seq`` has no gap and no reuse across power cuts, and a decision
reported durable is never lost. A child process journals decisions and events in a loop
and is killed with SIGKILL at random moments, 50 times, on the same journal file; some
rounds acknowledge (prune) records, some prune everything.

The child prints a line only after the call it reports has returned:
``O <last_seq>`` after open (never below any seq seen before, also when every record
was pruned), ``D <seq> <id>`` after ``record_decision`` (the decision is
durable: a lock may now move), ``E <seq> <id>`` after ``record_event``, and ``A <upto>``
just before an ``ack`` (the records up to it may be gone from then on).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.journal import Journal

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 50
CHILD = (
    "import sys; from tests.core.test_journal_kill import child; "
    "child(sys.argv[1], int(sys.argv[2]))"
)


def child(path: str, seed: int) -> None:
    """The writer (runs in the child process) until it is killed."""
    asyncio.run(_write_until_killed(path, seed))


async def _write_until_killed(path: str, seed: int) -> None:
    rng = random.Random(seed)
    journal = await Journal.open(path, "door-1")
    print(f"O {journal.last_seq}", flush=True)
    while True:
        now = datetime.now(UTC)
        entry = await journal.record_decision({"at": now.isoformat(), "member": f"M{seed}"})
        print(f"D {entry.seq} {entry.id}", flush=True)
        if _empties(seed):  # this round prunes everything and dies with an empty journal
            await journal.finalise(entry.seq, passed=True, charged=1)
            print(f"A {entry.seq}", flush=True)
            await journal.ack(entry.seq)
            await asyncio.sleep(3600)
        if rng.random() < 0.7:
            await journal.finalise(entry.seq, passed=True, charged=1)
        if rng.random() < 0.1:
            event = await journal.record_event("door_closed", door="d", detail={}, at=now)
            print(f"E {event.seq} {event.id}", flush=True)
        if rng.random() < 0.03:
            upto = entry.seq if rng.random() < 0.3 else entry.seq - rng.randint(1, 5)
            print(f"A {upto}", flush=True)
            await journal.ack(upto)


def _empties(seed: int) -> bool:
    """Rounds that prune every record and then idle until the kill."""
    return seed % 7 == 6


@dataclass
class Observed:
    """What the test has seen so far, across all rounds."""

    ids: dict[int, str] = field(default_factory=dict)  # every seq seen, reported or present
    reported: set[int] = field(default_factory=set)  # seqs the child reported durable
    acked: int = 0  # the highest ack the child may have carried out
    high: int = 0  # the highest seq known to exist
    emptied: int = 0  # rounds after which every record had been pruned

    def see(self, seq: int, record_id: str) -> None:
        assert self.ids.setdefault(seq, record_id) == record_id, f"seq {seq} reused"
        self.high = max(self.high, seq)


def _run_child(path: Path, seed: int, rng: random.Random) -> list[str]:
    """Start a writer, SIGKILL it at a random moment, return the complete lines it wrote."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    head = b""
    try:
        if rng.random() < 0.2 and not _empties(seed):
            time.sleep(rng.uniform(0.0, 0.3))  # anywhere, also while it opens the journal
        else:
            head = proc.stdout.readline()  # "O <last_seq>": it is writing from now on
            time.sleep(rng.uniform(0.0, 0.12))
    finally:
        proc.send_signal(signal.SIGKILL)
        out = head + proc.stdout.read()
        proc.stdout.close()
        proc.wait(timeout=10)
    # a line cut short by the kill is not a report
    return [line for line in out.decode().splitlines(keepends=True) if line.endswith("\n")]


def _take(lines: list[str], seen: Observed) -> None:
    """Check and record what the child reported."""
    for line in lines:
        tag, *rest = line.split()
        if tag == "O":
            assert int(rest[0]) >= seen.high, "seq went back after a restart"
        elif tag in ("D", "E"):
            seq, record_id = int(rest[0]), rest[1]
            assert seq > seen.high, f"seq {seq} not above every seq seen before"
            seen.see(seq, record_id)
            seen.reported.add(seq)
        elif tag == "A":
            seen.acked = max(seen.acked, int(rest[0]))


async def _check_journal(path: Path, seen: Observed) -> None:
    """Reopen the journal after a kill: everything reported durable and not acked is there."""
    journal = await Journal.open(path, "door-1")
    try:
        rows = await journal.unacked(limit=10**7)
        seen.emptied += not rows
        assert journal.last_seq >= seen.high, "seq went back"
        assert await journal.pending_count() == len(rows), "a record stayed unfinalised"
    finally:
        await journal.close()
    present = {r["seq"]: r["message"]["id"] for r in rows}
    for seq in seen.reported:
        if seq > seen.acked:
            assert present.get(seq) == seen.ids[seq], f"durable seq {seq} lost"
    for seq, record_id in present.items():
        seen.see(seq, record_id)  # committed but killed before reporting: seen now
    seen.high = max(seen.high, journal.last_seq)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_durable_and_leaves_no_gap(tmp_path):
    path = tmp_path / "journal.sqlite"
    rng = random.Random(20261122)
    seen = Observed()
    for seed in range(ROUNDS):
        _take(_run_child(path, seed, rng), seen)
        asyncio.run(_check_journal(path, seen))
    assert len(seen.reported) >= ROUNDS  # the child got real work done between kills
    assert seen.acked > 0 and seen.emptied > 0  # pruning happened, down to an empty journal
    # no gap, no reuse: every seq up to the last was seen once, with one id
    assert set(seen.ids) == set(range(1, seen.high + 1))
    assert len(set(seen.ids.values())) == len(seen.ids)
