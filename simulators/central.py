"""A simulated central membership system speaking PROTOCOL.md over a real MQTT broker.

It holds the site's entitlement set (loaded from a JSON set file or a CSV, or generated),
keeps its version, and signs and publishes what a real central system would: deltas on
``entitlements/delta``, missed deltas on ``gw/{gw}/delta``, chunked snapshots on
``gw/{gw}/snapshot``, ``time`` envelopes, commands, and ``ack`` envelopes for check-ins and
events. It records what the gateways sent (check-ins and events per gateway, duplicates by
``id`` counted), charges clip cards for the check-ins it counts, and reports the counted
``seq`` per gateway as ``checkins_upto`` in the next version.

From tests::

    async with CentralSimulator(port=broker.port, site="oslo", members=10) as central:
        await central.add_member(member("M1"))
        await central.wait_checkins("door-1", 5)

From a shell: ``accessgw simulate central --port 1883 --site oslo --members 10000``.
Its private key is made at start, or loaded from ``--key`` (created there if missing);
never commit one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import csv
import json
import logging
import random
import re
import sys
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import aiomqtt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.sync.envelopes import public_key_b64, seal
from gateway.sync.topics import gw_topic, parse, topic
from simulators.central_mqtt import CentralClient

log = logging.getLogger(__name__)

# What an Ed25519 check raises for a signature that does not verify.
BAD_SIGNATURE: tuple[type[Exception], ...] = (InvalidSignature, ValueError)
sodium_open: Callable[[bytes, bytes], bytes] | None
try:  # libsodium checks an Ed25519 signature in half the CPU OpenSSL takes (60 against 130
    # us here), and a drain brings the central thousands a second to check, on the cores
    # the gateway's benches share with it
    from nacl.bindings import crypto_sign_open as sodium_open
    from nacl.exceptions import BadSignatureError

    BAD_SIGNATURE += (BadSignatureError,)
except ImportError:  # PyNaCl comes with the dev extra; without it, cryptography checks them
    sodium_open = None

CHUNK_RECORDS = 2000
AckMode = Literal["normal", "late", "none", "shuffled"]


def default_rules(site: str) -> dict[str, Any]:
    """Site rules for a simulated site: open every day, a gym and a spa."""
    return {
        "site": site,
        "timezone": "Europe/Oslo",
        "schedules": {"open": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]},
        "opening_schedule": "open",
        "staff_schedule": None,
        "zones": {"gym": {"capacity": 500, "anti_passback": "none"}, "spa": {"credits": 2}},
        "unpaid": "deny",
        "medical": "allow",
        "reentry_free_minutes": 0,
        "anti_passback_minutes": 15,
        "max_offline_hours": 72,
    }


def generated_member(i: int, tag: str = "1") -> dict[str, Any]:
    """Member ``M{i:07d}`` with card ``04{i:012X}``, code ``CODE-{i}`` and one recurring
    contract ``C-{tag}`` (tests name the version in ``tag`` to see which set a member is from)."""
    return {
        "member": f"M{i:07d}",
        "display": f"Member {i}",
        "role": "member",
        "credentials": [
            {"kind": "nfc", "uid": f"04{i:012X}"},
            {"kind": "code", "value": f"CODE-{i}"},
        ],
        "contracts": [{"id": f"C-{tag}", "type": "recurring", "start": "2026-01-01", "end": None}],
    }


def record_id(record: dict[str, Any]) -> str:
    """A record's id: its ``member`` or its ``ticket``."""
    rid = record.get("member") or record.get("ticket")
    if not isinstance(rid, str):
        raise ValueError("a record needs a 'member' or a 'ticket' id")
    return rid


def load_set(path: Path) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    """A set file: JSON ``{"version", "rules", "records"}``, or a CSV of members with the
    columns member, display, role, nfc, code, contract, type, start, end, credits, zones
    (one contract per row; rows of the same member add contracts)."""
    if path.suffix.lower() == ".csv":
        return 1, None, _members_from_csv(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    return int(raw.get("version", 1)), raw.get("rules"), list(raw.get("records", []))


def _members_from_csv(path: Path) -> list[dict[str, Any]]:
    members: dict[str, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            mid = row["member"].strip()
            rec = members.setdefault(
                mid,
                {"member": mid, "display": row.get("display") or mid,
                 "role": row.get("role") or "member", "credentials": [], "contracts": []},
            )  # fmt: skip
            if row.get("nfc"):
                rec["credentials"].append({"kind": "nfc", "uid": row["nfc"].strip()})
            if row.get("code"):
                rec["credentials"].append({"kind": "code", "value": row["code"].strip()})
            if row.get("contract"):
                rec["contracts"].append(_contract_from_row(row))
    return list(members.values())


def _contract_from_row(row: dict[str, str]) -> dict[str, Any]:
    contract: dict[str, Any] = {
        "id": row["contract"].strip(),
        "type": (row.get("type") or "recurring").strip(),
        "start": (row.get("start") or "2026-01-01").strip(),
        "end": (row.get("end") or "").strip() or None,
    }
    if row.get("credits"):
        contract["credits"] = int(row["credits"])
    if row.get("zones"):
        contract["zones"] = [z.strip() for z in row["zones"].split(";") if z.strip()]
    return contract


def _iso(value: date | datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


class MemberSet:
    """The central's truth: records by id, the version, and recent deltas for replay."""

    def __init__(
        self,
        site: str,
        rules: dict[str, Any] | None = None,
        records: Iterable[dict[str, Any]] = (),
        *,
        version: int = 1,
        history: int = 1000,
    ) -> None:
        self.rules = rules or default_rules(site)
        self.records: dict[str, dict[str, Any]] = {record_id(r): r for r in records}
        self.version = version
        self.checkins_upto: dict[str, int] = {}
        self.deltas: deque[dict[str, Any]] = deque(maxlen=history)
        self.dirty: set[str] = set()  # records whose clip-card credits the central charged

    def change(
        self,
        upsert: Sequence[dict[str, Any]] = (),
        delete: Sequence[str] = (),
        rules: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make the next version; its delta body (charged records go out with it)."""
        for record in upsert:
            self.records[record_id(record)] = copy.deepcopy(record)
            self.dirty.discard(record_id(record))
        for rid in delete:
            self.records.pop(rid, None)
            self.dirty.discard(rid)
        charged = [copy.deepcopy(self.records[rid]) for rid in sorted(self.dirty)]
        self.dirty.clear()
        if rules is not None:
            self.rules = rules
        body: dict[str, Any] = {
            "version": self.version + 1,
            "base": self.version,
            "upsert": [copy.deepcopy(r) for r in upsert] + charged,
            "delete": list(delete),
            "checkins_upto": dict(self.checkins_upto),
        }
        if rules is not None:
            body["rules"] = rules
        self.version += 1
        self.deltas.append(body)
        return body

    def deltas_since(self, have: int) -> list[dict[str, Any]] | None:
        """The deltas from ``have`` to the current version, or None if some are gone."""
        if have == self.version:
            return []
        if have > self.version or not self.deltas or self.deltas[0]["base"] > have:
            return None
        return [d for d in self.deltas if d["version"] > have]

    def snapshot_bodies(self, chunk_records: int = CHUNK_RECORDS) -> list[dict[str, Any]]:
        """The current set as snapshot chunk bodies (rules and checkins_upto in chunk 0)."""
        records = list(self.records.values())
        chunks = max(1, -(-len(records) // chunk_records))
        bodies = []
        for i in range(chunks):
            body: dict[str, Any] = {
                "version": self.version,
                "chunk": i,
                "chunks": chunks,
                "records": records[i * chunk_records : (i + 1) * chunk_records],
            }
            if i == 0:
                body["rules"] = self.rules
                body["checkins_upto"] = dict(self.checkins_upto)
            bodies.append(body)
        return bodies

    def charge(self, member: Any, contract: Any, credits: int) -> None:
        """Deduct a check-in's charge from the member's clip card (counted by the central)."""
        record = self.records.get(member) if isinstance(member, str) else None
        if record is None or credits <= 0:
            return
        record = self.records[member] = copy.deepcopy(record)  # a snapshot may hold the old
        for c in record.get("contracts", []):
            if c.get("id") == contract and c.get("type") == "clipcard":
                c["credits"] = max(0, int(c.get("credits", 0)) - credits)
                self.dirty.add(member)


@dataclass
class Received:
    """What one gateway sent: unique check-ins and events in arrival order, duplicates."""

    checkins: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)  # seqs of distinct messages, as they came
    duplicates: int = 0
    ids: set[str] = field(default_factory=set)
    seqs: set[int] = field(default_factory=set)
    upto: int = 0  # highest seq with every seq up to it received (gateways count from 1)
    adopt_first: bool = False  # a central started late: take the first seq seen as the start
    syncs: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    acks_sent: list[int] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason)

    def count(self, seq: int) -> None:
        """Advance ``upto`` over the contiguous seqs received."""
        if self.adopt_first and self.upto == 0 and not self.seqs:
            self.upto = seq - 1
        if seq > self.upto:
            self.seqs.add(seq)
        while self.upto + 1 in self.seqs:
            self.upto += 1
            self.seqs.discard(self.upto)


class GatewayRegistry:
    """The gateways' registered public keys, and the check of their signatures.

    Written from PROTOCOL.md ("Signed messages from gateways") independently of the
    gateway's own code: the canonical JSON of the message without ``sig``, Ed25519,
    ``sig`` in base64url without padding, ``gw`` equal to the topic's.
    """

    def __init__(self, keys: dict[str, str] | None) -> None:
        self.strict = keys is not None
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.raw: dict[str, bytes] = {}  # the same keys' 32 bytes, for libsodium
        self.verified = 0  # messages whose signature verified (benches report it)
        for gw, b64 in (keys or {}).items():
            self.register(gw, b64)

    def register(self, gw: str, public_key_b64: str) -> None:
        """Accept ``gw``'s messages signed by this key (standard base64 of 32 bytes)."""
        raw = base64.b64decode(public_key_b64, validate=True)
        self.keys[gw] = Ed25519PublicKey.from_public_bytes(raw)  # refuses all but 32 bytes
        self.raw[gw] = raw
        self.strict = True

    def as_rules(self) -> dict[str, str]:
        """The keys as the site rules' ``gateways`` carry them."""
        return {
            gw: base64.b64encode(key.public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)).decode()
            for gw, key in self.keys.items()
        }  # fmt: skip

    def problem(self, topic_gw: str, message: dict[str, Any]) -> str | None:
        """Why the central must not trust ``message`` from ``gw/{topic_gw}/...``, or None."""
        if not self.strict:
            return None
        if message.get("gw") != topic_gw:
            return "gw missing or not the topic's"
        key = self.keys.get(topic_gw)
        if key is None:
            return "gateway not registered"
        sig = message.get("sig")
        if not isinstance(sig, str) or not re.fullmatch(r"[A-Za-z0-9_-]{86}", sig):
            return "unsigned or malformed sig"
        unsigned = {k: v for k, v in message.items() if k != "sig"}
        signed = json.dumps(unsigned, sort_keys=True, separators=(",", ":"),
                            ensure_ascii=False).encode("utf-8", "surrogatepass")  # fmt: skip
        raw_sig = base64.urlsafe_b64decode(sig + "==")  # 64 bytes: 86 characters checked
        try:
            if sodium_open is not None:
                sodium_open(raw_sig + signed, self.raw[topic_gw])
            else:
                key.verify(raw_sig, signed)
        except BAD_SIGNATURE:
            return "bad signature"
        self.verified += 1
        return None


class CentralSimulator:
    """The simulated central system on one MQTT broker, for one site."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        site: str = "oslo-sentrum",
        *,
        key: Ed25519PrivateKey | None = None,
        members: int = 0,
        records: Iterable[dict[str, Any]] = (),
        rules: dict[str, Any] | None = None,
        version: int = 1,
        chunk_records: int = CHUNK_RECORDS,
        time_interval: float | None = 60.0,
        ack_interval: float = 0.02,
        count_interval: float = 1.0,
        adopt_first_seq: bool = False,
        gateways: dict[str, str] | None = None,
    ) -> None:
        self.host, self.port, self.site = host, port, site
        # One client id for the simulator's life, with a session the broker keeps: as a real
        # central runs, what gateways publish while it reconnects (a broker restart) waits
        # for it in order instead of being dropped for want of a subscriber.
        self.client_id = f"central-{site}-{uuid.uuid4().hex[:6]}"
        self.key = key or Ed25519PrivateKey.generate()
        generated = (generated_member(i) for i in range(1, members + 1))
        # Registered gateway keys: with a registry (even an empty one), every message from a
        # gateway must be signed by its registered key; None is for tests of other parts,
        # which publish unsigned messages by hand.
        self.gateways = GatewayRegistry(gateways)
        if gateways is not None:
            rules = {**(rules or default_rules(site)), "gateways": dict(gateways)}
        self.set = MemberSet(site, rules, [*records, *generated], version=version)
        self.chunk_records = chunk_records
        self.time_interval = time_interval
        self.ack_interval = ack_interval
        self.count_interval = count_interval
        self.ack_mode: AckMode = "normal"
        self.ack_delay = 0.0
        # A central that starts late (from the command line) takes the first seq a gateway
        # sends as its start; tests start from seq 1, so nothing lost goes unnoticed.
        self.received: dict[str, Received] = defaultdict(
            lambda: Received(adopt_first=adopt_first_seq)
        )
        self._client: CentralClient | None = None
        self._connected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._ack_due: set[str] = set()
        self._ack_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._answering = asyncio.Lock()

    # --- life cycle ----------------------------------------------------------------------

    @property
    def public_key_b64(self) -> str:
        """The public key for the gateways' ``central.public_key``."""
        return public_key_b64(self.key.public_key())

    @property
    def version(self) -> int:
        """The current entitlement version."""
        return self.set.version

    async def __aenter__(self) -> CentralSimulator:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="central-mqtt"),
            asyncio.create_task(self._ack_loop(), name="central-acks"),
            asyncio.create_task(self._count_loop(), name="central-count"),
        ]
        if self.time_interval:
            self._tasks.append(asyncio.create_task(self._time_loop(), name="central-time"))
        async with asyncio.timeout(10):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Cancel until done: Python 3.11's wait_for (the connect's) can swallow a cancellation
        # that arrives as what it waits for does, and a loop would then wait for ever.
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)

    async def wait_connected(self, within: float = 10) -> None:
        """Wait until connected (e.g. after the broker was restarted)."""
        async with asyncio.timeout(within):
            await self._connected.wait()

    async def _connection_loop(self) -> None:
        """Connect, subscribe, serve; after a drop, connect again (the broker may restart).
        Messages are taken as they are read (:mod:`simulators.central_mqtt`)."""
        while True:
            try:
                async with CentralClient(
                    self.host, self.port, self.client_id, self._on_message, clean_session=False
                ) as client:
                    base = topic(self.site, "gw", "+")
                    for kind in ("sync", "checkin", "event", "cmd/result"):
                        await client.subscribe(f"{base}/{kind}", qos=1)
                    self._client = client
                    self._connected.set()
                    await client.closed()
            except aiomqtt.MqttError as exc:
                log.info("central: connection lost (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(0.2)

    async def _publish(self, name: str, payload: bytes) -> None:
        """Publish with QoS 1, waiting a while for the connection if it is down."""
        async with asyncio.timeout(10):
            await self._connected.wait()
        assert self._client is not None
        await self._client.publish(name, payload)

    def _seal(self, type_: str, body: dict[str, Any], gw: str | None = None) -> bytes:
        """Signed now; ``gw`` for what goes on that gateway's own ``gw/{gw}/...`` topics."""
        return seal(type_, self.site, body, self.key, datetime.now(UTC), gw)

    def _seal_all(self, type_: str, bodies: list[dict[str, Any]], gw: str) -> list[bytes]:
        return [self._seal(type_, body, gw) for body in bodies]

    # --- inbound ---------------------------------------------------------------------------

    def _on_message(self, name: str, payload: bytes) -> None:
        where = parse(name)
        if where is None or where.gw is None:
            return
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):
            self._refuse(where.gw, name, "not JSON")
            return
        if not isinstance(message, dict):
            self._refuse(where.gw, name, "not a JSON object")
            return
        problem = self.gateways.problem(where.gw, message)
        if problem is None and where.kind == "checkin":
            problem = self._charge_problem(message)
        if problem is not None:
            self._refuse(where.gw, name, problem)
            return
        got = self.received[where.gw]
        if where.kind in ("checkin", "event"):
            self._record(where.gw, where.kind, message)
        elif where.kind == "sync":
            got.syncs.append(message)
            self._spawn(self._answer_sync(where.gw, message.get("have")))
        elif where.kind == "cmd/result":
            got.results.append(message)
        self._arrived.set()

    def _refuse(self, gw: str, name: str, reason: str) -> None:
        """A message the central does not trust: recorded, never counted, never acked."""
        log.warning("central: message on %s refused: %s", name, reason)
        self.received[gw].refused.append((name, reason))
        self._arrived.set()

    def _charge_problem(self, checkin: dict[str, Any]) -> str | None:
        """A charge the site's prices cannot explain (negative, not an integer, too high)."""
        charged = checkin.get("charged", 0)
        zones = self.set.rules.get("zones") or {}
        highest = max([1, *(int(z.get("credits", 1)) for z in zones.values())])
        if charged is None:
            return None
        if not isinstance(charged, int) or isinstance(charged, bool):
            return "charged is not an integer"
        if not 0 <= charged <= highest:
            return f"charged {charged} is outside 0..{highest}"
        return None

    async def register_gateway(self, gw: str, public_key_b64: str) -> int:
        """Register a gateway's key (``accessgw id``): its messages are accepted from now on,
        and the site rules' ``gateways`` carry it to its peers (a new version)."""
        self.gateways.register(gw, public_key_b64)
        rules = {**self.set.rules, "gateways": self.gateways.as_rules()}
        return await self.update(rules=rules)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    def _record(self, gw: str, kind: str, message: dict[str, Any]) -> None:
        got = self.received[gw]
        mid, seq = message.get("id"), message.get("seq")
        if mid in got.ids:
            got.duplicates += 1
        else:
            got.ids.add(str(mid))
            got.arrivals.append(seq if isinstance(seq, int) else -1)
            (got.checkins if kind == "checkin" else got.events).append(message)
            if kind == "checkin" and message.get("passed"):
                self.set.charge(message.get("member"), message.get("contract"),
                                int(message.get("charged") or 0))  # fmt: skip
        if isinstance(seq, int):
            got.count(seq)
            if got.upto > 0:
                self.set.checkins_upto[gw] = got.upto
        self._ack_due.add(gw)
        self._ack_wake.set()

    async def _answer_sync(self, gw: str, have: Any) -> None:
        """Missed deltas on gw/{gw}/delta, else a snapshot; a ``time`` when it is current."""
        async with self._answering:
            await self.publish_charges()
            deltas = self.set.deltas_since(have) if isinstance(have, int) else None
            if deltas == []:
                await self._publish(gw_topic(self.site, gw, "delta"), self._time_payload(gw))
            elif deltas is not None:
                for body in deltas:
                    await self._publish(
                        gw_topic(self.site, gw, "delta"), self._seal("delta", body, gw)
                    )
            else:
                await self.send_snapshot(gw)

    # --- acks ------------------------------------------------------------------------------

    def set_ack_mode(self, mode: AckMode, delay: float = 0.0) -> None:
        """``normal`` (ack soon), ``late`` (after ``delay`` s), ``none`` (never) or
        ``shuffled`` (one ack per message, out of order)."""
        self.ack_mode, self.ack_delay = mode, delay
        self._ack_wake.set()

    async def _ack_loop(self) -> None:
        """Acknowledge what arrived, batched every ``ack_interval`` as a real central would.

        The acks are handed to the broker and the next interval starts: the broker's PUBACK
        for an ack is not waited for here. Until 2026-12-03 it was, and on two cores shared
        with a draining gateway and the broker an ack went out every 58 ms (median) instead
        of every 20: the gateway's window of 500 unacknowledged check-ins filled and its drain
        waited on the simulator, not on its own work. Shuffled acks (a test mode, up to 50
        publishes) still go out one interval at a time, so two intervals' never mix."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(self.ack_interval)
            if self.ack_mode == "none":
                continue
            if self.ack_mode == "late":
                await asyncio.sleep(self.ack_delay)
            await self._connected.wait()  # down: what is due waits (one ack each, not many)
            due, self._ack_due = self._ack_due, set()
            for gw in due:
                if self.ack_mode == "shuffled":
                    await self._ack(gw)
                else:
                    self._spawn(self._ack(gw))

    async def _ack(self, gw: str) -> None:
        """Send ``gw`` its acks; if that fails, they are due again once connected."""
        try:
            await self._send_acks(gw)
        except (aiomqtt.MqttError, TimeoutError):
            self._ack_due.add(gw)
            await asyncio.sleep(0.2)
            self._ack_wake.set()

    async def _send_acks(self, gw: str) -> None:
        got = self.received[gw]
        if got.upto < 1:
            return
        uptos = [got.upto]
        if self.ack_mode == "shuffled":
            last = got.acks_sent[-1] if got.acks_sent else 0
            uptos = list(range(max(1, last + 1), got.upto + 1))[-50:] or [got.upto]
            random.shuffle(uptos)
        for upto in uptos:
            await self._publish(gw_topic(self.site, gw, "checkin/ack"),
                                self._seal("ack", {"upto": upto}, gw))  # fmt: skip
            got.acks_sent.append(upto)

    async def _count_loop(self) -> None:
        """Publish a delta for clip cards charged by counted check-ins, now and then."""
        while True:
            await asyncio.sleep(self.count_interval)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self.publish_charges()

    async def publish_charges(self) -> None:
        """A delta with the records charged since the last version, if any."""
        if self.set.dirty:
            await self._publish_delta(self.set.change())

    # --- outbound: the test API -----------------------------------------------------------

    async def update(
        self,
        upsert: Sequence[dict[str, Any]] = (),
        delete: Sequence[str] = (),
        rules: dict[str, Any] | None = None,
        *,
        publish: bool = True,
    ) -> int:
        """Make a new version and publish its delta on ``entitlements/delta`` (or not, to
        play a delta that got lost). Returns the new version."""
        body = self.set.change(upsert, delete, rules)
        if publish:
            await self._publish_delta(body)
        return self.set.version

    async def _publish_delta(self, body: dict[str, Any]) -> None:
        await self._publish(topic(self.site, "entitlements", "delta"), self._seal("delta", body))

    def record(self, rid: str) -> dict[str, Any]:
        """A copy of the current record ``rid`` (KeyError if there is none)."""
        return copy.deepcopy(self.set.records[rid])

    async def add_member(self, member: dict[str, Any] | int) -> int:
        """Add (or replace) a member record; an int makes :func:`generated_member`."""
        record = generated_member(member) if isinstance(member, int) else member
        return await self.update([record])

    async def add_ticket(self, ticket: dict[str, Any]) -> int:
        """Add (or replace) a ticket record."""
        return await self.update([ticket])

    async def freeze_contract(
        self, member: str, contract: str, start: date | str, end: date | str
    ) -> int:
        """Freeze one contract of a member from ``start`` to ``end`` (dates, inclusive)."""
        record = self.record(member)
        for c in record["contracts"]:
            if c["id"] == contract:
                c.setdefault("freezes", []).append({"from": _iso(start), "to": _iso(end)})
        return await self.update([record])

    async def block(
        self, member: str, start: datetime | str, end: datetime | str, reason: str = "blacklist"
    ) -> int:
        """Block a member for ``[start, end)``."""
        record = self.record(member)
        record.setdefault("blocks", []).append(
            {"from": _iso(start), "to": _iso(end), "reason": reason}
        )
        return await self.update([record])

    async def delete(self, rid: str) -> int:
        """Delete a member or ticket."""
        return await self.update(delete=[rid])

    async def send_snapshot(self, gw: str, bodies: list[dict[str, Any]] | None = None) -> None:
        """The whole set as signed chunks on ``gw/{gw}/snapshot`` (signed in a worker thread)."""
        bodies = bodies if bodies is not None else self.set.snapshot_bodies(self.chunk_records)
        name = gw_topic(self.site, gw, "snapshot")
        window = 8
        for start in range(0, len(bodies), window):
            part = bodies[start : start + window]
            payloads = await asyncio.to_thread(self._seal_all, "snapshot", part, gw)
            await asyncio.gather(*(self._publish(name, p) for p in payloads))

    def _time_payload(self, gw: str | None = None) -> bytes:
        now = datetime.now(UTC)
        return seal("time", self.site, {"now": now.isoformat(), "version": self.version},
                    self.key, now, gw)  # fmt: skip

    async def send_time(self, gw: str | None = None) -> None:
        """A ``time`` envelope on ``time`` (all gateways) or on ``gw/{gw}/delta``."""
        name = topic(self.site, "time") if gw is None else gw_topic(self.site, gw, "delta")
        await self._publish(name, self._time_payload(gw))

    async def _time_loop(self) -> None:
        assert self.time_interval
        while True:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self.send_time()
            await asyncio.sleep(self.time_interval)

    async def send_command(
        self,
        gw: str,
        op: str,
        door: str = "*",
        seconds: int | None = None,
        *,
        command_id: str | None = None,
        issued_at: datetime | None = None,
    ) -> str:
        """Send a signed command on ``gw/{gw}/cmd``; its id (results land in ``received``)."""
        command_id = command_id or uuid.uuid4().hex
        body: dict[str, Any] = {"id": command_id, "op": op, "door": door}
        if seconds is not None:
            body["seconds"] = seconds
        at = issued_at or datetime.now(UTC)
        await self._publish(gw_topic(self.site, gw, "cmd"),
                            seal("command", self.site, body, self.key, at, gw))  # fmt: skip
        return command_id

    async def publish_raw(self, name: str, payload: bytes) -> None:
        """Publish anything on any topic (for tests of bad messages)."""
        await self._publish(name, payload)

    def seal(self, type_: str, body: dict[str, Any], gw: str | None = None) -> bytes:
        """A signed envelope with this central's key (for tests that publish by hand);
        ``gw`` for one gateway's ``gw/{gw}/...`` topics."""
        return self._seal(type_, body, gw)

    # --- waiting, for tests --------------------------------------------------------------

    async def wait_until(self, condition: Any, within: float = 10.0) -> None:
        """Wait until ``condition()`` is true (checked whenever something arrives)."""
        async with asyncio.timeout(within):
            while not condition():
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):  # not wait_for: it may eat a cancel
                        await self._arrived.wait()

    async def wait_checkins(
        self, gw: str, count: int, within: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` distinct check-ins of ``gw`` arrived; they, in arrival order."""
        await self.wait_until(lambda: len(self.received[gw].checkins) >= count, within)
        return self.received[gw].checkins


# --- command line --------------------------------------------------------------------------


def load_key(path: Path | None) -> Ed25519PrivateKey:
    """The private key from a PEM file; made (and saved there, mode 0600) if it is missing."""
    if path is None:
        return Ed25519PrivateKey.generate()
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SystemExit(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return key


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``accessgw simulate central``."""
    p = argparse.ArgumentParser(prog="accessgw simulate central", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    p.add_argument("--site", default="oslo-sentrum", help="site id")
    p.add_argument("--members", type=int, default=0, help="generate this many members")
    p.add_argument("--set", type=Path, help="a set file: JSON {version, rules, records} or CSV")
    p.add_argument("--key", type=Path, help="Ed25519 private key PEM (made there if missing)")
    p.add_argument("--public-key-out", type=Path, help="write the public key (base64) here")
    p.add_argument("--time-interval", type=float, default=60.0, help="seconds between time")
    p.add_argument("--ack-mode", choices=["normal", "late", "none", "shuffled"], default="normal")
    p.add_argument("--ack-delay", type=float, default=5.0, help="seconds, with --ack-mode late")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--gateway", action="append", default=None, metavar="GW=KEY",
                   help="register a gateway's public key (from accessgw id); repeatable. "
                   "With none, messages from gateways are taken unsigned (for tests)")  # fmt: skip
    return p


def _registrations(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    out = {}
    for value in values:
        gw, sep, key = value.partition("=")
        if not sep:
            raise SystemExit(f"--gateway {value!r}: expected GW=KEY")
        out[gw] = key
    return out


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate central``: serve a simulated central system until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    version, rules, records = (1, None, []) if args.set is None else load_set(args.set)
    sim = CentralSimulator(
        args.host, args.port, args.site, key=load_key(args.key), members=args.members,
        records=records, rules=rules, version=version, time_interval=args.time_interval,
        adopt_first_seq=True, gateways=_registrations(args.gateway),
    )  # fmt: skip
    sim.set_ack_mode(args.ack_mode, args.ack_delay)
    if args.public_key_out:
        args.public_key_out.write_text(sim.public_key_b64 + "\n", encoding="utf-8")

    async def serve() -> None:
        async with sim:
            print(f"central simulator for site {args.site} on {args.host}:{args.port}: "
                  f"version {sim.version}, {len(sim.set.records)} records", flush=True)  # fmt: skip
            print(f'central.public_key = "{sim.public_key_b64}"', flush=True)
            await asyncio.sleep(args.seconds if args.seconds is not None else float("inf"))

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    except (OSError, aiomqtt.MqttError, TimeoutError) as exc:
        print(f"central simulator: cannot reach the broker {args.host}:{args.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
