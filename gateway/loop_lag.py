"""Event-loop lag: a timer that measures its own lateness.

Anything that blocks the event loop (a synchronous fsync, a big JSON parse, a long GIL
hold by a worker thread) delays every door's decision by as much. The probe asks to wake
up every ``interval`` and records how late it woke; the status shows the recent p50/p99
and the worst, so an installer or the central sees a blocking bug as a number, not as a
slow door. Cheap: one timer and a bounded ring of floats.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable


class LoopLagProbe:
    """Wakes every ``interval`` seconds and keeps the last ``keep`` lateness samples (ms)."""

    def __init__(
        self,
        interval: float = 0.01,
        keep: int = 6000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self.recent: deque[float] = deque(maxlen=keep)  # a minute at 10 ms
        self.worst_ms = 0.0  # since start
        self.samples = 0

    def record(self, lag_ms: float) -> None:
        """Take one lateness sample (negative ones, an early wake, count as 0)."""
        lag_ms = max(0.0, lag_ms)
        self.recent.append(lag_ms)
        self.worst_ms = max(self.worst_ms, lag_ms)
        self.samples += 1

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            due = self._clock() + self.interval
            await asyncio.sleep(self.interval)
            self.record((self._clock() - due) * 1000)

    def summary(self) -> dict[str, float | int]:
        """``p50_ms``, ``p99_ms``, ``max_ms`` of the recent samples, the worst since start,
        and how many samples there are (the status shows this)."""
        ordered = sorted(self.recent)
        return {
            "p50_ms": round(_nearest_rank(ordered, 50), 3),
            "p99_ms": round(_nearest_rank(ordered, 99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else 0.0,
            "worst_ms": round(self.worst_ms, 3),
            "samples": self.samples,
        }


def _nearest_rank(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
