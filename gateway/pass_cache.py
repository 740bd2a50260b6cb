"""The phone-pass replay cache (PASSES.md): ``(d, t, n)`` seen at this gateway.

A pass that was presented stays used after a power cut: :meth:`PassCache.add` marks it
seen in memory at once and returns the future of its commit (WAL, ``synchronous=FULL``) on
the cache's writer thread; the entrance awaits that before the door decision goes on. An
in-memory set mirrors the table, so :meth:`PassCache.seen` and :meth:`PassCache.entries`
never touch the disk. Entries whose ``t`` is outside the window are pruned: such a pass
fails ``pass_expired`` before the replay check, so it can never verify again.

Peers' passes (the ``pass`` of their check-ins) are added the same way, so a pass shown at
one gateway is ``pass_replayed`` at every gateway of the site that has heard of it.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future
from pathlib import Path

from gateway.errors import StoreError
from gateway.passes import SeenKey
from gateway.writer_thread import WriterThread

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (device TEXT NOT NULL, t INTEGER NOT NULL, "
    "nonce TEXT NOT NULL, PRIMARY KEY (device, t, nonce)) WITHOUT ROWID"
)


class PassCache:
    """Seen pass tokens, durable (SQLite) and mirrored in memory."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, seen: set[SeenKey], writer: WriterThread
    ) -> None:
        self._conn = conn
        self._path = path
        self._seen = seen
        self._writer = writer

    @classmethod
    def open(cls, path: Path | str) -> PassCache:
        """Open (or create) the cache and load it into memory."""
        writer = WriterThread("pass-cache")
        try:
            conn, rows = writer.call(_open, str(path))
        except (sqlite3.Error, OSError) as exc:
            writer.close()
            raise StoreError(_explain(exc, str(path))) from exc
        seen = set()
        for d, t, n in rows:
            if isinstance(d, str) and isinstance(t, int) and isinstance(n, str):
                seen.add((d, t, n))  # a row of another type is skipped: start-up never fails
        return cls(conn, str(path), seen, writer)

    def seen(self, device: str, t: int, nonce: str) -> bool:
        """True if this token was already presented here (and not pruned)."""
        return (device, t, nonce) in self._seen

    def add(self, device: str, t: int, nonce: str) -> Future[None]:
        """Remember a presented token: seen at once, durable when the future is done (it
        raises :class:`StoreError` when the write failed)."""
        key = (device, t, nonce)
        self._seen.add(key)
        return self._writer.submit(self._insert, key)

    def _insert(self, key: SeenKey) -> None:
        try:
            self._conn.execute("INSERT OR IGNORE INTO seen (device, t, nonce) VALUES (?,?,?)", key)
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, self._path)) from exc

    def prune(self, now_unix: int, window_s: int) -> int:
        """Forget tokens whose time is outside ``now ± window``: they can never verify again.

        Returns how many were forgotten.
        """
        low, high = now_unix - window_s, now_unix + window_s
        kept = {k for k in self._seen if low <= k[1] <= high}
        count = len(self._seen) - len(kept)
        self._seen = kept
        self._writer.submit(self._delete_outside, low, high)
        return count

    def _delete_outside(self, low: int, high: int) -> None:
        try:
            self._conn.execute("DELETE FROM seen WHERE t < ? OR t > ?", (low, high))
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, self._path)) from exc

    def entries(self) -> set[SeenKey]:
        """A copy of the current set, for the decision's local state."""
        return set(self._seen)

    def __len__(self) -> int:
        """How many tokens are remembered."""
        return len(self._seen)

    def close(self) -> None:
        """Finish the writes, then close the database."""
        self._writer.close()
        self._conn.close()


def _open(path: str) -> tuple[sqlite3.Connection, list[tuple[object, object, object]]]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(_SCHEMA)
        rows = conn.execute("SELECT device, t, nonce FROM seen").fetchall()
    except BaseException:
        conn.close()
        raise
    return conn, rows


def _explain(exc: sqlite3.Error | OSError, path: str) -> str:
    """What the installer should do about a replay-cache error."""
    text = str(exc)
    if isinstance(exc, OSError):
        return (
            f"pass replay cache {path} cannot be created ({exc.strerror}); "
            "check gateway.state_dir and its permissions"
        )
    if "full" in text:
        return (
            f"pass replay cache {path}: the disk is full ({text}); free space in gateway.state_dir"
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"pass replay cache {path} is read-only ({text}); check dmesg for a file system "
            "remounted read-only, and that the service user owns gateway.state_dir"
        )
    if isinstance(exc, sqlite3.OperationalError):
        return f"pass replay cache {path}: {text}; check gateway.state_dir"
    return (
        f"pass replay cache {path} is damaged ({text}): stop the gateway and delete it; "
        "passes shown in the last minute could then be used once more"
    )
