"""The check-in and event outbox (PROTOCOL.md, Check-ins and Events).

Final journal records go out on ``gw/{gw}/checkin`` and ``gw/{gw}/event`` in ``seq`` order and
stay in the journal until the central system's signed ``ack`` ``{"upto": seq}``; then the
journal prunes them: at once when nothing published is left unacknowledged, else once a
batch's worth is acknowledged (see :meth:`Outbox._take_ack`). Delivery is at least once:
what stays unacknowledged longer than ``ack_timeout`` is published again from the oldest
unacknowledged record on, and so is everything unacknowledged after a reconnect. The
central system drops duplicates by ``id``.

A long backlog (a day offline) drains quickly: publishes are pipelined, up to ``inflight``
awaiting the broker's PUBACK at a time and up to ``window`` awaiting the central's ack, rather
than one round trip per message. The journal is read up to ``batch`` records at a time, and
while a backlog's batch is published the next is already being read: the journal is in the
doors' process, a round trip away, and publishing stopped for that round trip every batch.
At most one batch is read ahead of what is being published (memory stays bounded); when
publishing starts over, what was read ahead (or is still being read) is dropped and the
records are read again from the oldest unacknowledged. The entry pipeline calls
:meth:`Outbox.notify` when a record becomes final; the outbox sleeps otherwise.

Peers' check-ins are taken by :mod:`gateway.sync.peers`. Every record goes out signed: the
link signs what the gateway publishes (:class:`gateway.identity.MessageSigner`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import BadMessage, JournalError, LinkError
from gateway.sync.envelopes import open_envelope, wrong_topic
from gateway.sync.topics import gw_topic

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], Awaitable[None] | None]
PER_TURN = 8  # records handed to the broker per turn of the event loop (see _publish_all)


def _dropped_read(task: asyncio.Task[Any]) -> None:
    """A read ahead dropped as the outbox stops: had it failed, that is said, not raised
    (the stop has a cause of its own)."""
    if not task.cancelled() and task.exception() is not None:
        log.info("outbox: a read of the journal dropped on stop had failed: %s", task.exception())


class RecordPublisher(Protocol):
    """What the outbox needs of the link (gateway.sync.link.Link)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        signed: bool = False,
    ) -> None: ...  # fmt: skip


class JournalView(Protocol):
    """The parts of :class:`gateway.journal.Journal` the outbox uses."""

    async def unacked(
        self, after_seq: int = 0, limit: int = 500, *, raw: bool = False
    ) -> list[dict[str, Any]]: ...

    async def ack(self, upto: int) -> int: ...


class Outbox:
    """Publishes the journal's final records and prunes them once the central acks them."""

    def __init__(
        self,
        journal: JournalView,
        publisher: RecordPublisher,
        *,
        site: str,
        gw: str,
        public_key: Ed25519PublicKey,
        on_event: EventSink | None = None,
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
        self.ack_timeout = ack_timeout
        self.window = window
        self.batch = batch
        self.retry_s = retry_s
        self.acked_upto = 0  # highest seq the central acknowledged (this process's view)
        self.published_upto = 0  # highest seq handed to the broker since the last restart
        self.pruned_upto = 0  # highest seq the journal is to prune (this process)
        self._journal_pruned = 0  # highest seq the journal said it pruned
        self._pruning: asyncio.Task[None] | None = None  # the one prune under way, if any
        self._inflight = asyncio.Semaphore(inflight)
        self._next_after = 0  # read records with a higher seq next
        self._ahead: list[dict[str, Any]] = []  # read in this epoch, not published yet
        self._more = False  # the last read was full: the journal likely has more
        self._reading: asyncio.Task[tuple[int, int, list[dict[str, Any]]]] | None = None
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
        self._ahead.clear()  # read before: a read still under way is dropped when it comes
        self._more = False
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
                records = await self._take(room) if room > 0 else []
                if records:
                    epoch = self._epoch
                    done = await self._publish_all(records)
                    if done < len(records) and epoch == self._epoch:
                        # stopped (link down) in this epoch: they go first, in order
                        self._ahead[:0] = records[done:]
                else:
                    await self._sleep()
        finally:
            reading, self._reading = self._reading, None
            if reading is not None:
                reading.cancel()
                reading.add_done_callback(_dropped_read)
            for task in self._tasks:
                task.cancel()

    async def _take(self, room: int) -> list[dict[str, Any]]:
        """Up to ``room`` records to publish next, in the journal's order; while a backlog's
        are published, the next ones are read."""
        if not self._ahead:
            await self._read()
        records = self._ahead[:room]
        del self._ahead[:room]
        if self._more and self._reading is None and len(self._ahead) < self.batch // 2:
            limit = self.batch - len(self._ahead)  # never more than ``batch`` held
            reading = self._unacked(self._epoch, self._next_after, limit)  # asked now, run later
            self._reading = asyncio.create_task(reading)
        return records

    async def _read(self) -> None:
        """Fill ``_ahead``: with what was read ahead, else with what the journal has now.

        Only what was read in this epoch is kept: a read under way when publishing started
        over began after records that are now to go out again first. An empty answer read
        ahead is not trusted either: it may have been asked for before the last
        :meth:`notify`, and the outbox would sleep with a final record unpublished."""
        reading, self._reading = self._reading, None
        if reading is not None:
            epoch, limit, records = await reading
            if epoch == self._epoch and records:
                self._accept(records, limit)
                return
        epoch, limit, records = await self._unacked(self._epoch, self._next_after, self.batch)
        if epoch == self._epoch:  # else _restart woke the loop: it reads again
            self._accept(records, limit)

    async def _unacked(
        self, epoch: int, after: int, limit: int
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """The journal's next records after ``after``, with the epoch and limit asked in."""
        return epoch, limit, await self.journal.unacked(after, limit, raw=True)

    def _accept(self, records: list[dict[str, Any]], limit: int) -> None:
        self._ahead.extend(records)
        self._more = len(records) >= limit
        for record in records:  # a late-final record is older than the ones before it
            self._next_after = max(self._next_after, int(record["seq"]))

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

    async def _publish_all(self, records: list[dict[str, Any]]) -> int:
        """Hand each record to the broker in seq order, up to ``inflight`` awaiting PUBACK;
        how many were handed over (fewer when publishing stopped or started over)."""
        epoch = self._epoch
        for i, record in enumerate(records):
            if i % PER_TURN == PER_TURN - 1:
                # A window's worth of PUBACKs comes in one read and frees every slot at once;
                # publishing them all in one turn of the loop would hold the doors' taps (and
                # any timer) for as long. A few a turn, then the loop runs what else is ready.
                await asyncio.sleep(0)
            if epoch != self._epoch or not self._connected.is_set():
                return i
            seq = int(record["seq"])
            name = self._topics.get(record.get("kind", ""), self._topics["event"])
            body: str = record["body"]  # the journal's JSON text (raw=True), maybe signed
            signed = bool(record["signed"])
            await self._inflight.acquire()
            if epoch != self._epoch:
                self._inflight.release()
                return i
            self.published_upto = max(self.published_upto, seq)
            self._sent_at.setdefault(seq, time.monotonic())
            task = asyncio.create_task(self._publish_one(name, body.encode(), epoch, signed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Tasks start in creation order (asyncio runs ready callbacks first in, first out),
            # so the broker gets them in seq order.
        return len(records)

    async def _publish_one(self, name: str, payload: bytes, epoch: int, signed: bool) -> None:
        try:
            await self.publisher.publish(name, payload, qos=1, signed=signed)
        except LinkError as exc:
            if epoch == self._epoch and self._connected.is_set():
                log.info("outbox: publishing paused: %s", exc)
                self._connected.clear()  # until on_connect, or a retry, republishes
                asyncio.get_running_loop().call_later(self.retry_s, self._retry, self._epoch)
        finally:
            self._inflight.release()

    # --- inbound: acks ---------------------------------------------------------------------

    async def handle(self, name: str, payload: bytes) -> bool:
        """Take an ack for this gateway; False if the topic is not that.
        Bad input is reported as ``bad_message`` and changes nothing."""
        if name == self._ack_topic:
            try:
                await self._take_ack(payload)
            except BadMessage as exc:
                await self._bad(name, exc.reason)
            return True
        return False

    async def _take_ack(self, payload: bytes) -> None:
        env = open_envelope(
            payload, public_key=self.public_key, site=self.site, topic=self._ack_topic
        )
        if env.type != "ack":
            raise BadMessage(wrong_topic(env.type), self._ack_topic)
        upto = env.body.get("upto")
        if not isinstance(upto, int) or isinstance(upto, bool) or upto < 0:
            raise BadMessage("not an ack {upto: seq}", self._ack_topic)
        # Never prune what this process has not published: an ack for more is not trusted
        # to cover records that are still pending or were written later.
        upto = min(upto, self.published_upto)
        if upto <= self.acked_upto:
            return
        self.acked_upto = upto
        sent = self._sent_at  # oldest first: only the acknowledged ones are looked at
        while sent:
            seq = next(iter(sent))
            if seq > upto:
                break
            del sent[seq]
        if self._next_after < upto:
            self._next_after = upto
        self._wake.set()  # the window has room now: publishing goes on while the journal prunes
        # A drain is acked a few dozen records at a time (the central acks what came in the
        # last 20 ms), and each prune is a durable transaction in the doors' process, a round
        # trip away: a prune an ack cost that process more than reading the records did.
        # During a drain the journal prunes a batch's worth at a time; when nothing published
        # is left unacknowledged (a drain's end, everyday traffic), at once. What is acked
        # and not pruned yet is still in the journal: after a restart it goes out again, and
        # the central drops it as a duplicate (at least once, as after any lost ack).
        if not sent or upto - self.pruned_upto >= self.batch:
            self.pruned_upto = upto
            self._prune()

    @property
    def journal_pruned_upto(self) -> int:
        """The highest seq the journal has said it pruned (a prune runs beside the acks)."""
        return self._journal_pruned

    def _prune(self) -> None:
        """Have the journal prune up to ``pruned_upto``, without waiting for it here.

        A prune is a durable transaction (an fsync), and a disk can take hundreds of
        milliseconds for one (an SD card; this project's CI disk in some minutes). Were it
        waited for here, the acks behind it would wait too, and with them the window: the
        drain stopped for every slow fsync. One prune runs at a time; the acks that come
        meanwhile only raise ``pruned_upto``, and the next prune takes them all at once."""
        if self._pruning is None or self._pruning.done():
            self._pruning = asyncio.create_task(self._prune_until_done(), name="outbox prune")
            self._tasks.add(self._pruning)
            self._pruning.add_done_callback(self._tasks.discard)

    async def _prune_until_done(self) -> None:
        while self._journal_pruned < self.pruned_upto:
            upto = self.pruned_upto
            try:
                await self.journal.ack(upto)
            except Exception as exc:  # the next ack asks again; nothing acked is lost
                # What stays in the journal goes out again after a restart, and the central
                # drops it as a duplicate: at least once, as after a lost ack. The journal
                # reports its own trouble (a full disk: status and event, in its process);
                # anything else is a bug, logged with its traceback.
                log.warning("outbox: the journal did not prune up to seq %d: %s", upto, exc,
                            exc_info=not isinstance(exc, (LinkError, JournalError)))  # fmt: skip
                return
            self._journal_pruned = upto

    async def _bad(self, name: str, reason: str) -> None:
        log.warning("outbox: message on %s dropped: %s", name, reason)
        if self.on_event is not None:
            result = self.on_event("bad_message", {"topic": name, "reason": reason})
            if inspect.isawaitable(result):
                await result
