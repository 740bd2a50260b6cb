"""Remote commands from the central system (PROTOCOL.md, Commands).

A signed ``command`` envelope (already opened and verified by the caller) is refused when its
``issued_at`` is more than 30 s from the gateway's clock (``stale``), when its id was seen
before (``replayed``), when it names an unknown door (``unknown_door``) or is malformed
(``bad_command``), or fails at the door (``failed``); otherwise it is carried out through
:class:`DoorControl`. Every authentic command gets exactly one result ``{"id", "ok", "error"}``
(with ``detail`` for people when it failed), which the caller publishes on
``gw/{gw}/cmd/result``; one that failed authentication gets none (Clarifications, Commands).

Seen ids (of every authentic command, whatever its outcome, for 24 h) are kept in a small
SQLite table in the state directory (``commands.sqlite``): an id
is committed durably *before* the door moves, so that neither a replay nor a power cut in the
middle can make one command open a door twice. SQLite rather than a file of our own because it
gives an atomic, fsynced insert and a cheap bounded prune for free, and the gateway already
relies on it for the store and the journal.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.sync.envelopes import Envelope

log = logging.getLogger(__name__)

STALE_AFTER_S = 30.0
REMEMBER_S = 24 * 3600.0
MAX_ID_LENGTH = 128
MAX_OPEN_SECONDS = 3600
OPS = ("open", "lockdown", "normal", "unlock", "resync")
Mode = Literal["unlock", "lockdown", "normal"]


class DoorControl(Protocol):
    """What commands act on; the daemon's doors implement it."""

    async def open_once(self, door: str, seconds: int | None) -> None:
        """One timed release (None: the door's unlock_seconds), recorded as a check-in with
        ``credential: "unknown"`` and ``reason: "remote_open"``. Returns once the lock is
        released, not after the passage; raises :class:`CommandFailed` when it was not."""

    async def set_mode(self, door: str, mode: Mode) -> None:
        """``unlock`` (held open until normal), ``lockdown`` (refuse every credential; egress
        stays free) or ``normal``."""

    async def resync(self) -> None:
        """Ask the central system for a full snapshot."""


class SeenCommands:
    """Ids of authentic commands, remembered for :data:`REMEMBER_S` (24 h) across restarts
    whatever their outcome (Clarifications, Commands), in SQLite."""

    def __init__(
        self,
        path: Path | str,
        limit: int = 1_000_000,
        *,
        remember_s: float = REMEMBER_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit  # a backstop only: the central signs every id, so few come
        self.remember_s = remember_s
        self.wall = wall
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS command_ids "
            "(n INTEGER PRIMARY KEY, id TEXT UNIQUE, at REAL NOT NULL)"
        )
        old = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='seen_commands'"
        ).fetchone()
        if old is not None:  # ids kept before they had a time: remembered from now on
            self._db.execute(
                "INSERT OR IGNORE INTO command_ids (id, at) SELECT id, ? FROM seen_commands",
                (self.wall(),),
            )
            self._db.execute("DROP TABLE seen_commands")

    async def add(self, command_id: str) -> bool:
        """Remember ``command_id``; False when it was already there."""
        return await asyncio.to_thread(self._add, command_id)

    def _add(self, command_id: str) -> bool:
        with self._lock:
            now = self.wall()
            self._db.execute("DELETE FROM command_ids WHERE at < ?", (now - self.remember_s,))
            try:
                self._db.execute(
                    "INSERT INTO command_ids (id, at) VALUES (?, ?)", (command_id, now)
                )
            except sqlite3.IntegrityError:
                return False
            self._db.execute(
                "DELETE FROM command_ids WHERE n <= (SELECT MAX(n) FROM command_ids) - ?",
                (self.limit,),
            )
            return True

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class CommandFailed(Exception):
    """The door could not carry out a command (e.g. its relay board is unreachable)."""


def result(command_id: Any, error: str | None = None, detail: str | None = None) -> dict[str, Any]:
    """A command result: ``{"id", "ok", "error"}``, with ``detail`` (for people) when it
    failed; id null when the command had no valid id."""
    safe_id = command_id if _valid_id(command_id) else None
    out: dict[str, Any] = {"id": safe_id, "ok": error is None, "error": error}
    if error is not None:
        out["detail"] = detail or error
    return out


def refused(name: str, reason: str) -> dict[str, Any]:
    """The ``bad_message`` detail of a message on the command topic that is not an authentic
    command: it gets no result, only this event (Clarifications, Commands), the same whether
    the gateway refused it or the wire process did (gateway.sync.wire_child)."""
    return {"topic": name, "reason": reason}


class Commands:
    """Checks and carries out commands; every command gets a result."""

    def __init__(
        self,
        control: DoorControl,
        doors: Iterable[str],
        seen: SeenCommands,
        *,
        clock: Callable[[], datetime],
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.control = control
        self.doors = tuple(doors)
        self.seen = seen
        self.clock = clock
        self.stale_after_s = stale_after_s

    async def handle(self, env: Envelope) -> dict[str, Any]:
        """Check an authentic command and carry it out; its one result, to publish on
        ``gw/{gw}/cmd/result``. Its id is remembered first, whatever the outcome, so that a
        command refused as stale cannot come back fresh under the same id."""
        body = env.body if isinstance(env.body, dict) else {}
        command_id = body.get("id")
        if env.type != "command" or not isinstance(command_id, str) or not _valid_id(command_id):
            return self._refuse(command_id, "bad_command", "no valid id (1..128 characters)")
        if not await self.seen.add(command_id):
            return self._refuse(command_id, "replayed", "this command id was already seen")
        skew = _skew_s(self.clock(), env.issued_at)
        if skew > self.stale_after_s:
            return self._refuse(
                command_id,
                "stale",
                f"issued {skew:.0f} s from the gateway's clock (at most "
                f"{self.stale_after_s:.0f} s)",
            )
        problem = self._check(body)
        if problem is not None:
            return self._refuse(command_id, *problem)
        return await self._carry_out(command_id, body)

    def _check(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """Why ``body`` cannot be carried out (error code, detail), or None."""
        op, door, seconds = body.get("op"), body.get("door"), body.get("seconds")
        if op not in OPS:
            return "bad_command", f"unknown op {str(op)[:32]!r}"
        if op == "resync":
            return None
        if not isinstance(door, str):
            return "bad_command", "door missing"
        if door != "*" and door not in self.doors:
            return "unknown_door", f"door {door[:64]!r} is not configured here"
        if op == "open" and seconds is not None and not _valid_seconds(seconds):
            return "bad_command", f"seconds must be 1..{MAX_OPEN_SECONDS}"
        return None

    async def _carry_out(self, command_id: str, body: dict[str, Any]) -> dict[str, Any]:
        op = body["op"]
        log.info("command %s: %s %s", command_id, op, body.get("door", ""))
        try:
            if op == "resync":
                await self.control.resync()
                return result(command_id)
            targets = self.doors if body["door"] == "*" else (body["door"],)
            for door in targets:
                if op == "open":
                    await self.control.open_once(door, body.get("seconds"))
                else:
                    await self.control.set_mode(door, op)
        except CommandFailed as exc:
            log.warning("command %s (%s) failed: %s", command_id, op, exc)
            return result(command_id, "failed", str(exc)[:300])
        except Exception as exc:
            log.exception("command %s (%s) failed", command_id, op)
            return result(command_id, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
        return result(command_id)

    def _refuse(self, command_id: Any, error: str, detail: str) -> dict[str, Any]:
        log.warning("command %r refused: %s (%s)", str(command_id)[:MAX_ID_LENGTH], error, detail)
        return result(command_id, error, detail)


def _skew_s(now: datetime, issued_at: Any) -> float:
    """Seconds between the gateway's clock and ``issued_at``; infinite when not comparable."""
    try:
        return abs(float((now - issued_at).total_seconds()))
    except TypeError:  # naive vs aware, or not a datetime: never fresh
        return float("inf")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _valid_seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_OPEN_SECONDS
