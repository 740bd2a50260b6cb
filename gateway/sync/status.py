"""The gateway's status and occupancy messages (PROTOCOL.md, Status and Topics).

``gw/{gw}/status`` is retained, published on every change and every 60 s; the link also
publishes it right after each (re)connect, replacing the retained will ``{"state":
"offline"}``. ``gw/{gw}/occupancy`` ``{"at", "zones"}`` is retained and published on change.

Both publishers poll their injected sources (cheap reads, once a second by default) and can be
nudged with ``notify()`` for an immediate check. Nothing here blocks a door: when the link is
down the publish is skipped and retried once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from gateway.errors import LinkError
from gateway.sync.topics import gw_topic

log = logging.getLogger(__name__)

DoorState = dict[str, str]  # {"mode", "lock", "contact", "reader"}


def encode(obj: Any) -> bytes:
    """Compact JSON in UTF-8 for what the gateway publishes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Publisher(Protocol):
    """What the publishers need of the link (gateway.sync.link.Link)."""

    @property
    def connected(self) -> bool: ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


class _Retained:
    """A retained message published when its content changes (and, optionally, periodically)."""

    def __init__(self, topic: str, every_s: float | None, poll_s: float) -> None:
        self.topic = topic
        self.every_s = every_s
        self.poll_s = poll_s
        self.published: dict[str, Any] | None = None
        self._published_at = 0.0
        self._nudge = asyncio.Event()

    def notify(self) -> None:
        """Something changed: check now instead of at the next poll."""
        self._nudge.set()

    async def current(self) -> dict[str, Any]:
        """The message as it would be published now."""
        raise NotImplementedError

    def same(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether ``new`` says nothing that ``old`` did not."""
        return old == new

    async def run(self, link: Publisher) -> None:
        """Publish on change (and every ``every_s``) until cancelled."""
        while True:
            await self.check(link)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self.poll_s)
            self._nudge.clear()

    async def check(self, link: Publisher) -> bool:
        """Publish if changed or due; True when something was published."""
        message = await self.current()
        due = self.every_s is not None and time.monotonic() - self._published_at >= self.every_s
        if self.published is not None and self.same(self.published, message) and not due:
            return False
        if not link.connected:
            return False  # retried at the next check; the link announces status on connect
        try:
            await link.publish(self.topic, encode(message), retain=True)
        except LinkError as exc:
            log.info("%s not published: %s", self.topic, exc)
            return False
        self.published = copy.deepcopy(message)  # sources may hand out live dicts
        self._published_at = time.monotonic()
        return True


class StatusPublisher(_Retained):
    """Keeps ``gw/{gw}/status`` current: retained, on every change and every 60 s.

    ``build`` returns the status payload: the gateway's one status builder
    (``gateway.daemon.Gateway.status``); ``refresh``, if given, is awaited before each check
    to update what ``build`` reads (``Gateway.refresh_status``).
    """

    def __init__(
        self,
        site: str,
        gw: str,
        build: Callable[[], dict[str, Any]],
        *,
        refresh: Callable[[], Awaitable[None]] | None = None,
        every_s: float = 60.0,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__(gw_topic(site, gw, "status"), every_s, poll_s)
        self.build = build
        self.refresh = refresh

    def payload(self) -> dict[str, Any]:
        """The status now; give this to ``Link(status_payload=...)``."""
        return self.build()

    async def current(self) -> dict[str, Any]:
        """Refresh the async sources, then build the payload."""
        if self.refresh is not None:
            await self.refresh()
        return self.build()

    def same(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Measurements (the event loop's lag) change all the time: they go out with the
        next change or the periodic status, never on their own."""
        return {k: v for k, v in old.items() if k not in MEASUREMENTS} == {
            k: v for k, v in new.items() if k not in MEASUREMENTS
        }


MEASUREMENTS = frozenset({"loop_lag"})  # status fields that alone are no change


class OccupancyPublisher(_Retained):
    """Keeps ``gw/{gw}/occupancy`` = ``{"at", "zones", "upto_seq"}`` current, retained, on
    change. ``upto_seq`` is the highest seq of this gateway's check-ins that the counts
    include: peers add only its later check-ins on top (PROTOCOL.md, Clarifications)."""

    def __init__(
        self,
        site: str,
        gw: str,
        zones: Callable[[], dict[str, int]],
        *,
        clock: Callable[[], datetime],
        upto_seq: Callable[[], int] = lambda: 0,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__(gw_topic(site, gw, "occupancy"), None, poll_s)
        self.zones = zones
        self.clock = clock
        self.upto_seq = upto_seq

    async def current(self) -> dict[str, Any]:
        """The zones now, stamped with the gateway's clock and the seq they include."""
        return {
            "at": self.clock().isoformat(),
            "zones": dict(self.zones()),
            "upto_seq": self.upto_seq(),
        }

    def same(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Only the counts and what they include count: a new ``at`` alone is no change."""
        return bool(old["zones"] == new["zones"] and old.get("upto_seq") == new["upto_seq"])
