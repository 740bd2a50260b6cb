"""kill -9 at random moments: no gap, no reused seq, nothing reported durable is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.journal import Journal

WRITER = Path(__file__).with_name("journal_writer.py")
ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 50


def _round(path: Path, seed: int, rng: random.Random) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    # wait until it writes, then kill it at a random moment of its writing
    first = child.stdout.readline()
    time.sleep(rng.uniform(0.0, 0.15))
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait(timeout=10)
    return [first, *rest.splitlines()]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_reuses_nothing(tmp_path):
    path = tmp_path / "journal.sqlite"
    rng = random.Random(20261122)
    reported: dict[int, str] = {}
    acked = 0
    for seed in range(ROUNDS):
        for line in _round(path, seed, rng):
            parts = line.split()
            if not parts:
                continue  # a line cut short by the kill is never a durable report
            if parts[0] == "D" and len(parts) == 3:
                seq, record_id = int(parts[1]), parts[2]
                assert reported.setdefault(seq, record_id) == record_id, f"seq {seq} reused"
            elif parts[0] == "A" and len(parts) == 2:
                acked = max(acked, int(parts[1]))

    async def check() -> tuple[dict[int, str], int]:
        journal = await Journal.open(path, "door-1")
        rows = await journal.unacked(limit=10**6)
        last = journal.last_seq
        await journal.close()
        return {r["seq"]: r["message"]["id"] for r in rows}, last

    present, last_seq = asyncio.run(check())
    assert len(reported) >= ROUNDS  # every round reported at least one durable decision
    # every decision reported durable is there with its id, unless the central acked it
    for seq, record_id in reported.items():
        if seq > acked:
            assert present.get(seq) == record_id, f"durable seq {seq} lost"
    # no gap: every seq up to the last one was either acknowledged or is still there
    assert set(range(acked + 1, last_seq + 1)) <= set(present) | set(range(0, acked + 1))
    assert all(seq <= last_seq for seq in reported)
    assert max(reported) <= last_seq
