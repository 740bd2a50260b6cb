"""The journal: every decision and event, durable before any lock moves (PROTOCOL.md).

SQLite in WAL mode with ``synchronous=FULL``, written by one dedicated thread so the
event loop never waits on fsync. ``seq`` comes from the committed row itself (the
high-water mark is kept in the same transaction), so it has no gap and is never
reused, across restarts and power cuts: a seq is only ever reported after its commit.

A record is kept until the central system acknowledges it (``ack upto``), then pruned.
A decision that was never finalised (the process died between energising the lock
and seeing the passage) is finalised at open as ``passed: false, charged: 0``:
nobody saw a passage, so nothing is charged and it does not block the outbox.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import JournalError
from gateway.uuid7 import uuid7

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('checkin', 'event')),
    final INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('acked_upto', 0);
"""


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
        gw: str,
        executor: ThreadPoolExecutor,
        last_seq: int,
        acked_upto: int,
    ) -> None:
        self._conn = conn
        self.gw = gw
        self._executor = executor
        self._last_seq = last_seq
        self._acked_upto = acked_upto

    @classmethod
    async def open(cls, path: Path | str, gw: str) -> Journal:
        """Open (or create) the journal; finalise decisions a crash left open."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        loop = asyncio.get_running_loop()
        try:
            conn, last, acked = await loop.run_in_executor(executor, _open, str(path))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, gw, executor, last, acked)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            raise JournalError(_explain(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"journal is damaged ({exc}): keep a copy for the vendor, "
                "then delete it; unacknowledged check-ins in it are lost"
            ) from exc

    # --- writing ------------------------------------------------------------------------

    async def record_decision(self, checkin: dict[str, Any]) -> Entry:
        """Journal a decision durably (fsync) before the caller energises a lock.

        Assigns ``id``, ``seq`` and ``gw``; the record is not final until :meth:`finalise`.
        """
        return await self._append("checkin", checkin, final=False)

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
        return await self._append("event", event, final=True)

    async def record_many(self, checkins: list[dict[str, Any]]) -> list[Entry]:
        """Journal several final check-ins in one transaction (benchmarks, imports)."""
        entries = await self._run(self._insert_many, checkins)
        self._last_seq = entries[-1].seq if entries else self._last_seq
        return entries

    async def _append(self, kind: str, body: dict[str, Any], *, final: bool) -> Entry:
        entry = await self._run(self._insert, kind, body, final)
        self._last_seq = entry.seq
        return entry

    def _insert(self, kind: str, body: dict[str, Any], final: bool) -> Entry:
        return self._insert_all([(kind, body, final)])[0]

    def _insert_many(self, checkins: list[dict[str, Any]]) -> list[Entry]:
        return self._insert_all([("checkin", c, True) for c in checkins])

    def _insert_all(self, items: list[tuple[str, dict[str, Any], bool]]) -> list[Entry]:
        conn = self._conn
        with conn:  # one transaction: the seq and the row commit together
            (last,) = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            entries = []
            for kind, body, final in items:
                last += 1
                record_id = str(uuid7())
                message = {"id": record_id, "seq": last, "gw": self.gw, **_without_keys(body)}
                conn.execute(
                    "INSERT INTO records (seq, id, kind, final, body) VALUES (?,?,?,?,?)",
                    (last, record_id, kind, int(final), json.dumps(message)),
                )
                entries.append(Entry(last, record_id))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
        return entries

    async def finalise(self, seq: int, *, passed: bool, charged: int) -> dict[str, Any]:
        """Set the final state of a decision (passage seen or not, credits charged)."""
        return await self._run(self._finalise, seq, passed, charged)

    def _finalise(self, seq: int, passed: bool, charged: int) -> dict[str, Any]:
        with self._conn:
            row = self._conn.execute(
                "SELECT body FROM records WHERE seq = ? AND kind = 'checkin'", (seq,)
            ).fetchone()
            if row is None:
                raise JournalError(f"no decision with seq {seq} in the journal")
            message: dict[str, Any] = json.loads(row[0])
            message.update(passed=passed, charged=charged)
            self._conn.execute(
                "UPDATE records SET final = 1, body = ? WHERE seq = ?", (json.dumps(message), seq)
            )
        return message

    # --- reading and acknowledging ------------------------------------------------------

    async def unacked(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Final, unacknowledged records after ``after_seq`` in seq order, up to ``limit``.

        Stops at the first record that is not final yet: publishing is in seq order.
        """
        return await self._run(self._unacked, after_seq, limit)

    def _unacked(self, after_seq: int, limit: int) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT seq, kind, final, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        out = []
        for seq, kind, final, body in rows:
            if not final:
                break
            out.append({"kind": kind, "seq": seq, "message": json.loads(body)})
        return out

    async def ack(self, upto: int) -> int:
        """The central system has everything up to ``upto``: prune those records."""
        count = await self._run(self._ack, upto)
        self._acked_upto = max(self._acked_upto, upto)
        return count

    def _ack(self, upto: int) -> int:
        with self._conn:
            count = self._conn.execute(
                "DELETE FROM records WHERE seq <= ? AND final = 1", (upto,)
            ).rowcount
            self._conn.execute(
                "UPDATE meta SET value = MAX(value, ?) WHERE key = 'acked_upto'", (upto,)
            )
        return int(count)

    async def pending_count(self) -> int:
        """Records not yet acknowledged."""
        return await self._run(
            lambda: int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        )

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (never goes back, also after pruning)."""
        return self._last_seq

    @property
    def acked_upto(self) -> int:
        """The highest seq the central system has acknowledged."""
        return self._acked_upto

    async def close(self) -> None:
        """Close the database and its thread."""
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)


def _without_keys(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("id", "seq", "gw")}


def _open(path: str) -> tuple[sqlite3.Connection, int, int]:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        with conn:  # decisions a crash left open: nobody saw a passage
            for seq, body in conn.execute(
                "SELECT seq, body FROM records WHERE final = 0 AND kind = 'checkin'"
            ).fetchall():
                message = json.loads(body)
                message.update(passed=False, charged=0)
                conn.execute(
                    "UPDATE records SET final = 1, body = ? WHERE seq = ?",
                    (json.dumps(message), seq),
                )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError as exc:
        raise JournalError(_explain(exc, path)) from exc
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"journal {path} is damaged ({exc}): keep a copy for the vendor, "
            "then delete it; unacknowledged check-ins in it are lost"
        ) from exc
    except OSError as exc:
        raise JournalError(
            f"journal {path} cannot be created: {exc.strerror}; "
            "check gateway.state_dir and its permissions"
        ) from exc
    return conn, int(meta["last_seq"]), int(meta["acked_upto"])


def _explain(exc: sqlite3.OperationalError, path: str = "") -> str:
    text = str(exc)
    where = f" {path}" if path else ""
    if "full" in text:
        return f"journal{where}: the disk is full ({text}); free space on the state directory"
    if "readonly" in text or "read-only" in text:
        return f"journal{where} is read-only ({text}); check the state directory's permissions"
    if "unable to open" in text:
        return (
            f"journal{where} cannot be opened ({text}); check that gateway.state_dir "
            "exists and is writable"
        )
    return f"journal{where}: {text}"
