"""Prometheus metrics: how the doors, the link and the box are doing, for a scraper.

Served by a small HTTP server on a thread of its own (``[metrics] listen``/``port``, an
optional bearer token from ``token_file``), so a scrape never waits for the installer's
web UI and never runs on the event loop the doors decide on. Counters are bumped where
things happen (one line at each place); what only the gateway knows (journal backlog,
versions, link state) is sampled on the loop every few seconds by :class:`Sampler`.

Labels are bounded: doors, readers and boards come from the config; ``bad_message``
topics have gateway ids replaced by ``+`` and reasons are cut to their first words,
with at most :data:`MAX_BAD_MESSAGE_SERIES` series.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import resource
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from gateway.errors import AccessGwError

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # cpu, fds...; silent under systemd's ProcSubset=pid


def resident_memory_bytes(statm: str = "/proc/self/statm") -> float:
    """The process's resident memory, read from ``/proc/self/statm``.

    prometheus_client's process collector needs ``/proc/stat``, which the hardened unit
    hides (``ProcSubset=pid``); ``/proc/self`` stays readable there.
    """
    try:
        with open(statm, encoding="ascii") as fh:
            return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # the peak


MEMORY = Gauge(
    "accessgw_resident_memory_bytes", "Resident memory of the gateway process", registry=REGISTRY
)
MEMORY.set_function(resident_memory_bytes)

DECISIONS = Counter(
    "accessgw_decisions",
    "Decisions at the doors, by door, decision and reason",
    ["door", "decision", "reason"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "accessgw_decision_seconds",
    "Time to decide a presented credential (lookup and rules, no I/O)",
    ["door"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
TAP_TO_RELAY_SECONDS = Histogram(
    "accessgw_tap_to_relay_seconds",
    "From the reader seeing a credential to the lock relay released (grants only)",
    ["door"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
JOURNAL_COMMIT_SECONDS = Histogram(
    "accessgw_journal_commit_seconds",
    "How long a decision waited for its durable record (an fsync) before the lock moved: "
    "the disk's part of tap to relay (a worn SD card shows here first)",
    ["door"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
LOOP_LAG_SECONDS = Histogram(
    "accessgw_event_loop_lag_seconds",
    "How late the event loop ran a timer (all door work waits this long): every sample of "
    "the gateway's loop-lag probe",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
JOURNAL_BACKLOG = Gauge(
    "accessgw_journal_backlog", "Check-ins and events not yet acknowledged", registry=REGISTRY
)
JOURNAL_OLDEST_AGE = Gauge(
    "accessgw_journal_oldest_unacked_age_seconds",
    "Age of the oldest unacknowledged check-in or event (0: none)",
    registry=REGISTRY,
)
LINK_UP = Gauge("accessgw_mqtt_link_up", "1 while the broker link is up", registry=REGISTRY)
LINK_RECONNECTS = Counter(
    "accessgw_mqtt_reconnects", "Broker connections after the first", registry=REGISTRY
)
ENTITLEMENTS_VERSION = Gauge(
    "accessgw_entitlements_version", "Entitlement set version in use (-1: none)", registry=REGISTRY
)
ENTITLEMENTS_AGE = Gauge(
    "accessgw_entitlements_age_seconds",
    "Since the entitlement set was last confirmed current by the central system",
    registry=REGISTRY,
)
SYNC_IN_PROGRESS = Gauge(
    "accessgw_sync_in_progress", "1 while a snapshot is being received", registry=REGISTRY
)
READER_UP = Gauge("accessgw_reader_up", "1 while the reader works", ["reader"], registry=REGISTRY)
BOARD_UP = Gauge("accessgw_board_up", "1 while the board answers", ["board"], registry=REGISTRY)
DOOR_EVENTS = Counter(
    "accessgw_door_events",
    "Door, reader and board events (forced, held open, relay faults, ...)",
    ["type"],
    registry=REGISTRY,
)
PEER_CHECKINS = Counter(
    "accessgw_peer_checkins",
    "Check-ins from other gateways of the site, accepted or refused",
    ["result"],
    registry=REGISTRY,
)
BAD_MESSAGES = Counter(
    "accessgw_bad_messages",
    "Messages refused (bad_message), by topic and reason",
    ["topic", "reason"],
    registry=REGISTRY,
)

MAX_BAD_MESSAGE_SERIES = 100
_bad_series: set[tuple[str, str]] = set()
_SITE_PREFIX = re.compile(r"^acs/v\d+/[^/]+/")
_GW_IN_TOPIC = re.compile(r"^gw/[^/]+/")


# --- where things happen (one call each) ----------------------------------------------


def decision(
    checkin: dict[str, Any], decided_s: float, relay_s: float | None, durable_s: float
) -> None:
    """A final check-in of ours: count it and time it (deciding, its record's commit, and
    from the reader to the relay)."""
    door = str(checkin.get("door"))
    DECISIONS.labels(door, str(checkin.get("decision")), str(checkin.get("reason"))).inc()
    DECISION_SECONDS.labels(door).observe(decided_s)
    JOURNAL_COMMIT_SECONDS.labels(door).observe(durable_s)
    if relay_s is not None:
        TAP_TO_RELAY_SECONDS.labels(door).observe(relay_s)


def _topic_label(topic: str) -> str:
    """``acs/v1/<site>/gw/<gw>/checkin`` -> ``gw/+/checkin`` (one series per kind)."""
    name = _SITE_PREFIX.sub("", topic)
    return _GW_IN_TOPIC.sub("gw/+/", name)[:64]


def _reason_label(reason: str) -> str:
    short = re.split(r"[(:;]", reason, maxsplit=1)[0]
    return re.sub(r"(?<![\w-])\d+", "N", short).strip()[:60] or "unknown"  # UTF-8 stays


def event(type_: str, detail: dict[str, Any], count: int = 1) -> None:
    """A journalled event (``count`` of them): health gauges, door event counts, refused
    messages."""
    if type_ in ("reader_online", "reader_offline"):
        READER_UP.labels(str(detail.get("reader"))).set(type_ == "reader_online")
    elif type_ in ("board_online", "board_offline"):
        BOARD_UP.labels(str(detail.get("board"))).set(type_ == "board_online")
    if type_ == "bad_message":
        topic = _topic_label(str(detail.get("topic", "")))
        series = (topic, _reason_label(str(detail.get("reason", ""))))
        if series not in _bad_series and len(_bad_series) >= MAX_BAD_MESSAGE_SERIES:
            series = (topic, "other")
        _bad_series.add(series)
        BAD_MESSAGES.labels(*series).inc(count)
        if topic == "gw/+/checkin":
            PEER_CHECKINS.labels("refused").inc(count)
    elif type_ not in ("started", "stopping"):
        DOOR_EVENTS.labels(type_).inc(count)


def peer_checkin_accepted() -> None:
    """Another gateway's check-in was verified and applied."""
    PEER_CHECKINS.labels("accepted").inc()


# --- what is sampled on the loop --------------------------------------------------------


class JournalView(Protocol):
    """What the sampler reads from the journal."""

    async def pending_count(self) -> int: ...

    async def unacked(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]: ...


class StoreView(Protocol):
    """What the sampler reads from the entitlement store."""

    @property
    def version(self) -> int | None: ...

    @property
    def updated_at(self) -> datetime | None: ...


class LagProbe(Protocol):
    """The gateway's loop-lag probe (gateway.loop_lag): its samples in milliseconds."""

    @property
    def samples(self) -> int: ...

    @property
    def recent(self) -> Sequence[float]: ...


class Sampler:
    """Every ``every`` seconds on the loop: loop lag, journal, entitlements, link."""

    def __init__(
        self,
        journal: JournalView,
        store: StoreView,
        lag: LagProbe,
        *,
        link_up: Callable[[], bool],
        connections: Callable[[], int],
        snapshot_coming: Callable[[], bool],
        every: float = 5.0,
    ) -> None:
        self.journal = journal
        self.store = store
        self.lag = lag
        self._lag_seen = lag.samples
        self.link_up = link_up
        self.connections = connections
        self.snapshot_coming = snapshot_coming
        self.every = every
        self._connections = 0

    async def run(self) -> None:
        """Sample every ``every`` seconds until cancelled."""
        while True:
            await self.sample()
            await asyncio.sleep(self.every)

    async def sample(self) -> None:
        """Read the loop-lag probe, journal, store and link into the metrics once."""
        new = min(self.lag.samples - self._lag_seen, len(self.lag.recent))
        self._lag_seen = self.lag.samples
        recent = self.lag.recent
        for lag_ms in itertools.islice(recent, len(recent) - new, None):
            LOOP_LAG_SECONDS.observe(lag_ms / 1000)
        JOURNAL_BACKLOG.set(await self.journal.pending_count())
        oldest = await self.journal.unacked(0, 1)
        JOURNAL_OLDEST_AGE.set(_age(oldest[0]["message"].get("at")) if oldest else 0.0)
        version = self.store.version
        ENTITLEMENTS_VERSION.set(-1 if version is None else version)
        updated = self.store.updated_at
        ENTITLEMENTS_AGE.set(_age(updated.isoformat()) if updated is not None else 0.0)
        LINK_UP.set(self.link_up())
        SYNC_IN_PROGRESS.set(self.snapshot_coming())
        connections = self.connections()
        reconnects = max(0, connections - 1) - max(0, self._connections - 1)
        if reconnects > 0:
            LINK_RECONNECTS.inc(reconnects)
        self._connections = connections


def _age(iso: Any) -> float:
    try:
        at = datetime.fromisoformat(str(iso))
    except ValueError:
        return 0.0
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - at).total_seconds())


# --- the endpoint -------------------------------------------------------------------


class MetricsServer:
    """``GET /metrics`` on its own address and thread; a bearer token when configured."""

    def __init__(self, listen: str, port: int, token_file: Path | None = None) -> None:
        self.token = _read_token(token_file) if token_file is not None else None
        token = self.token

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._answer(404, b"not found: try /metrics\n", "text/plain")
                    return
                given = self.headers.get("Authorization", "")
                if token is not None and not hmac.compare_digest(
                    given.encode(), f"Bearer {token}".encode()
                ):
                    self._answer(401, b"bearer token required\n", "text/plain")
                    return
                self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

            def _answer(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if code == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="accessgw metrics"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((listen, port), Handler)
        except OSError as exc:
            raise AccessGwError(
                f"metrics cannot listen on {listen}:{port}: {exc.strerror}. "
                "Choose another [metrics] port, or stop what uses it."
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        log.info("metrics: serving http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AccessGwError(
            f"metrics token file {path} cannot be read: {exc.strerror}. "
            "Create it (one line, readable by the service user) or remove token_file."
        ) from exc
    if len(token) < 16:
        raise AccessGwError(f"metrics token in {path} is too short: use 16 or more characters")
    return token
