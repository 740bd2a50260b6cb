"""The wire process: the MQTT link and the outbox, beside the gateway (gateway.sync.wire).

``python -m gateway.sync.wire_child --channel-fd N``, started by the gateway with its
settings (the MQTT section, the gateway's signing key, the central's public key) as one
JSON line on stdin. It connects, publishes what the gateway asks, drains the journal the
gateway hands it, checks the central's acks, verifies peers' messages, refuses junk on the
central system's topics, and forwards every other inbound message.
It leaves when the channel closes: the gateway stopped or died.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway import logs, niceness
from gateway.config import MqttSection
from gateway.entitlements import gateway_keys
from gateway.errors import BadMessage, LinkError
from gateway.event_throttle import EventThrottle, key_of
from gateway.identity import Identity, MessageSigner, signature_problem
from gateway.supervisor import describe
from gateway.sync.commands import refused as command_refused
from gateway.sync.dispatch import OVERLOADED
from gateway.sync.entitlement_sync import refused as sync_refused
from gateway.sync.envelopes import OFF_LOOP, carried, load_public_key, open_carried
from gateway.sync.link import Hold, Link
from gateway.sync.outbox import JournalView, Outbox
from gateway.sync.peers import MAX_CHECKIN_BYTES, MAX_OCCUPANCY_BYTES, parse_message
from gateway.sync.topics import gw_topic, parse
from gateway.sync.wire import Channel, LinkState

log = logging.getLogger(__name__)

ACKS_WAITING = 1000  # acks queued (the central sends one per batch at most)
# The central system's messages up to this size are opened here before they cross (and
# again by the gateway): what the gateway itself would open on its loop, too small to cost.
CHECKED_HERE = OFF_LOOP
WATCH_S = 0.1  # how often the link's state is looked at (keepalive lapses are seen so)
# Refused messages that the gateway would not journal one by one are told to it at most
# this often per (topic, reason), with their count: a flood of junk at 2,000/s cost the
# doors' process one notice each, a tenth of a core (12% -> 23% in the flood bench,
# 2026-12-03).
BAD_REPORT_S = 0.1
BAD_KEYS = 1_000  # (topic, reason) counted at once; beyond, each is told as it comes


class WireFailed(Exception):
    """A part of the wire process ended by itself (the process leaves with it)."""


class _JournalOverChannel(JournalView):
    """The gateway's journal, asked over the channel (it stays in the gateway's process)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def unacked(
        self, after_seq: int = 0, limit: int = 500, *, raw: bool = False
    ) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = await self.channel.call("unacked", after_seq, limit, raw)
        return records

    async def ack(self, upto: int) -> int:
        count: int = await self.channel.call("ack", upto)
        return count


class _BadMessageTally:
    """``bad_message`` details for the gateway, a flood of them counted, not told one by one.

    The gateway journals a burst of refused messages per (topic, reason) and then a few,
    counting the rest (:class:`~gateway.event_throttle.EventThrottle`). The same throttle
    here tells it at once of those it would journal; those it would hold back are counted
    and told together, per (topic, reason), once every :data:`BAD_REPORT_S`. The gateway's
    metrics still count every one, and its events carry the count (``suppressed``).
    """

    def __init__(self, tell: Callable[[dict[str, Any], int], None]) -> None:
        self._tell = tell
        self._throttle = EventThrottle()
        self._held: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        self._window: asyncio.TimerHandle | None = None

    def refused(self, detail: dict[str, Any]) -> None:
        key = key_of(detail)
        held = self._held.get(key)
        if self._throttle.admit(key) is not None or (held is None and len(self._held) >= BAD_KEYS):
            self._tell(detail, 1)
            return
        self._held[key] = (detail, 1) if held is None else (held[0], held[1] + 1)
        if self._window is None:
            self._window = asyncio.get_running_loop().call_later(BAD_REPORT_S, self._end)

    def _end(self) -> None:
        self._window = None
        held, self._held = self._held, {}
        for detail, count in held.values():
            self._tell(detail, count)

    def close(self) -> None:
        """Tell what is counted (the channel is closing)."""
        if self._window is not None:
            self._window.cancel()
        self._end()


class Wire:
    """The link, the outbox and the acks of one gateway, talking to it over ``channel``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.site, self.gw = str(settings["site"]), str(settings["gw"])
        self.cfg = MqttSection.model_validate(settings["mqtt"])
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(settings["seed"]))
        self.identity = Identity(self.gw, self.site, key)
        self.central_key = load_public_key(settings["central_key"])
        self.ack_topic = gw_topic(self.site, self.gw, "checkin/ack")
        self.cmd_topic = gw_topic(self.site, self.gw, "cmd")
        self._overloaded_at = 0.0
        self._bad = _BadMessageTally(self._tell_refused)
        self._told: LinkState | None = None
        # Peers' keys (rules.gateways) as the gateway last told them: their check-ins and
        # occupancy are parsed and verified here, off the doors' process; None: not told yet,
        # everything goes to the gateway as it came.
        self._peer_text: dict[str, str] | None = None
        self._peer_keys: dict[str, Ed25519PublicKey | None] = {}

    async def serve(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        link = Link(
            self.cfg,
            self.site,
            self.gw,
            status_payload=self._status,
            signer=MessageSigner(self.identity),
        )
        channel = Channel(
            reader,
            writer,
            calls={"publish": self._publish},
            notices={"notify": self._notify, "peer_keys": self._set_peer_keys},
            name="gateway",
        )
        outbox = Outbox(
            _JournalOverChannel(channel),
            link,
            site=self.site,
            gw=self.gw,
            public_key=self.central_key,
            on_event=self._event,
            ack_timeout=self.cfg.ack_timeout,
            inflight=self.cfg.inflight,
        )
        self.link, self.channel, self.outbox = link, channel, outbox
        self.acks: asyncio.Queue[bytes] = asyncio.Queue(ACKS_WAITING)
        link.on_message(self._inbound)
        link.on_connect(outbox.on_connect)
        link.on_connect(self._connected)
        link.on_bad_message(self._dropped)
        link.on_change = self._report  # every check-in's ``offline`` follows at once
        parts = [
            asyncio.create_task(link.run(), name="mqtt link"),
            asyncio.create_task(outbox.run(), name="outbox"),
            asyncio.create_task(self._take_acks(), name="acks"),
            asyncio.create_task(self._watch(), name="link watch"),
        ]
        reading = asyncio.create_task(channel.run(), name="channel")
        try:
            # Until the gateway closes its end (stopped, or gone), or a part ends by itself:
            # each runs until cancelled, so that is a bug. The process then leaves with the
            # cause, and the gateway's supervisor reports it and starts a new wire process.
            await asyncio.wait([reading, *parts], return_when=asyncio.FIRST_COMPLETED)
            if channel.closed:
                # The gateway left: a part that was waiting on it (the outbox for a batch)
                # ends with ChannelClosed as the channel's reader ends. That is the normal
                # way out, not a part's failure.
                return
            for part in parts:
                if part.done():
                    error = None if part.cancelled() else part.exception()
                    why = f"{part.get_name()}: {describe(error)}"
                    log.error("MQTT wire process: %s", why, exc_info=error)
                    channel.notify("failed", why)
                    await channel.drain()
                    raise WireFailed(why)
        finally:
            for task in [*parts, reading]:
                task.cancel()
            await asyncio.gather(*parts, reading, return_exceptions=True)  # offline said
            self._bad.close()
            channel.close()

    # --- what the gateway asks --------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await self.link.publish(topic, payload, qos=qos, retain=retain)

    def _notify(self) -> None:
        self.outbox.notify()

    def _set_peer_keys(self, keys: dict[str, str]) -> None:
        self._peer_text, self._peer_keys = dict(keys), gateway_keys(keys)

    # --- what the gateway is told -----------------------------------------------------------

    def _tell_refused(self, detail: dict[str, Any], count: int) -> None:
        self.channel.notify("bad_messages", detail, count)

    def _event(self, type_: str, detail: dict[str, Any]) -> None:
        if type_ == "bad_message":
            self._bad.refused(detail)
        else:
            self.channel.notify("event", type_, detail)

    async def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.channel.call("status")
        return status

    async def _connected(self) -> None:
        self._report()  # connected, before the gateway's sync publishes its request
        await self.channel.call("on_connect")

    async def _inbound(self, topic: str, payload: bytes) -> Hold | None:
        """Acks are the outbox's, checked here; every other message goes to the gateway.
        A peer's verified check-in is acknowledged to the broker once the gateway kept it
        (the hold returned): until then the broker has it, whatever happens to us."""
        if topic == self.ack_topic:
            try:
                self.acks.put_nowait(payload)
            except asyncio.QueueFull:
                self._overloaded(topic)
            return None
        if self.channel.behind():  # the gateway is not reading: not one more in memory
            self._overloaded(topic)
            return None
        where = parse(topic)
        if (
            self._peer_text is not None
            and where is not None
            and where.kind in ("checkin", "occupancy")
            and where.site == self.site
            and where.gw not in (None, self.gw)
        ):
            return self._peer(topic, str(where.gw), where.kind, payload)
        types = carried(topic, self.site, self.gw)
        if types is not None and self._refused(topic, types, payload):
            return None
        self.channel.notify("message", topic, payload)
        return None

    def _refused(self, topic: str, types: tuple[str, ...], payload: bytes) -> bool:
        """A message on one of the central system's topics to this gateway: True if it was
        refused here, with the gateway's own check, reason, event and log line, so that a
        flood of junk costs the doors' process one small event notice each (throttled
        there) instead of a parse, a thread hop or the snapshot builder, and a log line.

        One that opens goes on as it came, and the gateway opens and verifies it again: it
        trusts nothing of this check (the key here comes from the same config as its own,
        so what is refused here it would refuse too). Only payloads up to
        :data:`CHECKED_HERE` are opened here: a snapshot chunk or a big delta is opened
        once, off the doors' loop, as before (at one core, twice would slow its apply)."""
        if len(payload) > CHECKED_HERE:
            return False
        try:
            open_carried(
                payload, public_key=self.central_key, site=self.site, topic=topic, types=types
            )
        except BadMessage as exc:
            report = command_refused if topic == self.cmd_topic else sync_refused
            self._event("bad_message", report(topic, exc.reason))
            return True
        return False

    def _peer(self, topic: str, gw: str, kind: str, payload: bytes) -> Hold | None:
        """A peer's message: parsed and its signature verified here (the gateway checks its
        fields and applies it); refused here with the gateway's own reasons. A check-in's
        hold ends when the gateway has kept it durably, or refused it."""
        limit = MAX_CHECKIN_BYTES if kind == "checkin" else MAX_OCCUPANCY_BYTES
        try:
            message = parse_message(payload, limit, topic)
        except BadMessage as exc:
            self._event("bad_message", {"topic": topic, "reason": exc.reason})
            return None
        problem = signature_problem(message, gw, self._peer_keys)
        if problem is not None:
            self._event("bad_message", {"topic": topic, "reason": problem})
            return None
        assert self._peer_text is not None
        key = self._peer_text.get(gw)
        if kind == "checkin":
            return self.channel.request("peer_checkin", topic, message, key, len(payload))
        self.channel.notify("verified", topic, message, key, len(payload))
        return None

    def _overloaded(self, topic: str) -> None:
        """A message dropped here: a ``bad_message`` event, at most one a second."""
        now = time.monotonic()
        if now - self._overloaded_at >= 1.0:
            self._overloaded_at = now
            self._event("bad_message", {"topic": topic, "reason": OVERLOADED})

    async def _dropped(self, topic: str, reason: str) -> None:
        if topic == self.ack_topic:
            self._event("bad_message", {"topic": topic, "reason": reason})
        else:
            self.channel.notify("dropped", topic, reason)

    async def _take_acks(self) -> None:
        while True:
            payload = await self.acks.get()
            try:
                await self.outbox.handle(self.ack_topic, payload)
            except LinkError as exc:  # the gateway is gone: the channel ends this process
                self._event("bad_message", {"topic": self.ack_topic,
                                                             "reason": str(exc)})  # fmt: skip
            except Exception:  # one ack's bug must not end the acks' worker (as dispatch's)
                log.exception("inbound %s: handler failed (message dropped)", self.ack_topic)

    async def _watch(self) -> None:
        """Report the link's state on every change; stop the outbox when the link drops;
        leave when the gateway's process is gone."""
        was = False
        parent = os.getppid()
        while True:
            if os.getppid() != parent:
                # Its end of the channel closes with it, unless a process it started holds a
                # copy: a wire process left behind would keep the gateway's MQTT session,
                # and it and the next one would take it from each other forever.
                log.error("MQTT wire process: the gateway's process is gone; leaving")
                self.channel.close()
                return
            connected = self.link.connected  # false too once the broker went quiet
            if was and not connected:
                self.outbox.on_disconnect()
            was = connected
            self._report()
            await asyncio.sleep(WATCH_S)

    def _report(self) -> None:
        """Tell the gateway the link's state if it changed since it was last told."""
        link, outbox = self.link, self.outbox
        state = LinkState(
            connected=link.connected,
            last_error=None if link.last_error is None else str(link.last_error),
            connections=link.connections,
            client_id=link.client_id,
            acked_upto=outbox.acked_upto,
            published_upto=outbox.published_upto,
            in_flight=outbox.in_flight,
        )
        if state != self._told:
            self.channel.notify("state", asdict(state))
            self._told = state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sync.wire_child")
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # The gateway decides when the wire stops (it closes the channel): Ctrl-C at a terminal
    # and systemd's SIGTERM reach the whole group, and the offline status must still go out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings = json.loads(sys.stdin.readline())
    log_cfg = settings.get("log", {})
    logs.configure(
        log_cfg.get("level", "info"),
        log_cfg.get("format", "auto"),
        log_cfg.get("libraries", "warning"),
    )
    niceness.lower_own_priority("MQTT wire process", niceness.WIRE)
    sock = socket.socket(fileno=args.channel_fd)
    try:
        asyncio.run(Wire(settings).serve(sock))
    except WireFailed:
        return 1  # logged, and told to the gateway
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
