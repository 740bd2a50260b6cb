"""The loop-lag probe: it sees a blocked event loop, and the status numbers follow."""

from __future__ import annotations

import asyncio
import time

from gateway.loop_lag import LoopLagProbe


def test_the_summary_is_the_nearest_rank_of_the_recent_samples() -> None:
    probe = LoopLagProbe(keep=100)
    probe.record(-3.0)  # an early wake is no lag
    for ms in range(1, 201):  # only the last 100 (101..200) are kept
        probe.record(float(ms))
    summary = probe.summary()
    assert summary["p50_ms"] == 150.0
    assert summary["p99_ms"] == 199.0
    assert summary["max_ms"] == 200.0 and summary["worst_ms"] == 200.0
    assert summary["samples"] == 201


def test_an_empty_probe_reports_zeros() -> None:
    assert LoopLagProbe().summary() == {
        "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "worst_ms": 0.0, "samples": 0
    }  # fmt: skip


async def test_a_blocked_loop_shows_as_lag_of_at_least_the_block() -> None:
    probe = LoopLagProbe(interval=0.005)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.03)
    time.sleep(0.15)  # noqa: ASYNC251  # the bug the probe is there to show
    await asyncio.sleep(0.03)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert probe.worst_ms >= 140  # a lower bound (it woke no earlier), not a timing target
    assert probe.summary()["max_ms"] == round(probe.worst_ms, 3)
