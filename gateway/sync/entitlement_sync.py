"""Entitlement sync (PROTOCOL.md, Entitlement sync and Time): deltas, snapshots, ``time``.

Inbound envelopes are opened and verified first (:mod:`gateway.sync.envelopes`); a bad
envelope or an invalid set is dropped whole, nothing of it applied, and reported as a
``bad_message`` event with the topic and the reason. Deltas apply in version order: one whose
``base`` is not the store's version waits in a bounded buffer while the gateway asks ``sync``
with ``why: gap``. Snapshot chunks are gathered until all k chunks of one version are in,
then validated and applied with one ``store.replace`` in a worker thread, so that decisions
keep running and see the old set or the new one, never a mix. Every apply is durable (the
store commits before it returns) before the new version is reported through ``on_version``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.entitlements import (
    Member,
    SiteRules,
    Ticket,
    check_schedules,
    collect_records,
    parse_records,
    parse_rules,
)
from gateway.errors import BadMessage, InvalidSet, LinkError
from gateway.sync.envelopes import Envelope, open_envelope
from gateway.sync.topics import gw_topic, topic

log = logging.getLogger(__name__)

CHUNK_RECORDS = 2000
MAX_CHUNKS = 5000  # 10 million records: anything beyond is not a gym's member list
GAP_RETRY_S = 10.0
SNAPSHOT_PATIENCE_S = 30.0
WHYS = ("startup", "gap", "reconnect", "periodic", "installer")

Record = Member | Ticket
EventSink = Callable[[str, dict[str, Any]], Awaitable[None] | None]


class Publisher(Protocol):
    """What sync needs of the MQTT link: publish on a full topic, QoS 1."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish; raise :class:`LinkError` when not connected."""


class Store(Protocol):
    """The parts of :class:`gateway.store.EntitlementStore` that sync uses."""

    @property
    def version(self) -> int | None: ...

    @property
    def rules(self) -> SiteRules | None: ...

    def replace(
        self,
        version: int,
        rules: SiteRules,
        records: Any,
        checkins_upto: dict[str, int],
        at: datetime,
    ) -> list[str]: ...

    def apply_delta(
        self,
        version: int,
        base: int | None,
        upsert: Any,
        delete: Any,
        rules: SiteRules | None,
        checkins_upto: dict[str, int] | None,
        at: datetime,
    ) -> list[str]: ...

    def touch(self, at: datetime) -> None: ...


@dataclass(frozen=True)
class Delta:
    """A validated delta body."""

    version: int
    base: int
    upsert: list[Record]
    delete: list[str]
    rules: SiteRules | None
    checkins_upto: dict[str, int] | None


@dataclass
class PartialSnapshot:
    """The chunks of one snapshot version received so far, as their verified payloads.

    Bytes rather than parsed records: a million parsed records would not fit a small
    gateway's memory, and millions of live Python objects make every full garbage
    collection pause the event loop (and so the doors) for seconds.
    """

    version: int
    chunks: int
    payloads: dict[int, bytes] = field(default_factory=dict)
    rules: SiteRules | None = None
    checkins_upto: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def complete(self) -> bool:
        """All chunks are in, chunk 0 (with the rules) among them."""
        return len(self.payloads) == self.chunks and self.rules is not None

    def records(self) -> Iterator[Record]:
        """Every record in chunk order, validated one chunk at a time as it is consumed;
        raises :class:`InvalidSet` at the first invalid chunk."""
        assert self.rules is not None
        for i in range(self.chunks):
            raws = json.loads(self.payloads[i])["body"]["records"]  # verified on arrival
            records = _parse_chunk(raws, i)
            problems = check_schedules(records, self.rules)
            if problems:
                raise InvalidSet(problems)
            yield from records


def _int(body: Mapping[str, Any], key: str, *, optional: bool = False) -> int | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidSet([f"{key}: must be a non-negative integer"])
    return value


def parse_checkins_upto(raw: Any) -> dict[str, int] | None:
    """``checkins_upto`` as {gw: seq}; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in raw.items()
    ):
        raise InvalidSet(["checkins_upto: must map gateway ids to non-negative integers"])
    return dict(raw)


def parse_delta(body: Mapping[str, Any], current_rules: SiteRules | None) -> Delta:
    """Validate a delta body against ENTITLEMENTS.md; raises :class:`InvalidSet`."""
    version, base = _int(body, "version"), _int(body, "base")
    assert version is not None and base is not None
    if version != base + 1:
        raise InvalidSet(["version: must be base + 1"])
    upsert, delete = body.get("upsert", []), body.get("delete", [])
    if not isinstance(upsert, list):
        raise InvalidSet(["upsert: must be a list"])
    if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
        raise InvalidSet(["delete: must be a list of ids"])
    rules = parse_rules(body["rules"]) if body.get("rules") is not None else None
    effective = rules or current_rules
    if effective is None:
        raise InvalidSet(["rules: the gateway has no rules yet and the delta brings none"])
    records = parse_records(upsert, effective)
    return Delta(
        version, base, records, delete, rules, parse_checkins_upto(body.get("checkins_upto"))
    )


class EntitlementSync:
    """Keeps the store at the central system's version, through deltas and snapshots."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        site: str,
        gw: str,
        public_key: Ed25519PublicKey,
        on_event: EventSink,
        on_counted: Callable[[dict[str, int]], None] | None = None,
        on_time: Callable[[datetime], None] | None = None,
        on_version: Callable[[int], None] | None = None,
        sync_interval: float = 3600.0,
        max_buffered: int = 1000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.site, self.gw = site, gw
        self.public_key = public_key
        self.on_event = on_event
        self.on_counted = on_counted
        self.on_time = on_time
        self.on_version = on_version
        self.sync_interval = sync_interval
        self.max_buffered = max_buffered
        self.clock = clock
        self.buffered: dict[int, Delta] = {}  # by base
        self.partial: PartialSnapshot | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._want_snapshot = False
        self._gap_asked: tuple[int | None, float] | None = None
        self._last_time: datetime | None = None
        self._topics = {
            topic(site, "entitlements", "delta"): ("delta",),
            gw_topic(site, gw, "delta"): ("delta", "time"),
            gw_topic(site, gw, "snapshot"): ("snapshot",),
            topic(site, "time"): ("time",),
        }

    # --- asking the central system --------------------------------------------------------

    async def request(self, why: str, *, full: bool = False) -> None:
        """Publish ``sync`` ``{"have", "why"}``; ``full`` asks for a snapshot (have: null)."""
        self._want_snapshot = self._want_snapshot or full
        have = None if full else self.store.version
        payload = json.dumps({"have": have, "why": why}, separators=(",", ":")).encode()
        try:
            await self.publisher.publish(gw_topic(self.site, self.gw, "sync"), payload, qos=1)
        except LinkError as exc:  # asked again on the next connect
            log.info("sync (%s) not sent: %s", why, exc)

    async def resync(self) -> None:
        """Ask for a full snapshot (the ``resync`` command, or the installer)."""
        await self.request("installer", full=True)

    async def on_connect(self) -> None:
        """Call after every (re)connect: ``startup`` the first time, then ``reconnect``."""
        why = "reconnect" if self._started else "startup"
        self._started = True
        self._gap_asked = None
        await self.request(why, full=self._want_snapshot)

    async def run(self) -> None:
        """Send a ``periodic`` sync every ``sync_interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.sync_interval)
            await self.request("periodic")

    # --- inbound --------------------------------------------------------------------------

    def handles(self, name: str) -> bool:
        """True for the topics entitlement sync takes."""
        return name in self._topics

    async def handle(self, name: str, payload: bytes) -> bool:
        """Take one inbound message; False if the topic is not sync's. Never raises for bad
        input: it is reported as ``bad_message`` and nothing of it is applied."""
        types = self._topics.get(name)
        if types is None:
            return False
        async with self._lock:
            try:
                env = open_envelope(payload, public_key=self.public_key, site=self.site, topic=name)
                if env.type not in types:
                    raise BadMessage(f"a {env.type} envelope does not belong on this topic", name)
                await self._apply(env, payload)
            except BadMessage as exc:
                await self._bad(name, exc.reason)
            except InvalidSet as exc:
                await self._bad(name, "invalid set: " + "; ".join(exc.problems[:3]))
        return True

    async def _apply(self, env: Envelope, payload: bytes) -> None:
        if env.type == "delta":
            await self._take_delta(env.body)
        elif env.type == "snapshot":
            await self._take_chunk(env.body, payload)
        else:
            await self._take_time(env)

    async def _bad(self, name: str, reason: str) -> None:
        log.warning("entitlement sync: message on %s dropped: %s", name, reason[:300])
        await self._event("bad_message", {"topic": name, "reason": reason[:300]})

    async def _event(self, type_: str, detail: dict[str, Any]) -> None:
        result = self.on_event(type_, detail)
        if inspect.isawaitable(result):
            await result

    # --- deltas ---------------------------------------------------------------------------

    async def _take_delta(self, body: dict[str, Any]) -> None:
        # Validated in a worker thread: a big delta must not hold up the doors' decisions.
        delta = await asyncio.to_thread(parse_delta, body, self.store.rules)
        have = self.store.version
        if have is not None and delta.version <= have:
            log.debug("delta %d already applied (at %d)", delta.version, have)
            return
        if have is None or delta.base != have:
            self._buffer(delta)
            if not self._snapshot_coming():
                await self._ask_gap(have)
            return
        await self._apply_delta(delta)
        await self._drain_buffer()

    def _buffer(self, delta: Delta) -> None:
        """Keep a delta that came early; beyond the bound, the farthest ones are dropped
        (they come again with the sync answer)."""
        self.buffered[delta.base] = delta
        while len(self.buffered) > self.max_buffered:
            del self.buffered[max(self.buffered)]

    def _snapshot_coming(self) -> bool:
        """A snapshot is being gathered (recently): it will bring the store up to date."""
        part = self.partial
        return part is not None and time.monotonic() - part.started < SNAPSHOT_PATIENCE_S

    async def _ask_gap(self, have: int | None) -> None:
        """Ask ``sync`` (gap) once per missing version, again after GAP_RETRY_S."""
        now = time.monotonic()
        if self._gap_asked is not None:
            asked_at_version, asked_at = self._gap_asked
            if asked_at_version == have and now - asked_at < GAP_RETRY_S:
                return
        self._gap_asked = (have, now)
        await self.request("gap")

    async def _drain_buffer(self) -> None:
        """Apply buffered deltas that now follow on, in order; forget the stale ones."""
        while (have := self.store.version) is not None:
            for base in [b for b in self.buffered if b < have]:
                del self.buffered[base]
            delta = self.buffered.pop(have, None)
            if delta is None:
                return
            await self._apply_delta(delta)

    async def _apply_delta(self, d: Delta) -> None:
        rules = d.rules or self.store.rules
        if rules is not None and d.rules is None:
            problems = check_schedules(d.upsert, rules)  # rules may have changed meanwhile
            if problems:
                raise InvalidSet(problems)
        notes = await asyncio.to_thread(
            self.store.apply_delta, d.version, d.base, d.upsert, d.delete, d.rules,
            d.checkins_upto, self.clock(),
        )  # fmt: skip
        self._gap_asked = None
        await self._applied(d.version, d.checkins_upto, notes)

    async def _applied(
        self, version: int, checkins_upto: dict[str, int] | None, notes: list[str]
    ) -> None:
        """After a durable apply: counted charges, duplicate credentials, the new version."""
        log.info("entitlements: now at version %d", version)
        if checkins_upto and self.on_counted is not None:
            self.on_counted(checkins_upto)
        if notes:
            await self._event(
                "duplicate_credential",
                {"version": version, "count": len(notes), "notes": notes[:20]},
            )
        if self.on_version is not None:
            self.on_version(version)

    # --- snapshots ------------------------------------------------------------------------

    async def _take_chunk(self, body: dict[str, Any], payload: bytes) -> None:
        version, chunk, chunks = _int(body, "version"), _int(body, "chunk"), _int(body, "chunks")
        assert version is not None and chunk is not None and chunks is not None
        if not 1 <= chunks <= MAX_CHUNKS or chunk >= chunks:
            raise InvalidSet(["chunk/chunks: chunk must be below chunks, chunks 1..5000"])
        records = body.get("records", [])
        if not isinstance(records, list) or len(records) > CHUNK_RECORDS:
            raise InvalidSet(["records: must be a list of at most 2000 records"])
        have = self.store.version
        if have is not None and (version < have or (version == have and not self._want_snapshot)):
            return  # an old snapshot: nothing new in it
        part = self._partial_for(version, chunks)
        if part is None:
            return
        if chunk == 0:
            part.rules = parse_rules(body.get("rules"))
            part.checkins_upto = parse_checkins_upto(body.get("checkins_upto")) or {}
        part.payloads[chunk] = payload
        if part.complete:
            self.partial = None
            await self._replace(part)

    def _partial_for(self, version: int, chunks: int) -> PartialSnapshot | None:
        """The snapshot being gathered for ``version`` (a newer version starts over)."""
        part = self.partial
        if part is not None and part.version > version:
            return None
        if part is None or part.version < version or part.chunks != chunks:
            part = self.partial = PartialSnapshot(version, chunks)
        return part

    async def _replace(self, part: PartialSnapshot) -> None:
        """Validate and store the whole set in one ``store.replace`` in a worker thread.

        The records are validated as the store consumes them; an invalid one raises out of
        ``replace``, whose transaction then rolls back: nothing of an invalid set is applied.
        """
        assert part.rules is not None
        notes = await asyncio.to_thread(
            self.store.replace, part.version, part.rules, part.records(), part.checkins_upto,
            self.clock(),
        )  # fmt: skip
        self._want_snapshot = False
        self._gap_asked = None
        self.buffered = {b: d for b, d in self.buffered.items() if b >= part.version}
        await self._applied(part.version, part.checkins_upto, notes)
        await self._drain_buffer()

    # --- time -----------------------------------------------------------------------------

    async def _take_time(self, env: Envelope) -> None:
        """A newer ``time`` confirms a current set (store.touch) and may set clock trust."""
        body = env.body
        version = _int(body, "version")
        assert version is not None
        try:
            now = datetime.fromisoformat(body["now"])
            if now.utcoffset() is None:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise BadMessage("time: now is not an ISO 8601 time with offset") from None
        if self._last_time is not None and env.issued_at <= self._last_time:
            raise BadMessage("time: not newer than the last one (replayed?)")
        self._last_time = env.issued_at
        if self.on_time is not None:
            self.on_time(now)
        have = self.store.version
        if have is not None and have == version:
            await asyncio.to_thread(self.store.touch, self.clock())
        elif (have is None or version > have) and not self._snapshot_coming():
            await self._ask_gap(have)


def _parse_chunk(raws: list[Any], chunk: int) -> list[Record]:
    """Validate one chunk's records (schedules are checked once the rules are known)."""
    records, problems = collect_records(raws, f"chunk{chunk}.records")
    if problems:
        raise InvalidSet(problems)
    return records
