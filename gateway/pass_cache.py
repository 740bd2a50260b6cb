"""The phone-pass replay cache (PASSES.md): ``(d, t, n)`` seen at this gateway.

A pass that was presented stays used after a power cut: each entry is committed before
the decision goes on. An in-memory set mirrors the table for the pure decision; entries
whose ``t`` is outside the window are pruned, since they can never verify again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.errors import StoreError
from gateway.passes import SeenKey


class PassCache:
    """Seen pass tokens, durable (SQLite) and mirrored in memory."""

    def __init__(self, conn: sqlite3.Connection, seen: set[SeenKey]) -> None:
        self._conn = conn
        self._seen = seen

    @classmethod
    def open(cls, path: Path | str) -> PassCache:
        """Open (or create) the cache and load it."""
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS seen (device TEXT NOT NULL, t INTEGER NOT "
                "NULL, nonce TEXT NOT NULL, PRIMARY KEY (device, t, nonce))"
            )
            seen = {(d, int(t), n) for d, t, n in conn.execute("SELECT device, t, nonce FROM seen")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"pass replay cache {path} is damaged ({exc}): delete it; passes "
                "seen in the last minute could then be replayed once"
            ) from exc
        return cls(conn, seen)

    def seen(self, device: str, t: int, nonce: str) -> bool:
        """True if this token was already presented here."""
        return (device, t, nonce) in self._seen

    def add(self, device: str, t: int, nonce: str) -> None:
        """Remember a presented token, durably."""
        self._conn.execute(
            "INSERT OR IGNORE INTO seen (device, t, nonce) VALUES (?, ?, ?)", (device, t, nonce)
        )
        self._seen.add((device, t, nonce))

    def prune(self, now_unix: int, window_s: int) -> int:
        """Forget tokens whose time is outside the window: they can never verify again."""
        low, high = now_unix - window_s, now_unix + window_s
        count = self._conn.execute("DELETE FROM seen WHERE t < ? OR t > ?", (low, high)).rowcount
        self._seen = {k for k in self._seen if low <= k[1] <= high}
        return int(count)

    def entries(self) -> set[SeenKey]:
        """The current set, for the decision's local state."""
        return set(self._seen)

    def close(self) -> None:
        """Close the database."""
        self._conn.close()
