"""The UI process's way to the gateway: calls with deadlines, few at a time, shared snapshots.

Each call goes over the channel (gateway.web.channel) to the gateway's loop, at most a
few at a time and each with a deadline. The dashboard's snapshot is shared: however many
browsers watch, the gateway builds at most one per second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.web.i18n import language_of, t

SNAPSHOT_EVERY = 1.0

Remote = Callable[..., Awaitable[Any]]


class GatewayNotAnswering(Exception):
    """The gateway did not answer in time (it is stopped, hung or overloaded)."""


class Bridge:
    """Calls into the gateway from the web UI's loop, bounded and with deadlines."""

    def __init__(self, remote: Remote, *, concurrency: int = 4) -> None:
        self.remote = remote
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_at = 0.0
        self._snapshot_lock: asyncio.Lock | None = None

    async def call(self, name: str, *args: Any, extra_wait: float = 0.0) -> Any:
        """Call ``name(*args)`` on the gateway (deadline: 5 s plus ``extra_wait``)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        deadline = 5.0 + extra_wait
        async with self._slots:
            try:
                return await asyncio.wait_for(self.remote(name, *args), deadline)
            except TimeoutError:
                raise GatewayNotAnswering(
                    t(self.language, "gw.no_answer", seconds=f"{deadline:g}")
                ) from None
            except ConnectionError as exc:
                raise GatewayNotAnswering(t(self.language, "gw.not_running", error=exc)) from None

    @property
    def language(self) -> str:
        """The site's language as the last snapshot said (en before the first one)."""
        return language_of((self._snapshot or {}).get("language"))

    async def site(self) -> dict[str, Any]:
        """The last snapshot for what hardly changes (time zone, language, door list):
        pages of the history need not wait for a hung gateway."""
        if self._snapshot is not None:
            return self._snapshot
        return await self.snapshot()

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
                fresh: dict[str, Any] = await self.call("snapshot")
            except GatewayNotAnswering as exc:
                last = dict(self._snapshot or {})
                last["stale"] = True
                last["stale_reason"] = str(exc)[:1].upper() + str(exc)[1:] + "."
                return last
            fresh["stale"] = False
            self._snapshot, self._snapshot_at = fresh, time.monotonic()
            return fresh
