"""Entitlement sync (PROTOCOL.md, Entitlement sync and Time): deltas, snapshots, ``time``.

Inbound envelopes are opened and verified first (:mod:`gateway.sync.envelopes`); a bad
envelope or an invalid set is dropped whole, nothing of it applied, and reported as a
``bad_message`` event with the topic and the reason. Deltas apply in version order: one whose
``base`` is not the store's version waits in a bounded buffer while the gateway asks ``sync``
with ``why: gap``. Snapshot chunks go, unopened, to the snapshot builder process
(:mod:`gateway.sync.snapshots`), which verifies them and stages the set in a file of its own;
once all k chunks of one version are in, the store adopts that file, so that decisions keep
running and see the old set or the new one, never a mix. Every apply is durable (the store
commits before it returns) before the new version is reported through ``on_version``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.clock import load_newest_time, store_newest_time
from gateway.entitlements import SiteRules
from gateway.errors import BadMessage, InvalidSet, LinkError, StoreError
from gateway.logs import Progress
from gateway.store import Staging
from gateway.sync.bodies import count
from gateway.sync.deltas import DeltaOpener, PreparedDelta
from gateway.sync.envelopes import Envelope, carried
from gateway.sync.snapshots import SnapshotBuilder, SnapshotBuilderFailed
from gateway.sync.topics import gw_topic, topic

log = logging.getLogger(__name__)

GAP_RETRY_S = 10.0
SNAPSHOT_PATIENCE_S = 30.0
WHYS = ("startup", "gap", "reconnect", "periodic", "installer")

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

    @property
    def key(self) -> bytes: ...

    def staging(self) -> Staging: ...

    def adopt(self, staged: str) -> None: ...

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


def refused(name: str, reason: str) -> dict[str, Any]:
    """Log a message on sync's topics that is dropped, and give its ``bad_message`` detail:
    the same whether the gateway refused it or the wire process did (junk that does not
    open, :func:`gateway.sync.envelopes.open_carried`, is refused there before it crosses)."""
    log.warning("entitlement sync: message on %s dropped: %s", name, reason[:300])
    return {"topic": name, "reason": reason[:300]}


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
        on_time: Callable[[datetime], bool] | None = None,
        on_version: Callable[[int], None] | None = None,
        sync_interval: float = 3600.0,
        max_buffered: int = 1000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        newest_time: Path | None = None,
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
        self.buffered: dict[int, PreparedDelta] = {}  # by base
        self.deltas = DeltaOpener(public_key=public_key, site=site)
        self.builder = SnapshotBuilder(
            public_key=public_key, site=site, topic=gw_topic(site, gw, "snapshot")
        )
        self._snapshot_progress: float | None = None  # when the last chunk was staged
        self._progress: tuple[int, Progress, int] | None = None  # version, its log, records
        self._chunks: tuple[int, int | None] = (0, None)  # chunks staged, of how many
        self.last_snapshot: dict[str, Any] | None = None  # the builder's figures, last one
        self._giving_up: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._want_snapshot = False
        self._gap_asked: tuple[int | None, float] | None = None
        self._newest_time_path = newest_time
        self._last_time = load_newest_time(newest_time) if newest_time is not None else None
        self.ignored_versions = 0  # duplicate, late or rolled-back deltas let pass
        self._topics = {
            name: types
            for name in (
                topic(site, "entitlements", "delta"),
                gw_topic(site, gw, "delta"),
                gw_topic(site, gw, "snapshot"),
                topic(site, "time"),
            )
            if (types := carried(name, site, gw)) is not None
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
                if name == self.builder.topic:  # opened by the builder, off the event loop
                    await self._take_chunk(name, payload)
                    return True
                opened = await self.deltas.open(
                    payload, topic=name, types=types, have=self.store.version,
                    hmac_key=self.store.key,
                )  # fmt: skip
                if isinstance(opened, PreparedDelta):
                    await self._take_delta(opened)
                else:
                    await self._take_time(opened)
            except BadMessage as exc:
                await self._bad(name, exc.reason)
            except InvalidSet as exc:
                await self._bad(name, "invalid set: " + "; ".join(exc.problems[:3]))
        return True

    async def _bad(self, name: str, reason: str) -> None:
        await self._event("bad_message", refused(name, reason))

    async def _event(self, type_: str, detail: dict[str, Any]) -> None:
        result = self.on_event(type_, detail)
        if inspect.isawaitable(result):
            await result

    # --- deltas ---------------------------------------------------------------------------

    async def _take_delta(self, delta: PreparedDelta) -> None:
        """Apply a delta that follows on; keep one that comes early (even before the first
        snapshot); let a duplicate, late or rolled-back one pass silently (Clarifications,
        Versions). The schedules its records name are checked when it is applied, against
        the rules then."""
        version = delta.version
        have = self.store.version
        if have is not None and version <= have:
            self.ignored_versions += 1
            log.debug("delta %d ignored: already at %d", version, have)
            return
        if have is None or delta.base != have:
            self._buffer(delta)
            if not self._snapshot_coming():
                await self._ask_gap(have)
            return
        await self._apply_delta(delta)
        await self._drain_buffer()

    def _buffer(self, delta: PreparedDelta) -> None:
        """Keep a delta that came early; beyond the bound, the farthest ones are dropped
        (they come again with the sync answer)."""
        self.buffered[delta.base] = delta
        while len(self.buffered) > self.max_buffered:
            del self.buffered[max(self.buffered)]

    def snapshot_in_progress(self) -> bool:
        """Whether a snapshot is arriving now (for metrics and status)."""
        return self._snapshot_coming()

    def progress(self) -> dict[str, Any] | None:
        """A snapshot on its way, for the installer's dashboard: its version, the chunks in
        of all, the records staged and the seconds since the last chunk; None when none is
        arriving."""
        last, noted = self._snapshot_progress, self._progress
        if last is None or noted is None:
            return None
        staged, chunks = self._chunks
        return {
            "snapshot": "arriving",
            "version": noted[0],
            "chunks": f"{staged} of {chunks if chunks is not None else '?'}",
            "records_staged": noted[2],
            "last_chunk_s_ago": round(time.monotonic() - last, 1),
        }

    def _snapshot_coming(self) -> bool:
        """A snapshot is being gathered, and its last chunk came recently: it will bring the
        store up to date (a big one takes minutes: progress counts, not its start)."""
        last = self._snapshot_progress
        return last is not None and time.monotonic() - last < SNAPSHOT_PATIENCE_S

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

    async def _apply_delta(self, d: PreparedDelta) -> None:
        d.rules_to_apply(self.store.rules)  # the rules may have changed since it came
        notes = await asyncio.to_thread(
            self.store.apply_delta, d.version, d.base, d.upsert, d.delete, d.rules,
            d.checkins_upto, self.clock(),
        )  # fmt: skip
        self._gap_asked = None
        await self._applied(d.version, d.checkins_upto, notes)

    async def _applied(
        self,
        version: int,
        checkins_upto: dict[str, int] | None,
        notes: list[str],
        noted: int | None = None,
    ) -> None:
        """After a durable apply: counted charges, duplicate credentials, the new version.

        ``noted``: how many credentials were given twice, when ``notes`` holds only some.
        """
        log.info("entitlements: now at version %d", version)
        if checkins_upto and self.on_counted is not None:
            self.on_counted(checkins_upto)
        if notes:
            await self._event(
                "duplicate_credential",
                {"version": version, "count": noted or len(notes), "notes": notes[:20]},
            )
        if self.on_version is not None:
            self.on_version(version)

    # --- snapshots ------------------------------------------------------------------------

    async def _take_chunk(self, name: str, payload: bytes) -> None:
        """Hand a chunk to the builder; once it says a version is complete, adopt it.

        The store's version goes with every chunk, and the chunk that completes a version is
        adopted under the same lock, so no delta can take the store past it in between.
        """
        try:
            staging = self.store.staging()
            answer = await self.builder.take(
                payload,
                have=self.store.version,
                want=self._want_snapshot,
                at=self.clock(),
                staging=staging,
            )
        except (SnapshotBuilderFailed, StoreError) as exc:
            log.error("entitlement sync: snapshot not applied: %s", exc)
            self._snapshot_progress = None
            self._want_snapshot = True  # asked for again with the next sync
            return
        status = answer.get("status")
        if status == "bad":
            self._snapshot_progress = None
            raise BadMessage(str(answer.get("reason")), name)
        if status == "failed":
            log.error("entitlement sync: snapshot not applied: %s", answer.get("reason"))
            self._snapshot_progress = None
            self._want_snapshot = True
        elif status in ("staged", "duplicate"):
            self._snapshot_progress = time.monotonic()
            self._note_progress(answer)
            asyncio.get_running_loop().call_later(SNAPSHOT_PATIENCE_S, self._check_patience)
        elif status == "complete":
            await self._adopt(answer)

    def _note_progress(self, answer: dict[str, Any]) -> None:
        """Every few seconds, how far a snapshot has come (a big one takes a while)."""
        version = int(answer.get("version", 0))
        if self._progress is None or self._progress[0] != version:
            self._progress = (version, Progress(f"entitlements: snapshot {version}"), 0)
            log.info(
                "entitlements: snapshot %d arriving (%s chunks)", version, answer.get("chunks")
            )
        _, progress, records = self._progress
        records += int(answer.get("records", 0)) if answer.get("status") == "staged" else 0
        self._progress = (version, progress, records)
        chunks = answer.get("chunks")
        self._chunks = (int(answer.get("staged", 0)), chunks if isinstance(chunks, int) else None)
        progress.note(self._chunks[0], chunks, records)

    def _check_patience(self) -> None:
        """A snapshot whose chunks stopped coming is given up (its file with it)."""
        loop = asyncio.get_running_loop()
        if self._lock.locked():  # a chunk is being taken right now: look again later
            loop.call_later(SNAPSHOT_PATIENCE_S, self._check_patience)
        elif self.builder.running and not self._snapshot_coming():
            log.warning("entitlement sync: a snapshot stopped arriving: given up")
            self._snapshot_progress = None
            self._giving_up = loop.create_task(self.builder.close())  # kept: tasks are weak

    async def _adopt(self, answer: dict[str, Any]) -> None:
        """Switch the store to the staged set the builder finished (durable on return)."""
        version = int(answer["version"])
        log.info(
            "entitlements: snapshot %d staged (%d records, builder peak %d MiB): adopting",
            version,
            answer.get("count", 0),
            int(answer.get("rss_kib", 0)) // 1024,
        )
        await self.builder.close()
        self._snapshot_progress = None
        self.last_snapshot = {k: answer.get(k) for k in ("version", "count", "rss_kib")}
        try:
            await asyncio.to_thread(self.store.adopt, str(answer["path"]))
        except StoreError as exc:
            log.error("entitlement sync: snapshot %d not applied: %s", version, exc)
            self._want_snapshot = True
            return
        self._want_snapshot = False
        self._gap_asked = None
        self.buffered = {b: d for b, d in self.buffered.items() if b >= version}
        upto = answer.get("checkins_upto") or {}
        notes = [str(n) for n in answer.get("notes", [])]
        await self._applied(version, upto, notes, int(answer.get("notes_count", len(notes))))
        await self._drain_buffer()

    async def close(self) -> None:
        """Stop the snapshot builder (a snapshot being gathered is dropped) and the delta
        worker process."""
        self.deltas.close()
        await self.builder.close()

    # --- time -----------------------------------------------------------------------------

    async def _take_time(self, env: Envelope) -> None:
        """A newer ``time`` may confirm a current set (store.touch) and the clock.

        One not newer than the newest used (kept across restarts) is ignored silently. The
        rest counts only if ``on_time`` says so: its ``now`` agrees with a trusted clock, or
        the clock is not trusted (Clarifications, Time). So an old signed ``time`` replayed
        after a restart can never un-stale a set."""
        body = env.body
        version = count(body, "version")
        try:
            now = datetime.fromisoformat(body["now"])
            if now.utcoffset() is None:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise BadMessage("time: now is not an ISO 8601 time with offset") from None
        if self._last_time is not None and env.issued_at <= self._last_time:
            return  # a copy, or overtaken by a newer one on the other topic: nothing new
        self._last_time = env.issued_at
        if self._newest_time_path is not None:
            await asyncio.to_thread(store_newest_time, self._newest_time_path, env.issued_at)
        if self.on_time is not None and not self.on_time(now):
            return  # it disagrees with a clock we trust: it confirms nothing
        have = self.store.version
        if have is not None and have == version:
            await asyncio.to_thread(self.store.touch, self.clock())
        elif (have is None or version > have) and not self._snapshot_coming():
            await self._ask_gap(have)
