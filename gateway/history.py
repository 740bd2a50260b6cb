"""Passage history: the final granted check-ins local state is rebuilt from at start.

The journal forgets a check-in once the central system acknowledges it, but decisions
still need recent passages (re-entry, visit limits, anti-passback), uncounted clip-card
charges and ticket uses. This keeps the few fields they need, own and peers' alike, for
``PASSAGE_HORIZON``; a member deleted by the central system is purged at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.errors import StoreError
from gateway.state import PASSAGE_HORIZON, LocalState

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
_KEEP = ("gw", "seq", "at", "zone", "direction", "member", "ticket", "contract", "charged",
         "decision", "passed")  # fmt: skip


class History:
    """Final granted check-ins of the site, kept for a month (SQLite, WAL)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path | str) -> History:
        """Open (or create) the history database."""
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"passage history at {path} is damaged ({exc}): delete it; the gateway then "
                "forgets recent passages (anti-passback and visit counts start afresh)"
            ) from exc
        return cls(conn)

    def add(self, checkin: Mapping[str, Any]) -> None:
        """Keep a final check-in that someone walked through (others change no state)."""
        if checkin.get("decision") != "granted" or not checkin.get("passed"):
            return
        body = {k: checkin.get(k) for k in _KEEP}
        at = datetime.fromisoformat(str(checkin["at"])).timestamp()
        self._conn.execute(
            "INSERT OR IGNORE INTO checkins (gw, seq, at_unix, member, body) VALUES (?,?,?,?,?)",
            (
                str(checkin.get("gw")),
                int(checkin.get("seq") or 0),
                at,
                checkin.get("member"),
                json.dumps(body),
            ),
        )

    def purge_member(self, member: str) -> int:
        """Forget a deleted member's passages (privacy)."""
        return self._conn.execute("DELETE FROM checkins WHERE member = ?", (member,)).rowcount

    def members(self) -> list[str]:
        """The members whose passages are kept."""
        rows = self._conn.execute("SELECT DISTINCT member FROM checkins WHERE member IS NOT NULL")
        return [m for (m,) in rows]

    def prune(self, now: datetime) -> int:
        """Forget what is older than any rule looks back over."""
        cutoff = (now - PASSAGE_HORIZON).timestamp()
        return self._conn.execute("DELETE FROM checkins WHERE at_unix < ?", (cutoff,)).rowcount

    def rebuild(
        self, own_gw: str, now: datetime, tz: ZoneInfo | None, checkins_upto: Mapping[str, int]
    ) -> LocalState:
        """Local state from the kept check-ins: passages, charges, ticket uses, occupancy.

        Occupancy counts only today's passages (local date): counts start afresh each day,
        so a person who left by a door without a reader does not stay "inside" forever.
        """
        state = LocalState()
        rows = self._conn.execute(
            "SELECT body FROM checkins WHERE at_unix >= ? ORDER BY at_unix, gw, seq",
            ((now - PASSAGE_HORIZON).timestamp(),),
        )
        today = now.astimezone(tz).date() if tz else now.date()
        for (raw,) in rows:
            checkin = json.loads(raw)
            at = datetime.fromisoformat(checkin["at"])
            is_today = (at.astimezone(tz).date() if tz else at.date()) == today
            state.apply_checkin(checkin, own=checkin.get("gw") == own_gw, count_inside=is_today)
        state.counted(checkins_upto)
        return state

    def close(self) -> None:
        """Close the database."""
        self._conn.close()
