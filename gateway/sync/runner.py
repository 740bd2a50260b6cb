"""Everything that rides on the MQTT link, wired to one gateway.

The link delivers each inbound message here; entitlement sync, the outbox (acks), the
peer inbox (peers' check-ins and occupancy, checked before use) and commands each take
their topics. The link signs what the gateway publishes. Nothing here
sits on the decision path: when the broker is gone, doors keep deciding and the
check-ins wait in the journal.

The link and the outbox run in the wire process (:mod:`gateway.sync.wire`): a backlog's
signing and publishing never takes the doors' loop or their interpreter. What changes the
gateway's state (the journal, peers' check-ins, entitlements, commands) runs here, on the
doors' loop, as before: the wire process asks for it over its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from gateway.clock import ClockTrust
from gateway.config import Config
from gateway.errors import BadMessage, LinkError
from gateway.history import History
from gateway.identity import Identity
from gateway.journal import Journal
from gateway.pass_cache import PassCache
from gateway.state import LocalState
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from gateway.sync.commands import Commands, DoorControl, SeenCommands
from gateway.sync.commands import refused as command_refused
from gateway.sync.dispatch import OVERLOADED, Dispatcher, Payload, VerifiedPeer, concern_of
from gateway.sync.entitlement_sync import EntitlementSync
from gateway.sync.envelopes import CARRIES, load_public_key, open_carried
from gateway.sync.peers import PeerEffects, PeerInbox
from gateway.sync.status import OccupancyPublisher, StatusPublisher
from gateway.sync.topics import gw_topic
from gateway.sync.wire import WireEnd

log = logging.getLogger(__name__)


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

    def record_refused(self, detail: dict[str, Any], count: int) -> None: ...

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
        self.wire = WireEnd(
            cfg,
            gateway.identity,
            calls={
                "unacked": self._unacked,
                "ack": gateway.journal.ack,
                "status": self._status_payload,
                "on_connect": self._on_connect,
                "peer_checkin": self._peer_checkin,
            },
            notices={
                "message": self._offer,
                "verified": self._offer_verified,
                "dropped": self._dropped,
                "event": self._event,
                "bad_messages": gateway.record_refused,  # counted by the wire process
            },
        )
        self.wire.peer_keys = self._peer_keys
        self.link = self.wire.link  # its state as the wire process reports it; publishes
        self.outbox = self.wire.outbox
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
            keep_checkin=effects.keep,
            apply_occupancy=state.set_peer_occupancy,
            peer_upto=lambda peer: state.peer_upto.get(peer, 0),
        )
        self.entitlements = EntitlementSync(
            _DeletingStore(gateway),
            self.link,
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
        self.commands = Commands(
            gateway,
            gateway.doors.keys(),
            SeenCommands(gateway.state_dir.commands),
            clock=gateway.now,
        )
        self._key = key
        self._cmd_topic = gw_topic(site, gw, "cmd")
        gateway.on_published(self.notify_outbox)
        self._have_set = asyncio.Event()  # peers are checked against the set's keys
        if gateway.store.version is not None:
            self._have_set.set()
        self.inbound = Dispatcher(self._message, self._bad_message)

    @property
    def connected(self) -> bool:
        """Whether the broker link is up."""
        return self.link.connected

    async def run(self) -> None:
        """Run the wire process and the riders on this side until cancelled."""
        tasks = [
            asyncio.create_task(self.wire.run(), name="mqtt wire"),
            asyncio.create_task(self.inbound.run(), name="inbound"),
            asyncio.create_task(self.entitlements.run(), name="periodic sync"),
            asyncio.create_task(self.status.run(self.link), name="status"),
            asyncio.create_task(self.occupancy.run(self.link), name="occupancy"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.entitlements.close()
            await self.peers.close()
            self.commands.seen.close()

    # --- what the wire process asks and tells ----------------------------------------------

    def notify_outbox(self) -> None:
        """A journal record became final: wake the outbox (in the wire process)."""
        self.outbox.notify()

    def _offer(self, topic: str, payload: Payload) -> None:
        """An inbound message (not an ack): to its concern's queue."""
        if not self.inbound.offer(topic, payload):
            self._event("bad_message", {"topic": topic, "reason": OVERLOADED})

    def _offer_verified(
        self, topic: str, message: dict[str, Any], key: str | None, size: int
    ) -> None:
        """A peer's message the wire process verified: to the peers' queue, in order."""
        self._offer(topic, VerifiedPeer(message, key, size))

    def _peer_checkin(
        self, topic: str, message: dict[str, Any], key: str | None, size: int
    ) -> asyncio.Future[None]:
        """A peer's check-in the wire process verified, queued at once as
        :meth:`_offer_verified` (in order with the notices around it); the answer (the
        broker's PUBACK waits for it) comes once it is kept durably or refused. An error
        keeping it comes back as the answer: the broker then sends it again."""
        taken: asyncio.Future[asyncio.Future[bool] | None]
        taken = asyncio.get_running_loop().create_future()
        if not self.inbound.offer(topic, VerifiedPeer(message, key, size, taken)):
            self._event("bad_message", {"topic": topic, "reason": OVERLOADED})
            taken.set_result(None)
        return asyncio.ensure_future(_kept_after(taken))

    def _peer_keys(self) -> dict[str, str] | None:
        """The registered gateways' keys (the wire process verifies peers with them); None
        before the first set (peers' messages then wait for it here, unverified)."""
        rules = self.gateway.store.rules
        return dict(rules.gateways) if rules is not None else None

    def _dropped(self, topic: str, reason: str) -> None:
        """A message the link dropped (too large...): reported in its concern's order."""
        self.inbound.report(topic, reason)

    async def _unacked(self, after_seq: int, limit: int, raw: bool) -> list[dict[str, Any]]:
        return await self.gateway.journal.unacked(after_seq, limit, raw=raw)

    async def _on_connect(self) -> None:
        await self.entitlements.on_connect()

    async def _status_payload(self) -> dict[str, Any]:
        """The status the link announces when it connects."""
        return self.status.payload()

    async def _message(self, name: str, payload: Payload) -> None:
        if isinstance(payload, VerifiedPeer):
            kept = None
            try:
                kept = self.peers.take_verified(name, payload.message, payload.key)
            finally:  # refused (reported as a bad message) or a bug (logged): taken too
                if payload.taken is not None:
                    payload.taken.set_result(kept)
            return
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
        try:  # the topic's limit is 64 KiB, a command's own (MAX_COMMAND) too
            env = open_carried(
                payload,
                public_key=self._key,
                site=self.gateway.site,
                topic=name,
                types=CARRIES["cmd"],
            )
        except BadMessage as exc:  # untrusted, or not a command: no result, only an event
            self._event("bad_message", command_refused(name, exc.reason))
            return
        result = await self.commands.handle(env)
        try:
            await self.link.publish(
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
        self.wire.peers_changed()
        self.status.notify()

    async def _bad_message(self, topic: str, reason: str) -> None:
        self._event("bad_message", {"topic": topic, "reason": reason})

    def _event(self, type_: str, detail: dict[str, Any]) -> None:
        self.gateway.record_event(type_, None, detail)


async def _kept_after(taken: asyncio.Future[asyncio.Future[bool] | None]) -> None:
    """Once a peer's check-in was taken, until it is kept (its error, if keeping failed)."""
    kept = await taken
    if kept is not None:
        await kept
