"""Home Assistant MQTT discovery: the gateway's doors, readers, zones and decisions as entities.

Optional (``[homeassistant] enabled``), on a broker connection of its own (client id
``<site>.<gw>.ha``) so nothing here can slow or stop the sync link. Entities (one device
per gateway):

* each door as a ``lock`` (``LOCKED``/``UNLOCKED``/``JAMMED`` after a relay fault) and, when
  it has a contact, a ``binary_sensor`` (device class ``door``);
* each reader as a ``binary_sensor`` (device class ``connectivity``);
* each zone's occupancy (people inside across the site) as a ``sensor``;
* decisions at each door as an ``event`` (``granted``/``denied`` with the reason; no
  member id, no name: a home-automation system needs neither).

Discovery configs are retained under ``<discovery_prefix>/``; states are retained under
``accessgw/<site>/<gw>/``. Whatever this gateway announced earlier and no longer has
(a door removed, or the integration switched off) is removed with an empty retained
message. HA can lock and unlock only with ``commands = true`` and a broker that signs
clients in (the gateway connects with a username or a client certificate); otherwise the
lock's command topic is never subscribed and the buttons do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from gateway import __version__
from gateway.config import Config
from gateway.errors import LinkError
from gateway.sync.link import broker_credentials

log = logging.getLogger(__name__)

POLL_S = 0.2  # door states are read this often (memory only: cheap)
SWEEP_S = 1.0  # how long retained discovery configs are collected before removing stale ones
MAX_COMMAND = 16  # bytes: LOCK, UNLOCK, OPEN


class DoorView(Protocol):
    """What the bridge reads of a door."""

    def status(self) -> Mapping[str, str]: ...


class DoorCommands(Protocol):
    """What the bridge may ask of the gateway when HA sends a command."""

    async def set_mode(self, door: str, mode: str) -> None: ...

    async def open_once(self, door: str, seconds: int | None) -> None: ...


@dataclass(frozen=True)
class GatewayParts:
    """The parts of the running gateway the bridge reads (all in memory, on the loop)."""

    doors: Mapping[str, DoorView]
    readers_online: Callable[[], Mapping[str, bool]]
    inside: Callable[[str], int]
    listen: Callable[[Callable[[Mapping[str, Any]], None]], None]
    commands: DoorCommands
    marker: Path  # exists while HA has this gateway's entities (so disabling removes them)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


@dataclass(frozen=True)
class Entity:
    """One discovery config and where its state goes."""

    component: str
    object_id: str
    config: dict[str, Any]


class Discovery:
    """The discovery configs and topics of one gateway (pure: no I/O)."""

    def __init__(self, config: Config, *, commands: bool) -> None:
        gw, site = config.gateway.id, config.gateway.site
        self.prefix = config.homeassistant.discovery_prefix
        self.node = _safe_id(f"accessgw_{site}_{gw}")
        self.base = f"accessgw/{site}/{gw}"
        self.availability = f"{self.base}/availability"
        self.commands = commands
        self.config = config
        self.device = {
            "identifiers": [self.node],
            "name": f"accessgw {gw}",
            "manufacturer": "accessgw",
            "model": "access-control gateway",
            "sw_version": __version__,
        }

    def config_topic(self, component: str, object_id: str) -> str:
        """``<prefix>/<component>/<node>/<object_id>/config``."""
        return f"{self.prefix}/{component}/{self.node}/{object_id}/config"

    def lock_topic(self, door: str) -> str:
        """Where a door's lock state is published."""
        return f"{self.base}/door/{door}/lock"

    def contact_topic(self, door: str) -> str:
        """Where a door's contact state is published."""
        return f"{self.base}/door/{door}/contact"

    def command_topic(self, door: str) -> str:
        """Where HA sends LOCK/UNLOCK/OPEN for a door."""
        return f"{self.base}/door/{door}/set"

    def decision_topic(self, door: str) -> str:
        """Where a door's decisions are published as HA events."""
        return f"{self.base}/door/{door}/decision"

    def reader_topic(self, reader: str) -> str:
        """Where a reader's health is published."""
        return f"{self.base}/reader/{reader}/online"

    def zone_topic(self, zone: str) -> str:
        """Where a zone's occupancy is published."""
        return f"{self.base}/zone/{_safe_id(zone)}/occupancy"

    def _common(self, object_id: str, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"{self.node}_{object_id}",
            "object_id": f"{self.node}_{object_id}",
            "device": self.device,
            "availability_topic": self.availability,
            "qos": 1,
        }

    def entities(self) -> list[Entity]:
        """Every entity this gateway offers, from its config."""
        out = []
        for door in self.config.doors:
            oid = f"door_{door.id}"
            lock = {
                **self._common(oid, f"{door.id} lock"),
                "state_topic": self.lock_topic(door.id),
                "command_topic": self.command_topic(door.id),
                "payload_lock": "LOCK",
                "payload_unlock": "UNLOCK",
                "payload_open": "OPEN",
                "state_locked": "LOCKED",
                "state_unlocked": "UNLOCKED",
                "state_jammed": "JAMMED",
                "optimistic": False,
            }
            out.append(Entity("lock", oid, lock))
            if door.contact is not None:
                cid = f"door_{door.id}_contact"
                out.append(
                    Entity(
                        "binary_sensor",
                        cid,
                        {
                            **self._common(cid, f"{door.id} contact"),
                            "state_topic": self.contact_topic(door.id),
                            "device_class": "door",
                            "payload_on": "ON",
                            "payload_off": "OFF",
                        },
                    )
                )
            eid = f"door_{door.id}_decision"
            out.append(
                Entity(
                    "event",
                    eid,
                    {
                        **self._common(eid, f"{door.id} decision"),
                        "state_topic": self.decision_topic(door.id),
                        "event_types": ["granted", "denied"],
                    },
                )
            )
        for reader in self.config.readers:
            rid = f"reader_{reader.id}"
            out.append(
                Entity(
                    "binary_sensor",
                    rid,
                    {
                        **self._common(rid, f"reader {reader.id}"),
                        "state_topic": self.reader_topic(reader.id),
                        "device_class": "connectivity",
                        "entity_category": "diagnostic",
                        "payload_on": "ON",
                        "payload_off": "OFF",
                    },
                )
            )
        for zone in sorted({d.zone for d in self.config.doors}):
            zid = f"zone_{_safe_id(zone)}_occupancy"
            out.append(
                Entity(
                    "sensor",
                    zid,
                    {
                        **self._common(zid, f"{zone} occupancy"),
                        "state_topic": self.zone_topic(zone),
                        "state_class": "measurement",
                        "unit_of_measurement": "people",
                        "icon": "mdi:account-group",
                    },
                )
            )
        return out

    def own_config_filter(self) -> str:
        """The topic filter covering every discovery config of this gateway."""
        return f"{self.prefix}/+/{self.node}/+/config"


def commands_allowed(config: Config) -> bool:
    """HA may unlock only when asked to and the broker signs clients in."""
    mqtt, ha = config.mqtt, config.homeassistant
    signed_in = mqtt.username is not None or (mqtt.tls is not None and mqtt.tls.cert_file)
    if ha.commands and not signed_in:
        log.warning(
            "Home Assistant: lock commands are not offered: the broker does not sign this "
            "gateway in (set mqtt.username or a TLS client certificate), so it may not "
            "sign in whoever sends them either"
        )
    return bool(ha.commands and signed_in)


class HomeAssistantBridge:
    """Keeps Home Assistant's view of this gateway current, on its own broker connection."""

    def __init__(self, config: Config, gateway: GatewayParts, *, retry_s: float = 2.0) -> None:
        self.config = config
        self.gateway = gateway
        self.enabled = config.homeassistant.enabled
        self.discovery = Discovery(config, commands=commands_allowed(config) and self.enabled)
        self.retry_s = retry_s
        self._client: aiomqtt.Client | None = None
        self._sent: dict[str, bytes] = {}  # state topic -> last payload (publish on change)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1000)
        self._jammed: dict[str, str] = {}  # door -> the lock state it was stuck in
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Connect, announce (or remove), and keep states current; reconnect with back-off."""
        if self.enabled:
            self.gateway.listen(self._on_item)
        while True:
            try:
                await self._session()
                if not self.enabled:  # the stale configs are gone: nothing more to do
                    await asyncio.Event().wait()  # (a supervised part does not return)
            except (aiomqtt.MqttError, LinkError) as exc:
                log.warning("Home Assistant: broker connection: %s; retrying", exc)
            finally:
                self.connected.clear()
                self._client = None
                self._sent.clear()
            await asyncio.sleep(self.retry_s)

    async def _session(self) -> None:
        mqtt = self.config.mqtt
        credentials = await asyncio.to_thread(broker_credentials, mqtt)
        will = aiomqtt.Will(self.discovery.availability, b"offline", qos=1, retain=True)
        async with aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=f"{self.config.gateway.site}.{self.config.gateway.id}.ha",
            will=will if self.enabled else None,
            keepalive=mqtt.keepalive,
            **credentials,
        ) as client:
            self._client = client
            await self._sweep(client)
            if not self.enabled:
                await asyncio.to_thread(self.gateway.marker.unlink, missing_ok=True)
                log.info("Home Assistant: discovery is off: this gateway's entities removed")
                return
            await asyncio.to_thread(self.gateway.marker.touch)
            await self._announce(client)
            self.connected.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._poll_states())
                tasks.create_task(self._send_queued(client))
                if self.discovery.commands:
                    tasks.create_task(self._take_commands(client))

    async def _sweep(self, client: aiomqtt.Client) -> None:
        """Remove retained configs of ours that are not wanted now (all of them when off)."""
        wanted = set() if not self.enabled else {
            self.discovery.config_topic(e.component, e.object_id)
            for e in self.discovery.entities()
        }  # fmt: skip
        found: set[str] = set()
        await client.subscribe(self.discovery.own_config_filter(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SWEEP_S):
                async for message in client.messages:
                    if message.retain and message.payload:
                        found.add(str(message.topic))
        await client.unsubscribe(self.discovery.own_config_filter())
        for stale in sorted(found - wanted):
            await client.publish(stale, b"", qos=1, retain=True)
        if not self.enabled:
            await client.publish(self.discovery.availability, b"", qos=1, retain=True)

    async def _announce(self, client: aiomqtt.Client) -> None:
        for entity in self.discovery.entities():
            payload = json.dumps(entity.config, separators=(",", ":")).encode()
            topic = self.discovery.config_topic(entity.component, entity.object_id)
            await client.publish(topic, payload, qos=1, retain=True)
        await client.publish(self.discovery.availability, b"online", qos=1, retain=True)
        log.info(
            "Home Assistant: %d entities announced under %s/ (commands %s)",
            len(self.discovery.entities()),
            self.discovery.prefix,
            "on" if self.discovery.commands else "off",
        )

    # --- states ---------------------------------------------------------------------------

    def _state(self, topic: str, payload: str | bytes, *, retain: bool = True) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        if retain and self._sent.get(topic) == data:
            return
        if retain:
            self._sent[topic] = data
        with contextlib.suppress(asyncio.QueueFull):  # HA is told again at the next change
            self._queue.put_nowait((topic, data))

    async def _send_queued(self, client: aiomqtt.Client) -> None:
        while True:
            topic, data = await self._queue.get()
            retain = not topic.endswith("/decision")
            await client.publish(topic, data, qos=1, retain=retain)

    async def _poll_states(self) -> None:
        """Door lock and contact states, and zone occupancy, published when they change."""
        while True:
            for door_id, door in self.gateway.doors.items():
                status = door.status()
                lock = "UNLOCKED" if status.get("lock") == "unlocked" else "LOCKED"
                if door_id in self._jammed and self._jammed[door_id] == lock:
                    lock = "JAMMED"  # until the lock moves again
                else:
                    self._jammed.pop(door_id, None)
                self._state(self.discovery.lock_topic(door_id), lock)
                contact = status.get("contact")
                if contact in ("open", "closed"):
                    self._state(
                        self.discovery.contact_topic(door_id), "ON" if contact == "open" else "OFF"
                    )
            for zone in {d.zone for d in self.config.doors}:
                self._state(self.discovery.zone_topic(zone), str(self.gateway.inside(zone)))
            for reader, online in self.gateway.readers_online().items():
                self._state(self.discovery.reader_topic(reader), "ON" if online else "OFF")
            await asyncio.sleep(POLL_S)

    def _on_item(self, item: Mapping[str, Any]) -> None:
        """Decisions and relay faults, as the gateway sees them happen."""
        if not self.connected.is_set():
            return
        door = item.get("door")
        if door not in self.gateway.doors:
            return
        kind = item.get("kind")
        if kind == "decision":
            body = {"event_type": item.get("decision"), "reason": item.get("reason")}
            self._state(self.discovery.decision_topic(str(door)), json.dumps(body), retain=False)
        elif kind == "event" and item.get("type") == "relay_fault":
            status = self.gateway.doors[str(door)].status()
            self._jammed[str(door)] = "UNLOCKED" if status.get("lock") == "unlocked" else "LOCKED"

    # --- commands ------------------------------------------------------------------------

    async def _take_commands(self, client: aiomqtt.Client) -> None:
        """LOCK -> normal, UNLOCK -> held unlocked, OPEN -> one timed release."""
        topics = {self.discovery.command_topic(d): d for d in self.gateway.doors}
        for topic in topics:
            await client.subscribe(topic, qos=1)
        async for message in client.messages:
            door = topics.get(str(message.topic))
            payload = message.payload
            if door is None or not isinstance(payload, bytes) or len(payload) > MAX_COMMAND:
                continue
            command = payload.decode("ascii", "replace").strip().upper()
            log.info("Home Assistant: %s for door %s", command, door)
            if command == "LOCK":
                await self.gateway.commands.set_mode(door, "normal")
            elif command == "UNLOCK":
                await self.gateway.commands.set_mode(door, "unlock")
            elif command == "OPEN":
                await self.gateway.commands.open_once(door, None)
            else:
                log.warning("Home Assistant: command %r for door %s ignored", command[:16], door)
