"""The loop-lag probe: it sees a blocked event loop, and the status numbers follow."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

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


@pytest.mark.parametrize("kernel_timer", [True, False], ids=["kernel timer", "asyncio timer"])
async def test_a_blocked_loop_shows_as_lag_of_at_least_the_block(kernel_timer: bool) -> None:
    probe = LoopLagProbe(interval=0.005, kernel_timer=kernel_timer)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.03)
    assert probe.timer == ("kernel" if kernel_timer and sys.platform == "linux" else "asyncio")
    time.sleep(0.15)  # noqa: ASYNC251  # the bug the probe is there to show
    await asyncio.sleep(0.03)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert probe.worst_ms >= 140  # a lower bound (it woke no earlier), not a timing target
    assert probe.summary()["max_ms"] == round(probe.worst_ms, 3)


async def test_the_kernel_timer_counts_a_block_once_and_then_measures_on_schedule() -> None:
    """Expiries missed while the loop was blocked are one late sample, not many (as the
    asyncio timer's), and the samples after it are measured against the schedule."""
    probe = LoopLagProbe(interval=0.005)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.03)
    before = probe.samples
    time.sleep(0.1)  # noqa: ASYNC251  # 20 expiries pass while the loop is blocked
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    after = list(probe.recent)[before:]
    assert max(after) >= 90  # the block, seen once
    assert after[-1] < max(after)  # then on schedule again, not late by the block for ever
    assert probe.samples - before < 20  # not one sample per missed expiry
