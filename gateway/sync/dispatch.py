"""Inbound MQTT messages, handed out by concern so that no handler waits on another.

The link reads messages one at a time. Were each handled before the next is read, a command
waiting for a lock, a big delta being applied or a burst of peers' check-ins would hold up
everything behind it. Here each concern (entitlement sync, time, commands, acks, peers) has
its own queue and its own worker: messages of one concern keep their order, and the link
goes on reading at once.

A concern whose queue is full (its worker stuck, or a flood) drops what comes next with a
``bad_message`` (reason ``overloaded``) instead of holding up the others or growing without
bound: deltas and snapshots are asked for again by ``sync``; the rest is at least once or
periodic anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import BadMessage
from gateway.sync.topics import parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedPeer:
    """A peer's message the wire process parsed and verified (gateway.sync.wire_child)."""

    message: dict[str, Any]
    key: str | None  # the peer's key it was verified with (base64, as rules.gateways has it)
    size: int  # bytes it had on the wire (the queue's byte bound counts them)
    # A peer's check-in: done once it was taken, with the future of its keeping (None if
    # refused); the wire process acknowledges it to the broker once that is done too.
    taken: asyncio.Future[asyncio.Future[bool] | None] | None = field(default=None, compare=False)


Payload = bytes | VerifiedPeer
Handler = Callable[[str, Payload], Awaitable[None]]
BadSink = Callable[[str, str], Awaitable[None]]

CONCERNS = ("sync", "time", "commands", "acks", "peers")
_BY_KIND = {
    "entitlements/delta": "sync",
    "delta": "sync",  # also carries `time` answers to a sync: ordered with the deltas
    "snapshot": "sync",
    "time": "time",
    "cmd": "commands",
    "checkin/ack": "acks",
    "checkin": "peers",
    "occupancy": "peers",
}
MAX_QUEUED = 10_000  # messages waiting per concern
MAX_QUEUED_BYTES = 64 * 2**20  # bytes waiting per concern (a few 16 MiB deltas)
OVERLOADED = "overloaded: too many messages of this kind waiting"


def concern_of(topic: str) -> str:
    """The concern that handles ``topic``: ``peers`` for anything not listed (bounded)."""
    where = parse(topic)
    return _BY_KIND.get(where.kind, "peers") if where is not None else "peers"


@dataclass
class _Queue:
    items: asyncio.Queue[tuple[str, Payload, str | None]] = field(default_factory=asyncio.Queue)
    bytes: int = 0
    dropped: int = 0


class Dispatcher:
    """Per-concern queues and workers in front of one message handler."""

    def __init__(self, handler: Handler, on_bad: BadSink) -> None:
        self.handler = handler
        self.on_bad = on_bad
        self.queues = {name: _Queue() for name in CONCERNS}

    def offer(self, topic: str, payload: Payload) -> bool:
        """Queue one message for its concern; never waits for a handler. False (and nothing
        queued) when that concern has too much waiting: the caller reports it as
        ``bad_message`` (:data:`OVERLOADED`)."""
        queue = self.queues[concern_of(topic)]
        size = _size(payload)
        if queue.items.qsize() >= MAX_QUEUED or queue.bytes + size > MAX_QUEUED_BYTES:
            queue.dropped += 1
            return False
        queue.bytes += size
        queue.items.put_nowait((topic, payload, None))
        return True

    def report(self, topic: str, reason: str) -> None:
        """A message the link dropped (too large...): reported in its concern's order, after
        the messages of that concern that came before it."""
        self.queues[concern_of(topic)].items.put_nowait((topic, b"", reason))

    def waiting(self) -> dict[str, int]:
        """Messages waiting per concern (for the status and tests)."""
        return {name: q.items.qsize() for name, q in self.queues.items()}

    async def run(self) -> None:
        """Run one worker per concern until cancelled."""
        async with asyncio.TaskGroup() as workers:
            for name, queue in self.queues.items():
                workers.create_task(self._work(queue), name=f"inbound {name}")

    async def _work(self, queue: _Queue) -> None:
        while True:
            topic, payload, dropped = await queue.items.get()
            queue.bytes -= _size(payload)
            try:
                if dropped is not None:
                    await self.on_bad(topic, dropped)
                else:
                    await self.handler(topic, payload)
            except BadMessage as exc:
                await self.on_bad(topic, exc.reason)
            except Exception:  # one message's bug must not end its concern's worker
                log.exception("inbound %s: handler failed (message dropped)", topic)
            # A message at a time, then whatever else is ready: ``get`` does not wait while
            # the queue has messages, and a burst of peers' check-ins (a signature check
            # each) would otherwise hold the doors' loop until the last one.
            await asyncio.sleep(0)


def _size(payload: Payload) -> int:
    return payload.size if isinstance(payload, VerifiedPeer) else len(payload)
