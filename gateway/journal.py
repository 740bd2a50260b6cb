"""The journal: every decision and event, durable before any lock moves (PROTOCOL.md).

SQLite in WAL mode with ``synchronous=FULL``, driven by one dedicated thread holding one
``sqlite3`` connection, so the event loop never waits on fsync. (aiosqlite has the same
shape, one thread per connection, but pays a thread hop per statement: a whole
"read the counter, insert, bump the counter, commit" transaction here is one hop: a
durable ``record_decision`` took 0.40 ms at the median against 0.52 ms with aiosqlite on
the development machine, and cancellation can be handled where the write happens.)

``seq`` is assigned inside the transaction that writes the row, from a high-water mark
kept in the ``meta`` table and bumped in that same transaction. A process that dies
before the commit leaves neither the row nor the bump, so the next seq is the same
number, never reported to anyone: no gap, no reuse. Pruning acknowledged rows leaves the
high-water mark alone, so the counter never goes back, across restarts and power cuts.

What the outbox reads (:meth:`Journal.unacked`) is read on a thread and connection of its
own: in WAL mode a reader sees the last commit and never waits for a writer. On the one
writing thread, a backlog's read (500 records) queued behind a commit's fsync, and a tap's
record behind that read; on a disk that takes a few hundred milliseconds for an fsync in
some minutes (an SD card, this project's CI disk) the drain stopped with every one.

A record is kept until the central system acknowledges it (``ack upto``), then pruned;
a record that is not final yet is never pruned, nor published; the final ones after it
are published meanwhile (the central system orders by ``seq``), and it follows as soon as
it is final. A decision that was never finalised (the process died between journalling
it and seeing the passage) is finalised at open: at a door whose sensor sees passages as
``passed: false, charged: 0`` (nobody saw one, so nothing is charged); at a door without
one, where a grant counts as walked through, as passed with the decision's charge. One
whose caller was cancelled while it was being written (no lock moved for it) is finalised
as not passed at once.

The journal has a bound (``[journal] max_pending``, records not yet acknowledged): it never
drops a record to stay under it. At :data:`FILLING_AT` of the bound ``on_filling`` is told
once (the gateway records ``journal_filling`` and shows it in the status), and again when
the central system's acknowledgements bring it back under :data:`DRAINED_AT`. At the bound
new decisions are refused (``JournalTrouble`` kind ``full``: no lock moves for a decision
that cannot be kept, as with a full disk); events are still kept, and so is everything
already journalled, until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import JournalError
from gateway.uuid7 import uuid7

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('checkin', 'event')),
    final INTEGER NOT NULL,
    body TEXT NOT NULL,
    passage_assumed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('acked_upto', 0);
COMMIT;
"""

_DAMAGED = (
    "journal {path} is damaged ({exc}): stop the gateway, keep a copy of the file for the "
    "vendor, then delete it; check-ins in it that the central system has not acknowledged "
    "are lost, and the new journal starts again at seq 1 (tell the central system)"
)


@dataclass(frozen=True)
class RecordSigner:
    """Signs a final record as it will be published (gateway.identity.signed_bytes).

    A final record is signed once, on the journal's thread, when it becomes final: a day's
    backlog then drains without a signature each (Ed25519 and canonical JSON, about 70 us a
    message, more than publishing it). ``key_id`` (the public key) says which key signed the
    stored texts: a journal opened with another key forgets them, and the link signs those
    records when it publishes them, as it signs anything without a stored signature.
    """

    key_id: str
    sign: Callable[[dict[str, Any]], bytes]


@dataclass(slots=True)
class JournalTrouble:
    """Why the journal cannot write now (the status shows it; an event tells of it after).

    ``kind``: ``disk_full``, ``read_only``, ``io_error``, ``locked`` or ``error``; ``full``
    when the journal is at its bound (``[journal] max_pending``).
    ``refused``: decisions refused meanwhile (nothing can be journalled, so no lock moves).
    """

    kind: str
    reason: str
    since: datetime
    refused: int = 0

    def as_status(self) -> dict[str, Any]:
        """The journal's part of the status while it is in trouble."""
        return {
            "state": self.kind,
            "reason": self.reason,
            "since": self.since.isoformat(timespec="seconds"),
            "decisions_refused": self.refused,
        }


_WRITES = frozenset({"_insert", "_finalise", "_ack"})

DEFAULT_MAX_PENDING = 250_000  # ~3 days of a decision every second; about 100 MB on disk
FILLING_AT = 0.8  # share of the bound that raises the warning
DRAINED_AT = 0.6  # ...and the share under which it is cleared (no flapping at the edge)


@dataclass(frozen=True, slots=True)
class Filling:
    """The journal's fill level against its bound, when the warning is raised or cleared."""

    raised: bool
    pending: int
    max_pending: int

    def as_detail(self) -> dict[str, Any]:
        """The ``journal_filling`` / ``journal_drained`` event's detail."""
        return {
            "pending": self.pending,
            "max_pending": self.max_pending,
            "percent": round(100 * self.pending / self.max_pending, 1),
        }


@dataclass(frozen=True, slots=True)
class Entry:
    """A journalled record: its sequence number and id."""

    seq: int
    id: str


class Journal:
    """Decisions and events in ``seq`` order until the central system acknowledges them."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        gw: str,
        executor: ThreadPoolExecutor,
        max_pending: int = DEFAULT_MAX_PENDING,
        signer: RecordSigner | None = None,
        *,
        reader: sqlite3.Connection,
        read_executor: ThreadPoolExecutor,
    ) -> None:
        self._conn = conn
        # unacked()'s connection and thread (see the module's docstring)
        self._reader, self._read_executor = reader, read_executor
        self._signer = signer
        self._path = path
        self.gw = gw
        self._executor = executor
        self._last_seq = _meta(conn, "last_seq")
        self._acked_upto = _meta(conn, "acked_upto")
        self._closed = False
        # Seqs that unacked() passed over while open, and those of them final since
        # (returned by the next unacked() whatever its after_seq). Under _late_lock: the
        # reading thread holds it from its SELECT to its last update, so a decision
        # finalised meanwhile is either seen final by that SELECT or found passed over by
        # _finalise, which looks after its commit (never neither: it would not go out).
        self._late_lock = threading.Lock()
        self._passed_over: set[int] = set()
        self._late: list[int] = []
        self.trouble: JournalTrouble | None = None  # set while writes fail (disk full...)
        self.on_trouble: Callable[[JournalTrouble], None] | None = None
        self.on_recovered: Callable[[JournalTrouble], None] | None = None
        self.max_pending = max_pending
        # records not yet acknowledged: kept by the journal thread (insert adds, ack takes);
        # counted by open() on that thread (a full journal takes a while to count)
        self._pending = 0
        self.filling = False  # the 80 % warning is raised
        self.on_filling: Callable[[Filling], None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path | str,
        gw: str,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        signer: RecordSigner | None = None,
    ) -> Journal:
        """Open (or create) the journal; finalise decisions a crash left open.

        With ``signer``, final records are stored signed as well (:class:`RecordSigner`).
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        reading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-read")
        loop = asyncio.get_running_loop()
        key_id = signer.key_id if signer is not None else None
        try:
            conn = await loop.run_in_executor(executor, _open, str(path), key_id)
            try:
                reader = await loop.run_in_executor(reading, _open_reader, str(path))
            except BaseException:
                await loop.run_in_executor(executor, conn.close)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            reading.shutdown(wait=False)
            raise
        journal = cls(conn, str(path), gw, executor, max_pending, signer,
                      reader=reader, read_executor=reading)  # fmt: skip
        journal._pending = await journal._run(journal._count)
        journal._check_fill()  # a journal reopened above the mark says so at once
        return journal

    async def _run(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_cancel: Callable[[Future[T]], None] | None = None,
        reading: bool = False,
    ) -> T:
        """Run ``fn`` on the journal's thread (with ``reading``, on its reading thread);
        explain database errors to the installer.

        When the caller is cancelled, the thread still finishes ``fn`` (a commit cannot be
        taken back); ``on_cancel`` then gets its future to tidy up.
        """
        if self._closed:
            raise JournalError(f"journal {self._path} is closed (the gateway is stopping)")
        future = (self._read_executor if reading else self._executor).submit(fn, *args)
        write = getattr(fn, "__name__", "") in _WRITES
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if on_cancel is not None:
                future.add_done_callback(on_cancel)
            raise
        except sqlite3.OperationalError as exc:
            explained = _explain(exc, self._path)
            if write:
                self._write_failed(_trouble_kind(exc), explained)
            raise JournalError(explained) from exc
        except sqlite3.DatabaseError as exc:
            raise JournalError(_DAMAGED.format(path=self._path, exc=exc)) from exc
        if write:
            self._check_fill()
            if self.trouble is not None and not self._full_now():
                self._write_worked()
        return result

    def _write_failed(self, kind: str, reason: str) -> None:
        if self.trouble is not None and self.trouble.kind == kind:
            return
        self.trouble = JournalTrouble(kind, reason, datetime.now(UTC))
        log.error("%s: decisions are refused until the journal can write again", reason)
        if self.on_trouble is not None:
            self.on_trouble(self.trouble)

    @property
    def pending(self) -> int:
        """Records not yet acknowledged (final or not), as the journal counts them."""
        return self._pending

    def _full_now(self) -> bool:
        """At the bound (the trouble ``full`` stays until acknowledgements free room)."""
        return self.trouble is not None and self.trouble.kind == "full" and self.at_bound()

    def at_bound(self) -> bool:
        """Whether the journal holds ``max_pending`` records: new decisions are refused."""
        return self._pending >= self.max_pending

    def _check_fill(self) -> None:
        """Raise the 80 % warning once on the way up; clear it once drained (60 %)."""
        share = self._pending / self.max_pending
        if not self.filling and share >= FILLING_AT:
            self.filling = True
        elif self.filling and share < DRAINED_AT:
            self.filling = False
        else:
            return
        log.debug("journal at %d of %d records (filling: %s)", self._pending, self.max_pending,
                  self.filling)  # fmt: skip
        if self.on_filling is not None:
            self.on_filling(Filling(self.filling, self._pending, self.max_pending))

    def _write_worked(self) -> None:
        trouble, self.trouble = self.trouble, None
        if trouble is None:
            return
        log.warning("journal %s writes again (it could not since %s)", self._path, trouble.since)
        if self.on_recovered is not None:
            self.on_recovered(trouble)

    # --- writing ------------------------------------------------------------------------

    async def record_decision(
        self, checkin: dict[str, Any], *, passage_assumed: bool = False
    ) -> Entry:
        """Journal a decision durably (fsync) before the caller energises a lock.

        Assigns ``id`` (UUIDv7), ``seq`` and ``gw``; the record is not final, and is not
        published, until :meth:`finalise`. If the caller is cancelled while the record is
        being written, it is finalised as not passed at once. ``passage_assumed``: the door
        has no passage sensor, so if the process dies before :meth:`finalise`, the next
        open finalises the grant as passed (with the charge in ``checkin``).
        """
        body = _encodable(checkin)
        if self.at_bound():  # nothing is dropped to make room: the new decision is refused
            self._write_failed(
                "full",
                f"the journal holds {self._pending} records the central system has not "
                f"acknowledged, its bound ([journal] max_pending = {self.max_pending})",
            )
            assert self.trouble is not None
            self.trouble.refused += 1
            raise JournalError(self.trouble.reason)
        try:
            [entry] = await self._run(
                self._insert, [("checkin", body, False)], passage_assumed, on_cancel=self._abandon
            )
        except JournalError:
            if self.trouble is not None:
                self.trouble.refused += 1
            raise
        return entry

    async def record_event(
        self, type: str, *, door: str | None, detail: dict[str, Any], at: datetime
    ) -> Entry:
        """Journal an event (final at once); events share the check-ins' ``seq``."""
        event = {
            "at": at.isoformat(timespec="milliseconds"),
            "door": door,
            "type": type,
            "detail": detail,
        }
        [entry] = await self._run(self._insert, [("event", _encodable(event), True)])
        return entry

    async def record_many(
        self, checkins: list[dict[str, Any]], *, final: bool = True
    ) -> list[Entry]:
        """Journal several check-ins in one transaction (benchmarks, tests, imports)."""
        items = [("checkin", _encodable(c), final) for c in checkins]
        entries = await self._run(self._insert, items)
        return entries

    def _insert(
        self, items: list[tuple[str, dict[str, Any], bool]], passage_assumed: bool = False
    ) -> list[Entry]:
        """One transaction: the rows and the bumped high-water mark commit together."""
        conn = self._conn
        with _transaction(conn):
            last = _meta(conn, "last_seq")
            entries = []
            for kind, body, final in items:
                last += 1
                record_id = str(uuid7())
                message = {"id": record_id, "seq": last, "gw": self.gw, **body}
                conn.execute(
                    "INSERT INTO records (seq, id, kind, final, body, passage_assumed, signed) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (last, record_id, kind, int(final), _dumps(message), int(passage_assumed),
                     self._signed(message) if final else None),
                )  # fmt: skip
                entries.append(Entry(last, record_id))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
        self._last_seq = last  # only this thread writes it, once committed
        self._pending += len(entries)
        return entries

    def _signed(self, message: dict[str, Any]) -> str | None:
        """The message as published, signed (None without a signer, or when it cannot be
        signed here: the link then signs it, or says why not, when it publishes it)."""
        if self._signer is None:
            return None
        try:
            return self._signer.sign(message).decode()
        except ValueError as exc:
            log.warning("seq %s not signed in the journal: %s", message.get("seq"), exc)
            return None

    def _abandon(self, future: Future[list[Entry]]) -> None:
        """A decision written for a cancelled caller: no lock moved, finalise it now."""
        if future.cancelled() or future.exception() is not None:
            return  # nothing was written
        seq = future.result()[0].seq
        log.warning("decision seq %d was abandoned by its caller: finalised as not passed", seq)
        try:
            self._executor.submit(self._finalise, seq, False, 0)
        except RuntimeError:
            pass  # the journal is closing: it is finalised at the next open instead

    async def finalise(self, seq: int, *, passed: bool, charged: int) -> dict[str, Any]:
        """Set the final state of a decision (passage seen or not, credits charged).

        Returns the final check-in, exactly the PROTOCOL.md message. A record already final
        is returned unchanged: it may have been published, and a message never changes.
        """
        return await self._run(self._finalise, seq, passed, charged)

    def _finalise(self, seq: int, passed: bool, charged: int) -> dict[str, Any]:
        with _transaction(self._conn):
            row = self._conn.execute(
                "SELECT kind, final, body FROM records WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None or row[0] != "checkin":
                what = "an event" if row else "not in the journal (acknowledged already?)"
                raise JournalError(f"cannot finalise seq {seq}: it is {what}; this is a bug")
            message: dict[str, Any] = json.loads(row[2])
            if row[1]:
                log.warning("seq %d is final already: kept as it was", seq)
                return message
            message.update(passed=passed, charged=charged)
            self._conn.execute(
                "UPDATE records SET final = 1, body = ?, signed = ? WHERE seq = ?",
                (_dumps(message), self._signed(message), seq),
            )
        with self._late_lock:
            if seq in self._passed_over:  # later records went out already: this one follows
                self._passed_over.discard(seq)
                self._late.append(seq)
        return message

    # --- reading and acknowledging ------------------------------------------------------

    async def unacked(
        self, after_seq: int = 0, limit: int = 500, *, raw: bool = False
    ) -> list[dict[str, Any]]:
        """Final, unacknowledged records after ``after_seq`` in seq order, up to ``limit``.

        Each is ``{"kind": "checkin" | "event", "seq": n, "message": {...}}``, or with
        ``raw`` ``{"kind", "seq", "body": "<JSON text>", "signed": bool}``: the text as
        stored, signed when the journal has a signer (:class:`RecordSigner`). The outbox
        publishes it as it is, and a backlog's drain parses and signs nothing. A record
        that is not final yet is passed over (one stuck record must not hold back the
        others); once final, it comes first in the next answer, whatever ``after_seq`` is.
        """
        return await self._run(self._unacked, after_seq, limit, raw, reading=True)

    def _unacked(self, after_seq: int, limit: int, raw: bool = False) -> list[dict[str, Any]]:
        def record(kind: str, seq: int, body: str, signed: str | None) -> dict[str, Any]:
            if raw:
                if signed is not None:
                    return {"kind": kind, "seq": seq, "body": signed, "signed": True}
                return {"kind": kind, "seq": seq, "body": body, "signed": False}
            return {"kind": kind, "seq": seq, "message": json.loads(body)}

        out = []
        conn = self._reader
        with self._late_lock:
            late, self._late = self._late, []
            for seq in sorted(late):
                row = conn.execute(
                    "SELECT kind, body, signed FROM records WHERE seq = ? AND final = 1", (seq,)
                ).fetchone()
                if row is not None and seq <= after_seq:  # above after_seq: selected below
                    out.append(record(row[0], seq, row[1], row[2]))
            rows = conn.execute(
                "SELECT seq, kind, final, body, signed FROM records WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, max(0, limit - len(out))),
            ).fetchall()
            for seq, _, final, _, _ in rows:
                if final:
                    self._passed_over.discard(seq)
                else:
                    self._passed_over.add(seq)
        out.extend(record(kind, seq, body, signed)
                   for seq, kind, final, body, signed in rows if final)  # fmt: skip
        return out

    async def records_since(self, at: datetime) -> list[dict[str, Any]]:
        """Final granted check-ins still in the journal decided at or after ``at``.

        For rebuilding local state at start (passages, ticket uses, charges), seq order.
        """
        if at.tzinfo is None:
            raise ValueError("records_since needs an aware datetime")
        return await self._run(self._records_since, at)

    def _records_since(self, at: datetime) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT body FROM records WHERE kind = 'checkin' AND final = 1 "
            "AND json_extract(body, '$.decision') = 'granted' ORDER BY seq"
        ).fetchall()
        out = []
        for (body,) in rows:
            message: dict[str, Any] = json.loads(body)
            when = _parse_at(message.get("at"))
            if when is None:
                log.warning("journal seq %s has no usable time: skipped", message.get("seq"))
            elif when >= at:
                out.append(message)
        return out

    async def ack(self, upto: int) -> int:
        """The central system has everything up to ``upto``: prune those final records.

        Returns how many were pruned. Records not final yet are kept (they were never
        published). The seq counter is not touched: it never goes back.
        """
        if upto > self._last_seq:
            log.warning(
                "central acknowledged seq %d beyond the last one journalled (%d): "
                "is another gateway using the id %r?",
                upto,
                self._last_seq,
                self.gw,
            )
        count = await self._run(self._ack, upto)
        self._acked_upto = max(self._acked_upto, upto)
        return count

    def _ack(self, upto: int) -> int:
        # Fsynced like every write here. Committing an ack without (synchronous=NORMAL: a
        # lost ack is only a resend, which the central drops by id) was tried on 2026-12-03
        # so that a tap's record would not queue behind an ack's fsync: tap to relay p99
        # during a drain read 39 / 8.92 / 142 ms with it, 19.7 / 8.53 / 7.89 ms without
        # (alternated, 1,000 taps each), so it was left out.
        with _transaction(self._conn):
            count = self._conn.execute(
                "DELETE FROM records WHERE seq <= ? AND final = 1", (upto,)
            ).rowcount
            self._conn.execute(
                "UPDATE meta SET value = MAX(value, ?) WHERE key = 'acked_upto'", (upto,)
            )
        self._pending -= int(count)
        return int(count)

    async def pending_count(self) -> int:
        """Records not yet acknowledged (final or not)."""
        return await self._run(self._count)

    def _count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (never goes back, also after pruning)."""
        return self._last_seq

    @property
    def acked_upto(self) -> int:
        """The highest seq the central system has acknowledged."""
        return self._acked_upto

    async def close(self) -> None:
        """Close the database and its thread (waits for writes under way)."""
        if self._closed:
            return
        await self._run(self._reader.close, reading=True)
        await self._run(self._conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)
        self._read_executor.shutdown(wait=True)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (durable: synchronous=FULL), ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
            conn.execute("ROLLBACK")
        raise


def _meta(conn: sqlite3.Connection, key: str) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _encodable(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the keys the journal assigns, checked to be JSON (nothing written else)."""
    clean = {k: v for k, v in body.items() if k not in ("id", "seq", "gw")}
    try:
        _dumps(clean)
    except (TypeError, ValueError) as exc:
        raise JournalError(f"record not journalled, it is not plain JSON ({exc}): a bug") from exc
    return clean


def _parse_at(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def _open(path: str, key_id: str | None = None) -> sqlite3.Connection:
    """Open the database, create the schema, finalise decisions a crash left open."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            _prepare(conn, path, key_id)
        except BaseException:
            conn.close()
            raise
    except sqlite3.OperationalError as exc:
        raise JournalError(_explain(exc, path)) from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError(_DAMAGED.format(path=path, exc=exc)) from exc
    except OSError as exc:
        raise JournalError(
            f"journal {path} cannot be created: {exc.strerror}; "
            "check gateway.state_dir and its permissions"
        ) from exc
    return conn


def _open_reader(path: str) -> sqlite3.Connection:
    """A second connection to the journal :func:`_open` prepared, for reading only."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA busy_timeout=5000")  # WAL: only a recovery makes a reader wait
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: str, key_id: str | None = None) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if str(mode).lower() != "wal":
        raise JournalError(
            f"journal {path}: the file system refuses SQLite's WAL mode ({mode}); "
            "put gateway.state_dir on a local disk (ext4), not a network share"
        )
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    if "passage_assumed" not in columns:  # a journal from before the column
        conn.execute("ALTER TABLE records ADD COLUMN passage_assumed INTEGER NOT NULL DEFAULT 0")
    if "signed" not in columns:  # a journal from before stored signatures
        conn.execute("ALTER TABLE records ADD COLUMN signed TEXT")
    row = conn.execute("SELECT value FROM meta WHERE key = 'signing_key'").fetchone()
    if key_id is not None and (row is None or row[0] != key_id):
        # Stored signatures of another key (a new key, a restore) would be refused by the
        # central: forgotten, the link signs those records with this key as it publishes.
        with _transaction(conn):
            conn.execute("UPDATE records SET signed = NULL WHERE signed IS NOT NULL")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('signing_key', ?)", (key_id,)
            )
    with _transaction(conn):  # decisions a crash left open
        orphans = conn.execute(
            "SELECT seq, body, passage_assumed FROM records WHERE final = 0 AND kind = 'checkin'"
        ).fetchall()
        for seq, body, assumed in orphans:
            message = json.loads(body)
            if assumed and message.get("decision") == "granted":
                message["passed"] = True  # no sensor: a grant counts as walked through
            else:  # a sensor would have seen the passage: nobody passed, nothing charged
                message.update(passed=False, charged=0)
            conn.execute(
                "UPDATE records SET final = 1, body = ? WHERE seq = ?", (_dumps(message), seq)
            )
    if orphans:
        log.warning(
            "journal %s: %d decision(s) left open by a crash, finalised (passed only at "
            "doors without a passage sensor)",
            path,
            len(orphans),
        )


def _trouble_kind(exc: sqlite3.OperationalError) -> str:
    """What kind of write failure this is, for the status."""
    text = str(exc)
    if "full" in text:
        return "disk_full"
    if "readonly" in text or "read-only" in text:
        return "read_only"
    if "disk I/O" in text:
        return "io_error"
    if "locked" in text or "busy" in text:
        return "locked"
    return "error"


def _explain(exc: sqlite3.OperationalError, path: str) -> str:
    """What the installer should do about a database error."""
    text = str(exc)
    if "full" in text:
        return f"journal {path}: the disk is full ({text}); free space in gateway.state_dir"
    if "readonly" in text or "read-only" in text:
        return (
            f"journal {path} is read-only ({text}); the file system may have been remounted "
            "read-only after an error (check dmesg) or the service user may not own it"
        )
    if "disk I/O" in text:
        return f"journal {path}: disk I/O error ({text}); the SD card or disk may be failing"
    if "locked" in text or "busy" in text:
        return (
            f"journal {path} is locked ({text}): is another gateway process running "
            "with the same state directory?"
        )
    if "unable to open" in text:
        return (
            f"journal {path} cannot be opened ({text}); check that gateway.state_dir "
            "exists and is writable"
        )
    return f"journal {path}: {text}"
