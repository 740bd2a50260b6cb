"""The installer's local history of decisions and events, kept across restarts.

The gateway's loop only drops each new item into a bounded queue (``offer``); a writer
thread of the web UI stores them in ``web-events.sqlite`` in batches and prunes by age
and size, so the history costs the doors nothing. Only what an installer needs is kept:
never a credential value (a check-in names the credential's kind only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_ROWS = 200_000
MAX_AGE = timedelta(days=180)
QUEUE_BOUND = 20_000
_DETAIL_CHARS = 2_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    what TEXT NOT NULL,
    door TEXT,
    member TEXT,
    display TEXT,
    decision TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_door ON events(door, id);
CREATE INDEX IF NOT EXISTS events_member ON events(member, id);
CREATE INDEX IF NOT EXISTS events_what ON events(what, id);
CREATE INDEX IF NOT EXISTS events_display ON events(display COLLATE NOCASE);
"""

# the fields of a check-in an installer sees; anything else (a future field that might
# carry a value) is left out rather than stored
_DECISION_FIELDS = (
    "door", "zone", "direction", "credential", "member", "ticket", "decision", "reason",
    "contract", "charged", "passed", "warnings", "offline", "entitlements_version",
    "display", "trace", "latency_ms",
)  # fmt: skip


@dataclass(frozen=True)
class Filter:
    """Which rows: by door, reason/event type and member (id, or the start of a name)."""

    door: str | None = None
    what: str | None = None
    member: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its arguments."""
        parts, args = ["1"], []  # type: tuple[list[str], list[Any]]
        if self.door:
            parts.append("door = ?")
            args.append(self.door)
        if self.what:
            parts.append("what = ?")
            args.append(self.what)
        if self.kind:
            parts.append("kind = ?")
            args.append(self.kind)
        if self.member:
            parts.append("(member = ? OR display LIKE ? ESCAPE '\\')")
            escaped = self.member.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args += [self.member, escaped + "%"]
        if self.since:
            parts.append("at >= ?")
            args.append(_utc(self.since))
        if self.until:
            parts.append("at < ?")
            args.append(_utc(self.until))
        return " AND ".join(parts), args


def _utc(at: datetime) -> str:
    try:
        return at.astimezone(UTC).isoformat(timespec="milliseconds")
    except OverflowError:  # a range end past 9999 or before year 1 in UTC (was a 500)
        edge = datetime.max if at.year > 1 else datetime.min
        return edge.replace(tzinfo=UTC).isoformat(timespec="milliseconds")


def row_of(
    item: Mapping[str, Any],
) -> tuple[str, str, str, str | None, str | None, str | None, str | None, str] | None:
    """One activity item as a stored row (at, kind, what, door, member, display, decision, body)."""
    kind = str(item.get("kind", ""))
    at = _at_of(item)
    if kind == "decision":
        body = {k: item[k] for k in _DECISION_FIELDS if k in item}
        member = item.get("member") or item.get("ticket")
        return (at, kind, str(item.get("reason", "")), _s(item.get("door")), _s(member),
                _s(item.get("display")), _s(item.get("decision")), _dumps(body))  # fmt: skip
    if kind == "event":
        detail = item.get("detail") if isinstance(item.get("detail"), Mapping) else {}
        body = {"type": item.get("type"), "detail": detail}
        return (at, kind, str(item.get("type", "")), _s(item.get("door")), None, None, None,
                _dumps(body))  # fmt: skip
    return None  # reader health shows on the dashboard; it is also journalled as an event


def _s(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def _at_of(item: Mapping[str, Any]) -> str:
    text = item.get("at")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(text)
            if at.tzinfo is not None:
                return _utc(at)
    return _utc(datetime.now(UTC))


def _dumps(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":"))
    if len(text) > _DETAIL_CHARS * 4:
        text = json.dumps({"truncated": text[:_DETAIL_CHARS]})
    return text


class EventLog:
    """The history: written by one thread, read by the web UI (any thread)."""

    def __init__(
        self, path: Path, *, max_rows: int = MAX_ROWS, max_age: timedelta = MAX_AGE
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_age = max_age
        self.dropped = 0
        self._queue: queue.Queue[Mapping[str, Any] | None] = queue.Queue(QUEUE_BOUND)
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._thread: threading.Thread | None = None
        self._read_lock = threading.Lock()
        conn = self._connect()
        with conn:
            conn.executescript(_SCHEMA)
        self._reader = self._connect()

    @classmethod
    def reading(cls, path: Path) -> EventLog:
        """The history opened for reading only (``accessgw why`` beside the running daemon)."""
        log = cls.__new__(cls)
        log.path = path
        log._read_lock = threading.Lock()
        log._reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return log

    def close(self) -> None:
        """Close the reading connection."""
        with self._read_lock:
            self._reader.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)
        return conn

    # --- the gateway's side: cheap and never blocking -------------------------------------

    def offer(self, item: Mapping[str, Any]) -> None:
        """Queue one activity item (called on the gateway loop; drops when the queue is full)."""
        try:
            self._queue.put_nowait(dict(item))
        except queue.Full:
            self.dropped += 1

    def on_rows(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """Be told of each batch of stored rows (called on the writer thread)."""
        self._listeners.append(callback)

    # --- the writer thread -------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._write_loop, name="web-eventlog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Store what is queued and stop the writer."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def _write_loop(self) -> None:
        conn = self._connect()
        written = 0
        try:
            while True:
                first = self._queue.get()
                batch = [first]
                with contextlib.suppress(queue.Empty):
                    while len(batch) < 500:
                        batch.append(self._queue.get(timeout=0.05))
                items = [b for b in batch if b is not None]
                try:
                    rows = self.store(conn, items)
                except sqlite3.Error:
                    log.exception("web history: %d rows could not be stored", len(items))
                    rows = []
                written += len(rows)
                if written >= 1000:
                    written = 0
                    self._prune(conn)
                for callback in list(self._listeners):
                    try:
                        callback(rows)
                    except Exception:  # a listener's failure must not stop the history
                        log.exception("web history listener failed")
                if None in batch:
                    return
        finally:
            conn.close()

    def store(
        self, conn: sqlite3.Connection, items: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Insert items; return them as rows (with ids)."""
        out = []
        with _transaction(conn):
            for item in items:
                row = row_of(item)
                if row is None:
                    continue
                cur = conn.execute(
                    "INSERT INTO events (at, kind, what, door, member, display, decision, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                out.append(_as_dict((cur.lastrowid, *row)))
        return out

    def _prune(self, conn: sqlite3.Connection) -> None:
        cutoff = _utc(datetime.now(UTC) - self.max_age)
        with _transaction(conn):
            conn.execute("DELETE FROM events WHERE at < ?", (cutoff,))
            conn.execute(
                "DELETE FROM events WHERE id <= "
                "(SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.max_rows,),
            )

    def prune_now(self) -> None:
        """Apply the age and size bounds (tests; the writer does it every 1,000 rows)."""
        conn = self._connect()
        try:
            self._prune(conn)
        finally:
            conn.close()

    # --- reading (web thread) ---------------------------------------------------------------

    def page(
        self, flt: Filter, *, before: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Rows matching ``flt``, newest first, older than id ``before``."""
        where, args = flt.where()
        if before is not None:
            where += " AND id < ?"
            args.append(before)
        sql = (
            "SELECT id, at, kind, what, door, member, display, decision, body FROM events "
            f"WHERE {where} ORDER BY id DESC LIMIT ?"
        )
        with self._read_lock:
            rows = self._reader.execute(sql, [*args, max(1, min(limit, 1000))]).fetchall()
        return [_as_dict(r) for r in rows]

    def export(self, flt: Filter, limit: int = 100_000) -> Iterator[dict[str, Any]]:
        """Rows matching ``flt``, oldest first (CSV export), at most ``limit``."""
        where, args = flt.where()
        last, sent = 0, 0
        while sent < limit:
            sql = (
                "SELECT id, at, kind, what, door, member, display, decision, body FROM events "
                f"WHERE {where} AND id > ? ORDER BY id LIMIT 1000"
            )
            with self._read_lock:
                rows = self._reader.execute(sql, [*args, last]).fetchall()
            if not rows:
                return
            for row in rows[: limit - sent]:
                yield _as_dict(row)
            sent += len(rows)
            last = rows[-1][0]

    def count(self) -> int:
        """How many rows are kept."""
        with self._read_lock:
            return int(self._reader.execute("SELECT count(*) FROM events").fetchone()[0])

    def members_named(self, prefix: str, limit: int = 20) -> list[tuple[str, str | None]]:
        """Members seen lately whose id or display name starts with ``prefix``."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (
            "SELECT member, max(display) FROM events WHERE member IS NOT NULL AND "
            "(display LIKE ? ESCAPE '\\' OR member LIKE ? ESCAPE '\\') "
            "GROUP BY member ORDER BY max(id) DESC LIMIT ?"
        )
        with self._read_lock:
            return [(str(m), d) for m, d in self._reader.execute(sql, (escaped, escaped, limit))]


def _as_dict(row: Sequence[Any]) -> dict[str, Any]:
    id_, at, kind, what, door, member, display, decision, body = row
    return {
        "id": id_,
        "at": at,
        "kind": kind,
        "what": what,
        "door": door,
        "member": member,
        "display": display,
        "decision": decision,
        "body": json.loads(body),
    }


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
