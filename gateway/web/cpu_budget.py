"""The web UI's CPU, bounded: on average at most a share of one core, whatever asks.

The UI runs in a process of its own at a lower priority (gateway.web.process), but a flood
of requests (a dashboard polling in a loop, a scanner on the LAN, fifty phones) would
still keep a core busy, and on a box of one or two cores the doors' process then waits
for the scheduler to hand the core back at every tap. So the UI takes a request only
while it is within its budget: it earns ``share`` CPU seconds a second, may save up to
``burst`` of them (an installer opening pages never waits), and a request that comes
while it is in debt waits until the debt is paid. Waiting requests stay bounded by the
server's concurrency limit (uvicorn answers 503 above it). The CPU counted is the whole
process's (every thread), read from the kernel, so nothing it does escapes the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("accessgw.web")

SHARE = 0.25  # of one core, on average, under a flood
BURST_S = 0.5  # CPU seconds the UI may use at once after a quiet time
TOLD_EVERY_S = 60.0  # the log says "requests wait" at most this often


class CpuBudget:
    """A token bucket of CPU seconds, earned at ``share`` a second, at most ``burst``."""

    def __init__(
        self,
        share: float = SHARE,
        burst: float = BURST_S,
        *,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if share <= 0 or burst <= 0:
            raise ValueError("a CPU budget needs a share and a burst above 0")
        self.share, self.burst = share, burst
        self._cpu, self._clock, self._sleep = cpu, clock, sleep
        self._left = burst  # CPU seconds that may be used before requests wait
        self._cpu_at, self._at = cpu(), clock()
        self._turn = asyncio.Lock()  # one waiter at a time: after a wait, one request goes
        self.waited_s = 0.0  # in all, for the log
        self._told_at: float | None = None

    @property
    def left(self) -> float:
        """CPU seconds left in the bucket (negative: the debt), as of now."""
        self._account()
        return self._left

    def _account(self) -> None:
        cpu, now = self._cpu(), self._clock()
        earned = (now - self._at) * self.share
        self._left = min(self.burst, self._left + earned) - (cpu - self._cpu_at)
        self._cpu_at, self._at = cpu, now

    async def take(self) -> None:
        """Return when a request may run: at once within the budget, else once the debt
        is paid."""
        async with self._turn:
            self._account()
            if self._left >= 0:
                return
            wait = -self._left / self.share
            self._tell(wait)
            self.waited_s += wait
            await self._sleep(wait)
            self._account()

    def _tell(self, wait: float) -> None:
        now = self._clock()
        if self._told_at is None or now - self._told_at >= TOLD_EVERY_S:
            self._told_at = now
            log.warning(
                "web UI: more requests than its CPU budget (%.0f%% of a core): each waits "
                "(now %.0f ms) so that the doors keep the CPU",
                self.share * 100, wait * 1000,
            )  # fmt: skip


class Budgeted:
    """An ASGI app whose HTTP and WebSocket requests wait for ``budget`` first."""

    def __init__(self, app: ASGIApp, budget: CpuBudget) -> None:
        self.app, self.budget = app, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await self.budget.take()
        await self.app(scope, receive, send)
