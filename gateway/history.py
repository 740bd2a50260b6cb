"""Passage history: the final granted check-ins local state is rebuilt from at start.

The journal forgets a check-in once the central system acknowledges it, but decisions
still need recent passages (re-entry, visit limits, anti-passback), uncounted clip-card
charges and ticket uses. This keeps the few fields they need, own and peers' alike, for
``PASSAGE_HORIZON``; a member deleted by the central system is purged at once.

It is also the durable memory of peers' check-ins: a row is keyed by ``(gw, id)`` (and
``(gw, seq)``), so a check-in delivered again, even after a restart, is kept once and
:meth:`History.add` says it was not new: the caller then leaves the state alone.

Writes go to one writer thread (fsync never on the event loop), in the order submitted.
Check-ins added within ``GROUP_WINDOW`` of each other (or while the thread is busy), up to
``GROUP_MAX``, are written together, in one transaction: one fsync for a burst instead of
one each, and while peers trickle in at most one every ``GROUP_WINDOW`` beside the
journal's, whose fsync a door waits for.
Start-up never fails on a stored row: :meth:`History.rebuild` skips and logs any row it
cannot read (PROTOCOL.md, "Trust between gateways").
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.errors import StoreError
from gateway.state import PASSAGE_HORIZON, LocalState
from gateway.writer_thread import InlineWriter, WriterThread

log = logging.getLogger(__name__)

# How long a batch waits for more check-ins before it is written: peers' check-ins come
# one message at a time (200 a second from two peers draining), and an fsync each on the
# card the journal shares slowed the doors' own commits. Nobody waits for the history at
# a door: only a peer's acknowledgement waits this much longer.
GROUP_WINDOW = 0.02
# A batch this big is written at once: a peer draining a backlog is acknowledged (the wire
# process's PUBACK waits for the history) as fast as the disk allows, not 20 ms a batch,
# or the broker's queue for this gateway would fill and drop.
GROUP_MAX = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
    gw TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_unix REAL NOT NULL,
    member TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (gw, seq)
);
CREATE INDEX IF NOT EXISTS checkins_member ON checkins(member);
CREATE INDEX IF NOT EXISTS checkins_at ON checkins(at_unix);
"""
_ID_COLUMN = "ALTER TABLE checkins ADD COLUMN id TEXT"  # databases made before peer de-dup
_ID_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS checkins_id ON checkins(gw, id)"
_KEEP = ("gw", "seq", "at", "zone", "direction", "member", "ticket", "contract", "charged",
         "decision", "passed")  # fmt: skip


def changes_state(checkin: Mapping[str, Any]) -> bool:
    """Only granted check-ins that someone walked through change local state."""
    return checkin.get("decision") == "granted" and checkin.get("passed") is True


class History:
    """Final granted check-ins of the site, kept for a month (SQLite, WAL)."""

    def __init__(
        self, conn: sqlite3.Connection, path: str = "", writer: WriterThread | None = None
    ) -> None:
        """``writer`` None: statements run in the caller's thread (a tool reading a copy)."""
        self._conn = conn
        self._path = path
        self._writer = writer or InlineWriter("history")
        # Check-ins waiting for the writer thread, written in one transaction; None once it
        # took them (the next add starts a batch of its own). Only the event loop's thread
        # adds; the lock is for the writer thread taking the batch.
        self._batch: list[tuple[dict[str, Any], Future[bool]]] | None = None
        self._batch_lock = threading.Lock()
        self._batch_full = threading.Event()  # the batch being filled reached GROUP_MAX
        # none for a tool reading a copy in its own thread (nothing to wait for)
        self.group_window = GROUP_WINDOW if writer is not None else 0.0

    @classmethod
    def open(cls, path: Path | str) -> History:
        """Open (or create) the history database (on its writer thread)."""
        writer = WriterThread("history")
        try:
            conn = writer.call(_open, str(path))
        except sqlite3.DatabaseError as exc:
            writer.close()
            raise StoreError(
                f"passage history at {path} is damaged ({exc}): delete it; the gateway then "
                "forgets recent passages (anti-passback and visit counts start afresh)"
            ) from exc
        return cls(conn, str(path), writer)

    # --- writing (on the writer thread, in order) -----------------------------------------

    def add(self, checkin: Mapping[str, Any]) -> Future[bool]:
        """Keep a final check-in that someone walked through; the future says whether it is
        new (False: the same ``(gw, id)`` or ``(gw, seq)`` is already kept, or it changes
        no state). Await it (``asyncio.wrap_future``) to know it is durable."""
        kept: Future[bool] = Future()
        with self._batch_lock:
            batch, new_batch = self._batch, self._batch is None
            if batch is None:
                batch = self._batch = []
                self._batch_full = threading.Event()
            batch.append((dict(checkin), kept))
            if len(batch) >= GROUP_MAX:
                self._batch_full.set()
        if new_batch:  # written after everything submitted before it
            self._writer.submit(self._insert_batch, batch, self._batch_full)
        return kept

    def _close_batch(self) -> None:
        """What comes next is written after the statement being submitted now."""
        with self._batch_lock:
            self._batch = None

    def _insert_batch(
        self, batch: list[tuple[dict[str, Any], Future[bool]]], full: threading.Event
    ) -> None:
        if self.group_window:
            full.wait(self.group_window)  # on the writer thread: later adds join this batch
        with self._batch_lock:
            if self._batch is batch:
                self._batch = None
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                news = [self._insert(checkin) for checkin, _ in batch]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # every waiter learns it; the writer thread logs it
            for _, kept in batch:
                kept.set_exception(exc)
            raise
        for (_, kept), new in zip(batch, news, strict=True):
            kept.set_result(new)

    def _insert(self, checkin: dict[str, Any]) -> bool:
        if not changes_state(checkin):
            return False
        try:
            at = datetime.fromisoformat(str(checkin["at"])).timestamp()
        except (KeyError, ValueError, OverflowError) as exc:
            log.warning("history: check-in %s/%s not kept: bad at (%s)",
                        checkin.get("gw"), checkin.get("seq"), exc)  # fmt: skip
            return False
        body = json.dumps({k: checkin.get(k) for k in _KEEP})
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO checkins (gw, seq, id, at_unix, member, body) "
            "VALUES (?,?,?,?,?,?)",
            (
                str(checkin.get("gw")),
                int(checkin.get("seq") or 0),
                checkin.get("id"),
                at,
                checkin.get("member"),
                body,
            ),
        )
        return cursor.rowcount == 1

    def purge_member(self, member: str) -> Future[int]:
        """Forget a deleted member's passages (privacy); the future holds how many."""
        self._close_batch()
        return self._writer.submit(self._delete, "DELETE FROM checkins WHERE member = ?", member)

    def prune(self, now: datetime) -> Future[int]:
        """Forget what is older than any rule looks back over; the future holds how many."""
        cutoff = (now - PASSAGE_HORIZON).timestamp()
        self._close_batch()
        return self._writer.submit(self._delete, "DELETE FROM checkins WHERE at_unix < ?", cutoff)

    def _delete(self, sql: str, arg: Any) -> int:
        return int(self._conn.execute(sql, (arg,)).rowcount)

    # --- reading (waits for the writes before it) -------------------------------------------

    def members(self) -> list[str]:
        """The members whose passages are kept."""
        return self._writer.call(self._members)

    def _members(self) -> list[str]:
        rows = self._conn.execute("SELECT DISTINCT member FROM checkins WHERE member IS NOT NULL")
        return [m for (m,) in rows]

    def rebuild(
        self, own_gw: str, now: datetime, tz: ZoneInfo | None, checkins_upto: Mapping[str, int]
    ) -> LocalState:
        """Local state from the kept check-ins: passages, charges, ticket uses, occupancy.

        Occupancy counts only today's passages (local date): counts start afresh each day,
        so a person who left by a door without a reader does not stay "inside" forever.
        A row that cannot be read (whatever a peer once sent) is skipped and logged.
        """
        rows = self._writer.call(self._rows, (now - PASSAGE_HORIZON).timestamp())
        state = LocalState()
        today = now.astimezone(tz).date() if tz else now.date()
        skipped = 0
        for gw, seq, raw in rows:
            try:
                checkin = json.loads(raw)
                at = datetime.fromisoformat(checkin["at"])
                is_today = (at.astimezone(tz).date() if tz else at.date()) == today
                state.apply_checkin(checkin, own=checkin.get("gw") == own_gw,
                                    count_inside=is_today)  # fmt: skip
            except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as exc:
                skipped += 1
                log.warning("history: stored check-in %s/%s skipped: %s: %s",
                            gw, seq, type(exc).__name__, exc)  # fmt: skip
        if skipped:
            log.warning("history: %d stored check-in(s) could not be read and were skipped",
                        skipped)  # fmt: skip
        state.counted(checkins_upto)
        return state

    def _rows(self, since: float) -> list[tuple[str, int, str]]:
        return self._conn.execute(
            "SELECT gw, seq, body FROM checkins WHERE at_unix >= ? ORDER BY at_unix, gw, seq",
            (since,),
        ).fetchall()

    def close(self) -> None:
        """Finish the writes, then close the database."""
        self._writer.close()
        self._conn.close()


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(checkins)")}
        if "id" not in columns:
            conn.execute(_ID_COLUMN)
        conn.execute(_ID_INDEX)
    except BaseException:
        conn.close()
        raise
    return conn
