"""Everything that rides on the MQTT link, wired to one gateway.

The link delivers each inbound message here; entitlement sync, the outbox (acks), the
peer inbox (peers' check-ins and occupancy, checked before use) and commands each take
their topics. The link signs what the gateway publishes. Nothing here
sits on the decision path: when the broker is gone, doors keep deciding and the
check-ins wait in the journal.

The link and the outbox run on the wire thread (:mod:`gateway.sync.wire`): a backlog's
signing and publishing never takes turns of the doors' loop. What changes the gateway's
state (the journal, peers' check-ins, entitlements, commands) runs on the doors' loop, as
before; the two meet only at the adapters below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from gateway.clock import ClockTrust
from gateway.config import Config
from gateway.errors import BadMessage, LinkError
from gateway.history import History
from gateway.identity import Identity, MessageSigner
from gateway.journal import Journal
from gateway.pass_cache import PassCache
from gateway.state import LocalState
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from gateway.sync.commands import Commands, DoorControl, SeenCommands
from gateway.sync.dispatch import OVERLOADED, Dispatcher, concern_of
from gateway.sync.entitlement_sync import EntitlementSync
from gateway.sync.envelopes import load_public_key, open_envelope, wrong_topic
from gateway.sync.link import Link
from gateway.sync.outbox import JournalView, Outbox
from gateway.sync.peers import PeerEffects, PeerInbox
from gateway.sync.status import OccupancyPublisher, StatusPublisher
from gateway.sync.topics import gw_topic
from gateway.sync.wire import Mailbox, WireThread, on_loop

log = logging.getLogger(__name__)
T = TypeVar("T")

ACKS_WAITING = 1000  # acks queued on the wire (the central sends one per batch at most)
FROM_WIRE_WAITING = 20_000  # messages on their way to the doors' loop (see SyncRunner._offer)


class SyncHost(DoorControl, Protocol):
    """What the sync side needs of the running gateway, and nothing of how it runs doors,
    readers or the web UI (``gateway.daemon.Gateway`` is one; a test may bring its own).
    Naming it here rather than importing the daemon ends the import cycle between them."""

    config: Config
    site: str
    gw: str
    identity: Identity
    state_dir: StateDir
    store: EntitlementStore
    journal: Journal
    history: History
    passes: PassCache
    state: LocalState
    clock: ClockTrust
    now: Callable[[], datetime]

    @property
    def doors(self) -> Mapping[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def refresh_status(self) -> Awaitable[None]: ...

    def record_event(self, type_: str, door: str | None, detail: dict[str, Any]) -> None: ...

    def on_published(self, callback: Callable[[], None]) -> None: ...


class _DeletingStore:
    """The store as sync sees it: a delta that deletes members also purges their history."""

    def __init__(self, gateway: SyncHost) -> None:
        self._gw = gateway

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gw.store, name)

    def apply_delta(
        self,
        version: int,
        base: int | None,
        upsert: Any,
        delete: Any,
        rules: Any,
        checkins_upto: Any,
        at: datetime,
    ) -> list[str]:
        notes = self._gw.store.apply_delta(version, base, upsert, delete, rules, checkins_upto, at)
        for record_id in delete:
            self._gw.history.purge_member(record_id)  # privacy: purged at once
        return list(notes)

    def adopt(self, staged: str) -> None:
        """A snapshot: the members it no longer has are deleted, so purged at once too."""
        store, history = self._gw.store, self._gw.history
        store.adopt(staged)
        for member in history.members():
            if store.member(member) is None:
                history.purge_member(member)


class _Sides:
    """The two loops of a running sync: the doors' (home) and the wire thread's."""

    def __init__(self) -> None:
        self.home: asyncio.AbstractEventLoop | None = None
        self.wire: WireThread | None = None
        self.to_home: Mailbox | None = None
        self.to_wire: Mailbox | None = None

    async def at_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the doors' loop (from the wire's, or at home before the start)."""
        if self.home is None:
            return await coro
        return await on_loop(self.home, coro)

    async def on_wire(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the wire's loop (from the doors')."""
        if self.wire is None:
            return await coro
        return await on_loop(self.wire.loop, coro)

    def post_home(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` soon on the doors' loop; no answer."""
        if self.to_home is None:
            fn(*args)
        else:
            self.to_home.post(fn, *args)

    def post_wire(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` soon on the wire's loop; no answer."""
        if self.to_wire is None:
            fn(*args)
        else:
            self.to_wire.post(fn, *args)


class _LinkFromHome:
    """The link as the doors' loop uses it (entitlement sync, status, commands): each publish
    runs on the wire's loop, where the link's client lives."""

    def __init__(self, link: Link, sides: _Sides) -> None:
        self._link = link
        self._sides = sides

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        await self._sides.on_wire(self._link.publish(topic, payload, qos=qos, retain=retain))


class _JournalFromWire(JournalView):
    """The journal as the outbox (on the wire) uses it: every call runs on the doors' loop,
    which owns the journal's counters and its writer thread."""

    def __init__(self, journal: Journal, sides: _Sides) -> None:
        self._journal = journal
        self._sides = sides

    async def unacked(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        return await self._sides.at_home(self._journal.unacked(after_seq, limit))

    async def ack(self, upto: int) -> int:
        return await self._sides.at_home(self._journal.ack(upto))


class SyncRunner:
    """The link, entitlement sync, outbox, commands, status and occupancy of one gateway."""

    def __init__(self, gateway: SyncHost) -> None:
        self.gateway = gateway
        cfg = gateway.config
        site, gw = gateway.site, gateway.gw
        if cfg.central.public_key is None:
            raise LinkError(
                "central.public_key is not set: the gateway cannot verify what the "
                "central system sends; set it in the config (base64 Ed25519 key)"
            )
        key = load_public_key(cfg.central.public_key)
        self.status = StatusPublisher(site, gw, gateway.status, refresh=gateway.refresh_status)
        state = gateway.state
        self.occupancy = OccupancyPublisher(
            site,
            gw,
            lambda: dict(state.own_inside),
            clock=gateway.now,
            upto_seq=lambda: state.own_upto_seq,
        )
        self._sides = _Sides()
        self.link = Link(
            cfg.mqtt,
            site,
            gw,
            status_payload=self._status_payload,
            signer=MessageSigner(gateway.identity),
        )
        self._link_home = _LinkFromHome(self.link, self._sides)
        effects = PeerEffects(
            gateway.history, state, gateway.passes, gateway.store, gateway.record_event
        )
        self.peers = PeerInbox(
            site=site,
            gw=gw,
            own_key=gateway.identity.private_key.public_key(),
            rules=lambda: gateway.store.rules,
            now=gateway.now,
            clock_trusted=lambda: state.clock_synced,
            apply_checkin=effects.apply,
            apply_occupancy=state.set_peer_occupancy,
            peer_upto=lambda peer: state.peer_upto.get(peer, 0),
        )
        self.entitlements = EntitlementSync(
            _DeletingStore(gateway),
            self._link_home,
            site=site,
            gw=gw,
            public_key=key,
            on_event=self._event,
            on_counted=gateway.state.counted,
            on_time=self._time,
            on_version=self._new_version,
            sync_interval=cfg.mqtt.sync_interval,
            clock=gateway.now,
            newest_time=gateway.state_dir.path / "newest_time",
        )
        self.outbox = Outbox(
            _JournalFromWire(gateway.journal, self._sides),
            self.link,
            site=site,
            gw=gw,
            public_key=key,
            on_event=self._event_from_wire,
            ack_timeout=cfg.mqtt.ack_timeout,
            inflight=cfg.mqtt.inflight,
        )
        self.commands = Commands(
            gateway,
            gateway.doors.keys(),
            SeenCommands(gateway.state_dir.commands),
            clock=gateway.now,
        )
        self._key = key
        self._cmd_topic = gw_topic(site, gw, "cmd")
        self._ack_topic = gw_topic(site, gw, "checkin/ack")
        gateway.on_published(self.notify_outbox)
        self._have_set = asyncio.Event()  # peers are checked against the set's keys
        if gateway.store.version is not None:
            self._have_set.set()
        self.inbound = Dispatcher(self._message, self._bad_message)
        self._acks: asyncio.Queue[bytes] | None = None  # on the wire (made there)
        self._overloaded_at = 0.0  # when a message was last dropped on the wire (monotonic)
        # The link calls these on the wire's loop.
        self.link.on_message(self._from_wire)  # acks stay there; the rest go home by concern
        self.link.on_connect(self.outbox.on_connect)
        self.link.on_connect(self._entitlements_on_connect)
        self.link.on_bad_message(self._dropped_on_wire)  # in order with their concern

    @property
    def connected(self) -> bool:
        """Whether the broker link is up."""
        return self.link.connected

    async def run(self) -> None:
        """Run the link and its riders until cancelled: the link and the outbox on the wire
        thread, the rest here on the doors' loop."""
        sides = self._sides
        sides.home = asyncio.get_running_loop()
        sides.to_home = Mailbox(sides.home, "from the MQTT wire")
        wire = WireThread()
        wire.start()
        sides.wire, sides.to_wire = wire, Mailbox(wire.loop, "to the MQTT wire")
        tasks = [
            asyncio.create_task(wire.run(self._run_wire()), name="mqtt wire"),
            asyncio.create_task(self.inbound.run(), name="inbound"),
            asyncio.create_task(self.entitlements.run(), name="periodic sync"),
            asyncio.create_task(self.status.run(self._link_home), name="status"),
            asyncio.create_task(self.occupancy.run(self._link_home), name="occupancy"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await wire.stop()
            sides.wire = sides.to_wire = None
            sides.to_home = None
            await self.entitlements.close()
            await self.peers.close()
            self.commands.seen.close()

    async def _run_wire(self) -> None:
        """On the wire's loop: the link, the outbox and its acks."""
        self._acks = asyncio.Queue(ACKS_WAITING)
        tasks = [
            asyncio.create_task(self.link.run(), name="mqtt link"),
            asyncio.create_task(self._watch_link(), name="link watch"),
            asyncio.create_task(self.outbox.run(), name="outbox"),
            asyncio.create_task(self._take_acks(self._acks), name="inbound acks"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- between the wire and the doors' loop ---------------------------------------------

    def notify_outbox(self) -> None:
        """A journal record became final (on the doors' loop): wake the outbox."""
        self._sides.post_wire(self.outbox.notify)

    async def _from_wire(self, topic: str, payload: bytes) -> None:
        """An inbound message, on the wire's loop: acks are the outbox's, checked and taken
        there; every other message goes to its concern's queue on the doors' loop."""
        if topic == self._ack_topic and self._acks is not None:
            try:
                self._acks.put_nowait(payload)
            except asyncio.QueueFull:
                self._overloaded(topic)
            return
        to_home = self._sides.to_home
        if to_home is not None and to_home.waiting() >= FROM_WIRE_WAITING:
            self._overloaded(topic)  # the doors' loop is behind: not one more in memory
            return
        self._sides.post_home(self._offer, topic, payload)

    def _overloaded(self, topic: str) -> None:
        """A message dropped on the wire: a ``bad_message`` event, at most one a second."""
        now = time.monotonic()
        if now - self._overloaded_at >= 1.0:
            self._overloaded_at = now
            detail = {"topic": topic, "reason": OVERLOADED}
            self._sides.post_home(self._event, "bad_message", detail)

    def _offer(self, topic: str, payload: bytes) -> None:
        if not self.inbound.offer(topic, payload):
            self._event("bad_message", {"topic": topic, "reason": OVERLOADED})

    async def _dropped_on_wire(self, topic: str, reason: str) -> None:
        if topic == self._ack_topic:
            self._event_from_wire("bad_message", {"topic": topic, "reason": reason})
        else:
            self._sides.post_home(self.inbound.note_dropped, topic, reason)

    async def _take_acks(self, acks: asyncio.Queue[bytes]) -> None:
        while True:
            payload = await acks.get()
            try:
                await self.outbox.handle(self._ack_topic, payload)
            except Exception:  # one ack's bug must not end the acks' worker
                log.exception("inbound %s: handler failed (message dropped)", self._ack_topic)

    async def _entitlements_on_connect(self) -> None:
        await self._sides.at_home(self.entitlements.on_connect())

    async def _status_payload(self) -> dict[str, Any]:
        """The status for the link's announcement, built on the doors' loop."""

        async def build() -> dict[str, Any]:
            return self.status.payload()

        return await self._sides.at_home(build())

    def _event_from_wire(self, type_: str, detail: dict[str, Any]) -> None:
        self._sides.post_home(self._event, type_, detail)

    async def _watch_link(self) -> None:
        """Tell the outbox when the link drops, so it stops and re-publishes on reconnect."""

        was = False
        while True:
            now = self.link.connected
            if was and not now:
                self.outbox.on_disconnect()
            was = now
            await asyncio.sleep(0.1)

    async def _message(self, name: str, payload: bytes) -> None:
        if await self.entitlements.handle(name, payload):
            return
        while concern_of(name) == "peers" and self.gateway.store.version is None:
            # A first start: peers' keys come with the first set. Their messages wait for
            # it (in their own queue, bounded) rather than being refused unverifiable.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._have_set.wait(), 1.0)
        if await self.peers.handle(name, payload):
            return
        if name == self._cmd_topic:
            await self._command(name, payload)

    async def _command(self, name: str, payload: bytes) -> None:
        try:
            env = open_envelope(
                payload,
                public_key=self._key,
                site=self.gateway.site,
                topic=name,
                max_bytes=64 * 2**10,
            )
        except BadMessage as exc:  # a command we cannot trust gets no result, only an event
            self._event("bad_message", {"topic": name, "reason": exc.reason})
            return
        if env.type != "command":  # not a command at all: nothing to answer
            self._event("bad_message", {"topic": name, "reason": wrong_topic(env.type)})
            return
        result = await self.commands.handle(env)
        try:
            await self._link_home.publish(
                gw_topic(self.gateway.site, self.gateway.gw, "cmd/result"),
                json.dumps(result).encode(),
            )
        except LinkError as exc:
            log.warning("command %s: result not published: %s", result.get("id"), exc)

    def _time(self, central_now: datetime) -> bool:
        """A signed, newer ``time``: the clock trust follows it; whether it counts (for
        ``max_offline_hours``): it agrees with a trusted clock, or the clock is not trusted."""
        window = self.gateway.store.rules.pass_window_s if self.gateway.store.rules else 30
        clock = self.gateway.clock
        trusted = clock.synced()
        agrees = clock.confirm(central_now, window)
        if not agrees:
            log.warning(
                "the central system's time %s is more than %d s from ours (%s): %s",
                central_now.isoformat(),
                window,
                self.gateway.now().isoformat(),
                "it confirms nothing"
                if trusted
                else "passes stay refused until the clock is synced",
            )
        return agrees or not trusted

    def _new_version(self, version: int) -> None:
        self._have_set.set()
        self.status.notify()

    async def _bad_message(self, topic: str, reason: str) -> None:
        self._event("bad_message", {"topic": topic, "reason": reason})

    def _event(self, type_: str, detail: dict[str, Any]) -> None:
        self.gateway.record_event(type_, None, detail)
