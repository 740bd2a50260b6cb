"""The check-in and event outbox (PROTOCOL.md, Check-ins and Events).

Final journal records go out on ``gw/{gw}/checkin`` and ``gw/{gw}/event`` in ``seq`` order and
stay in the journal until the central system's signed ``ack`` ``{"upto": seq}``; then the
journal prunes them. Delivery is at least once: what stays unacknowledged longer than
``ack_timeout`` is published again from the oldest unacknowledged record on, and so is
everything unacknowledged after a reconnect. The central system drops duplicates by ``id``.

A long backlog (a day offline) drains quickly: publishes are pipelined, up to ``inflight``
awaiting the broker's PUBACK at a time and up to ``window`` awaiting the central's ack, rather
than one round trip per message. The entry pipeline calls :meth:`Outbox.notify` when a record
becomes final; the outbox sleeps otherwise.

Peer check-ins (``gw/{other}/checkin`` of the same site) are handed to the local state, once
each, so that ticket uses, clip-card charges, anti-passback and occupancy are shared.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import BadMessage, LinkError
from gateway.sync.entitlement_sync import Publisher
from gateway.sync.envelopes import open_envelope
from gateway.sync.topics import gw_topic, parse

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], Awaitable[None] | None]
PeerSink = Callable[[dict[str, Any]], None]
MAX_CHECKIN = 64 * 2**10
PEER_MEMORY = 50_000  # (gw, id) pairs remembered to apply each peer check-in once


class JournalView(Protocol):
    """The parts of :class:`gateway.journal.Journal` the outbox uses."""

    async def unacked(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]: ...

    async def ack(self, upto: int) -> int: ...


class Outbox:
    """Publishes the journal's final records and prunes them once the central acks them."""

    def __init__(
        self,
        journal: JournalView,
        publisher: Publisher,
        *,
        site: str,
        gw: str,
        public_key: Ed25519PublicKey,
        on_event: EventSink | None = None,
        on_peer_checkin: PeerSink | None = None,
        ack_timeout: float = 30.0,
        inflight: int = 100,
        window: int = 500,
        batch: int = 500,
        retry_s: float = 5.0,
    ) -> None:
        self.journal = journal
        self.publisher = publisher
        self.site, self.gw = site, gw
        self.public_key = public_key
        self.on_event = on_event
        self.on_peer_checkin = on_peer_checkin
        self.ack_timeout = ack_timeout
        self.window = window
        self.batch = batch
        self.retry_s = retry_s
        self.acked_upto = 0  # highest seq the central acknowledged (this process's view)
        self.published_upto = 0  # highest seq handed to the broker since the last restart
        self._inflight = asyncio.Semaphore(inflight)
        self._next_after = 0  # publish records with a higher seq next
        self._sent_at: OrderedDict[int, float] = OrderedDict()  # seq -> first publish (monotonic)
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._epoch = 0  # bumped when publishing starts over; stale failures are ignored
        self._tasks: set[asyncio.Task[None]] = set()
        self._ack_topic = gw_topic(site, gw, "checkin/ack")
        self._topics = {
            "checkin": gw_topic(site, gw, "checkin"),
            "event": gw_topic(site, gw, "event"),
        }
        self._peers_seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    # --- what the rest of the gateway calls -----------------------------------------------

    def notify(self) -> None:
        """A journal record became final: publish it soon."""
        self._wake.set()

    async def on_connect(self) -> None:
        """After every (re)connect: publish everything unacknowledged again, in seq order."""
        self._restart("connected")
        self._connected.set()

    def on_disconnect(self) -> None:
        """The link is down: stop publishing until the next :meth:`on_connect`."""
        self._connected.clear()

    @property
    def in_flight(self) -> int:
        """Records published and not yet acknowledged by the central system."""
        return len(self._sent_at)

    def _retry(self, epoch: int) -> None:
        """Try again after a failed publish (e.g. an ACL refusal with the link still up)."""
        if epoch == self._epoch and not self._connected.is_set():
            self._restart("retry")
            self._connected.set()

    def _restart(self, why: str) -> None:
        """Publish again from the oldest unacknowledged record."""
        if self._sent_at:
            log.info("outbox: publishing %d unacknowledged again (%s)", len(self._sent_at), why)
        self._epoch += 1
        self._next_after = self.acked_upto
        self._sent_at.clear()
        self._wake.set()

    # --- the publishing loop --------------------------------------------------------------

    async def run(self) -> None:
        """Publish until cancelled."""
        try:
            while True:
                await self._connected.wait()
                self._check_ack_timeout()
                room = self.window - len(self._sent_at)
                self._wake.clear()  # before reading: a notify() from now on is not lost
                records = []
                if room > 0:
                    records = await self.journal.unacked(self._next_after, min(self.batch, room))
                if records:
                    await self._publish_all(records)
                else:
                    await self._sleep()
        finally:
            for task in self._tasks:
                task.cancel()

    async def _sleep(self) -> None:
        """Until notified, acked, or the oldest record's ack_timeout runs out."""
        timeout = None
        if self._sent_at:
            oldest = next(iter(self._sent_at.values()))
            timeout = max(0.0, oldest + self.ack_timeout - time.monotonic()) + 0.01
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the event is set, and the outbox would then never stop.
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _check_ack_timeout(self) -> None:
        if self._sent_at:
            oldest = next(iter(self._sent_at.values()))
            if time.monotonic() - oldest >= self.ack_timeout:
                self._restart(f"no ack within {self.ack_timeout:g} s")

    async def _publish_all(self, records: list[dict[str, Any]]) -> None:
        """Hand each record to the broker in seq order, up to ``inflight`` awaiting PUBACK."""
        epoch = self._epoch
        for record in records:
            if epoch != self._epoch or not self._connected.is_set():
                return
            seq = int(record["seq"])
            name = self._topics.get(record.get("kind", ""), self._topics["event"])
            payload = json.dumps(record["message"], separators=(",", ":"), ensure_ascii=False)
            await self._inflight.acquire()
            if epoch != self._epoch:
                self._inflight.release()
                return
            self._next_after = max(self._next_after, seq)  # a late-final record is older
            self.published_upto = max(self.published_upto, seq)
            self._sent_at.setdefault(seq, time.monotonic())
            task = asyncio.create_task(self._publish_one(name, payload.encode(), epoch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Tasks start in creation order (asyncio runs ready callbacks first in, first out),
            # so the broker gets them in seq order.

    async def _publish_one(self, name: str, payload: bytes, epoch: int) -> None:
        try:
            await self.publisher.publish(name, payload, qos=1)
        except LinkError as exc:
            if epoch == self._epoch and self._connected.is_set():
                log.info("outbox: publishing paused: %s", exc)
                self._connected.clear()  # until on_connect, or a retry, republishes
                asyncio.get_running_loop().call_later(self.retry_s, self._retry, self._epoch)
        finally:
            self._inflight.release()

    # --- inbound: acks and peers' check-ins ---------------------------------------------------

    async def handle(self, name: str, payload: bytes) -> bool:
        """Take an ack for this gateway or a peer's check-in; False if the topic is not ours.
        Bad input is reported as ``bad_message`` and changes nothing."""
        if name == self._ack_topic:
            try:
                await self._take_ack(payload)
            except BadMessage as exc:
                await self._bad(name, exc.reason)
            return True
        where = parse(name)
        if where is None or where.kind != "checkin" or where.site != self.site:
            return False
        if where.gw != self.gw:
            try:
                self._take_peer_checkin(where.gw or "", payload, name)
            except BadMessage as exc:
                await self._bad(name, exc.reason)
        return True

    async def _take_ack(self, payload: bytes) -> None:
        env = open_envelope(
            payload, public_key=self.public_key, site=self.site, topic=self._ack_topic
        )
        upto = env.body.get("upto")
        if env.type != "ack" or not isinstance(upto, int) or isinstance(upto, bool) or upto < 0:
            raise BadMessage("not an ack {upto: seq}", self._ack_topic)
        # Never prune what this process has not published: an ack for more is not trusted
        # to cover records that are still pending or were written later.
        upto = min(upto, self.published_upto)
        if upto <= self.acked_upto:
            return
        self.acked_upto = upto
        for seq in list(self._sent_at):
            if seq > upto:
                break
            del self._sent_at[seq]
        if self._next_after < upto:
            self._next_after = upto
        await self.journal.ack(upto)
        self._wake.set()

    def _take_peer_checkin(self, gw: str, payload: bytes, name: str) -> None:
        if len(payload) > MAX_CHECKIN:
            raise BadMessage(f"check-in too large: {len(payload)} bytes", name)
        try:
            checkin = json.loads(payload)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadMessage("check-in is not valid JSON in UTF-8", name) from None
        problem = _checkin_problem(checkin, gw)
        if problem:
            raise BadMessage(f"check-in: {problem}", name)
        key = (gw, checkin["id"])
        if key in self._peers_seen:
            return  # published again by the peer (at least once)
        self._peers_seen[key] = None
        if len(self._peers_seen) > PEER_MEMORY:
            self._peers_seen.popitem(last=False)
        if self.on_peer_checkin is not None:
            try:
                self.on_peer_checkin(checkin)
            except Exception:  # the local state's problem; the link must go on
                log.exception("outbox: peer check-in %s/%s not applied", gw, checkin["seq"])

    async def _bad(self, name: str, reason: str) -> None:
        log.warning("outbox: message on %s dropped: %s", name, reason)
        if self.on_event is not None:
            result = self.on_event("bad_message", {"topic": name, "reason": reason})
            if inspect.isawaitable(result):
                await result


def _checkin_problem(c: Any, gw: str) -> str | None:
    """What is wrong with a peer's check-in for the local state, or None."""
    if not isinstance(c, dict):
        return "not an object"
    if c.get("gw") != gw:
        return "gw does not match the topic"
    if not isinstance(c.get("id"), str) or not 0 < len(c["id"]) <= 128:
        return "id missing"
    if not isinstance(c.get("seq"), int) or isinstance(c.get("seq"), bool):
        return "seq missing"
    if c.get("direction") not in ("in", "out") or not isinstance(c.get("zone"), str):
        return "zone/direction missing"
    if not isinstance(c.get("passed"), bool) or c.get("decision") not in ("granted", "denied"):
        return "decision/passed missing"
    for key in ("member", "ticket", "contract"):
        if c.get(key) is not None and not isinstance(c[key], str):
            return f"{key} is not a string"
    charged = c.get("charged", 0)
    if charged is not None and (not isinstance(charged, int) or isinstance(charged, bool)):
        return "charged is not an integer"
    try:
        at = datetime.fromisoformat(str(c.get("at")))
    except ValueError:
        return "at is not an ISO 8601 time"
    return None if at.utcoffset() is not None else "at has no UTC offset"
