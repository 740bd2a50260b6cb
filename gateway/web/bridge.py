"""The hand-over between the web UI's thread and the gateway's loop.

Each call is a coroutine of :class:`gateway.web.gateway_side.GatewaySide` sent to the
gateway's loop with ``run_coroutine_threadsafe`` and awaited on the web loop, at most a
few at a time and each with a deadline. The dashboard's snapshot is shared: however many
browsers watch, the gateway builds at most one per second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gateway.web.gateway_side import GatewaySide

T = TypeVar("T")

SNAPSHOT_EVERY = 1.0


class GatewayNotAnswering(Exception):
    """The gateway's loop did not answer in time (it is stopped, hung or overloaded)."""


class Bridge:
    """Calls into the gateway's loop from the web UI's loop, bounded and with deadlines."""

    def __init__(
        self, side: GatewaySide, gateway_loop: asyncio.AbstractEventLoop, *, concurrency: int = 4
    ) -> None:
        self.side = side
        self.gateway_loop = gateway_loop
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_at = 0.0
        self._snapshot_lock: asyncio.Lock | None = None
        self.last_answer = 0.0

    async def call(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, extra_wait: float = 0.0
    ) -> T:
        """Run ``fn(*args)`` on the gateway's loop (deadline: 5 s plus ``extra_wait``)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        deadline = 5.0 + extra_wait
        async with self._slots:
            if self.gateway_loop.is_closed() or not self.gateway_loop.is_running():
                raise GatewayNotAnswering("the gateway is not running")
            future = asyncio.run_coroutine_threadsafe(fn(*args), self.gateway_loop)
            try:
                result: T = await asyncio.wait_for(asyncio.wrap_future(future), deadline)
            except TimeoutError:
                future.cancel()
                raise GatewayNotAnswering(
                    f"the gateway did not answer within {deadline:g} s"
                ) from None
            self.last_answer = time.monotonic()
            return result

    def forget_snapshot(self) -> None:
        """A command changed something: the next snapshot is built afresh."""
        self._snapshot_at = 0.0

    async def snapshot(self) -> dict[str, Any]:
        """The dashboard's data: fresh (<= 1 s old), or the last one marked ``stale``."""
        if self._snapshot_lock is None:
            self._snapshot_lock = asyncio.Lock()
        async with self._snapshot_lock:
            if self._snapshot is not None and time.monotonic() - self._snapshot_at < SNAPSHOT_EVERY:
                return self._snapshot
            try:
                fresh: dict[str, Any] = await self.call(self.side.snapshot)
            except GatewayNotAnswering as exc:
                last = dict(self._snapshot or {})
                last["stale"] = True
                last["stale_reason"] = str(exc)[:1].upper() + str(exc)[1:] + "."
                return last
            fresh["stale"] = False
            self._snapshot, self._snapshot_at = fresh, time.monotonic()
            return fresh
