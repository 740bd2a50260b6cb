"""The entitlement store's files: the schema, connections, and the swap of a whole file.

A snapshot is written to a file of its own (:mod:`gateway.staged_set`) and then takes the
place of the store's file. The swap is what readers wait for, so everything slow (the old
WAL's checkpoint, freeing the old file's blocks, the directory's fsync) is done around it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path

from gateway.errors import StoreError

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale index entries stay stale
    gen INTEGER NOT NULL,
    rid TEXT NOT NULL,
    kind TEXT NOT NULL,
    hashes BLOB NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS index_blob (gen INTEGER PRIMARY KEY, prefixes BLOB, rowids BLOB);
CREATE TABLE IF NOT EXISTS index_log (
    n INTEGER PRIMARY KEY, gen INTEGER NOT NULL, prefix INTEGER NOT NULL,
    rowid INTEGER NOT NULL, added INTEGER NOT NULL
);
"""
# A staged file gets it once its rows are in: built from them sorted, not kept up row by row.
RID_INDEX = "CREATE INDEX IF NOT EXISTS records_rid ON records(gen, rid);"
SCHEMA = TABLES + RID_INDEX


def staged_path(store_path: Path | str) -> Path:
    """Where a new set for the store at ``store_path`` is written before it is adopted."""
    return Path(f"{store_path}.next")


def retired_path(store_path: Path | str) -> Path:
    """The second name a replaced store file has until it is deleted."""
    return Path(f"{store_path}.old")


def connect(name: str) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """(reader, writer) connections to the store."""
    if name == ":memory:":
        # two connections need a shared-cache database; reading uncommitted rows is safe
        # here because readers only look at rows of their view, which no write changes
        uri = f"file:accessgw-store-{uuid.uuid4().hex}?mode=memory&cache=shared"
        writer = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        reader = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        reader.execute("PRAGMA read_uncommitted=1")
        return reader, writer
    writer = sqlite3.connect(name, check_same_thread=False, isolation_level=None, timeout=10)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA synchronous=FULL")
        writer.execute("PRAGMA journal_size_limit=67108864")  # truncate a grown WAL to 64 MB
        reader = sqlite3.connect(name, check_same_thread=False, isolation_level=None, timeout=10)
    except sqlite3.Error:
        writer.close()
        raise
    return reader, writer


def connect_staged(path: str) -> sqlite3.Connection:
    """A connection to write a staged file: no journal, no fsync (a failure discards it),
    and no index on the records yet (:data:`RID_INDEX`, made when they are all in)."""
    remove_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-4096")  # 4 MiB: a builder bounded by a chunk
    conn.executescript(TABLES)
    return conn


def seal_staged(conn: sqlite3.Connection, path: str) -> None:
    """Close a finished staged file and make it durable, already in WAL mode (so that the
    store switching to it changes nothing in it while readers wait)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    for suffix in ("-wal", "-shm"):
        remove_file(path + suffix)  # closing the last connection checkpointed and left none
    fsync_file(path)


def swap_in(path: str, staged: str) -> None:
    """Move the closed store file at ``path`` aside and ``staged`` into its place.

    The caller has closed every connection to ``path`` (with its WAL checkpointed, so that
    closing was quick). Freeing a big file's blocks takes a while (180 ms for 700 MB): the
    old file keeps a second name (:func:`retired_path`) so that the rename does not free
    them here, with readers waiting; :func:`retire` deletes it after.
    """
    for suffix in ("-wal", "-shm"):
        remove_file(path + suffix)  # they belong to the old file
        remove_file(staged + suffix)  # empty: the staged file was sealed with none
    with contextlib.suppress(OSError):
        os.link(path, retired_path(path))
    os.replace(staged, path)


def retire(path: str) -> None:
    """After a swap: the rename made durable, the old file deleted.

    No ``malloc_trim`` here: it holds the allocator's lock while it walks the heap, and
    the event loop, wanting memory for the next decision, would wait for it."""
    fsync_directory(path)
    remove_file(retired_path(path))


def last_rowid(conn: sqlite3.Connection) -> int:
    """The highest rowid ever used (deleted ones included: rowids are never reused)."""
    row = conn.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0), "
        "COALESCE((SELECT MAX(rowid) FROM records), 0))"
    ).fetchone()
    return int(row[0])


def remove_file(path: Path | str) -> None:
    """Delete ``path`` if it is there."""
    Path(path).unlink(missing_ok=True)


def fsync_file(path: str) -> None:
    """Make a file's contents durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str) -> None:
    """Make a rename in the directory of ``path`` durable."""
    fsync_file(os.path.dirname(os.path.abspath(path)))


def release_freed_memory() -> None:
    """Give the heap freed after a snapshot back to the system (glibc keeps it otherwise).

    Building the index of a million members frees some hundred MB in small pieces; on a
    1 GB gateway that memory should not stay with this process until it restarts.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def many(conn: sqlite3.Connection, sql: str, rowids: Iterable[int]) -> None:
    """``sql`` once for each rowid."""
    conn.executemany(sql, ((r,) for r in rowids))


def in_transaction(conn: sqlite3.Connection, sql: str, rowids: Iterable[int]) -> None:
    """``sql`` for each rowid in one transaction (one fsync, not one per row)."""
    conn.execute("BEGIN IMMEDIATE")
    many(conn, sql, rowids)
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction, if any (a failing rollback changes nothing more)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def damaged(path: str, exc: BaseException) -> StoreError:
    """The error for a store file SQLite cannot read."""
    return StoreError(
        f"entitlement store at {path} is damaged ({exc}): delete it (and its -wal and -shm "
        "files); the gateway will fetch a fresh snapshot from the central system"
    )


def open_error(path: str, exc: BaseException) -> StoreError:
    """The error for a store that cannot be opened, with what to check."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return StoreError(
            f"entitlement store at {path} cannot be opened ({text}): does its directory "
            "exist, and may the gateway's user write there?"
        )
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return StoreError(
            f"entitlement store at {path} is locked ({text}): is another accessgw process "
            "running on the same state directory?"
        )
    return damaged(path, exc)
