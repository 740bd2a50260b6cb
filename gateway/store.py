"""The entitlement store: site rules, members and tickets with a version (SQLite, WAL).

Privacy: credential values (NFC UIDs, codes, ticket codes) are kept only as
HMAC-SHA-256 with a per-gateway secret; the stored record JSON has them removed, so a
stolen SD card yields no clonable UID. Phone credentials (public keys) are kept.

Memory: records stay on disk and are decoded on demand; only the compact
:class:`~gateway.credential_index.CredentialIndex` lives in memory. Its sorted base is
persisted as a blob and every change since as a log written in the same transaction as
the delta, so start-up reads no million rows.

Atomicity: readers (the event loop) use one connection, the writer (usually a worker
thread) another. Rows of the current set are never changed in place: a write adds new
rows beside them, commits, swaps one Python reference (:class:`_View`), and only then
deletes the superseded rows. A reader that finds a row gone after such a swap reads again
through the new view, so it sees the old set or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.credential_index import CredentialIndex, IndexBuilder
from gateway.entitlements import Member, SiteRules, Ticket, credential_key, parse_rules
from gateway.errors import InvalidSet, StoreError

Record = Member | Ticket
FORMAT = "2"  # of the persisted index; another one is rebuilt from the records at start
HASH_SIZE = 32
COMPACT_AFTER = 50_000  # overlay entries before the base index is rebuilt
COMMIT_EVERY = 50_000  # snapshot rows per transaction: keeps the WAL file small
_BLOB_CHUNK = 1 << 20
TICKET_CODE_PLACEHOLDER = "#hashed"  # a stored ticket's code: only its hash is kept

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale index entries stay stale
    gen INTEGER NOT NULL,
    rid TEXT NOT NULL,
    kind TEXT NOT NULL,
    hashes BLOB NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_rid ON records(gen, rid);
CREATE TABLE IF NOT EXISTS index_blob (gen INTEGER PRIMARY KEY, prefixes BLOB, rowids BLOB);
CREATE TABLE IF NOT EXISTS index_log (
    n INTEGER PRIMARY KEY, gen INTEGER NOT NULL, prefix INTEGER NOT NULL,
    rowid INTEGER NOT NULL, added INTEGER NOT NULL
);
"""


def prefix_of(digest: bytes) -> int:
    """The signed 64-bit prefix of a credential hash, the in-memory index key."""
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class _View:
    """Everything a reader needs, swapped as one reference."""

    gen: int = 0
    version: int | None = None
    rules: SiteRules | None = None
    checkins_upto: Mapping[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None
    count: int = 0
    index: CredentialIndex = field(default_factory=CredentialIndex)
    max_rowid: int = 0


class EntitlementStore:
    """The entitlement set on disk, with a compact credential index in memory."""

    def __init__(
        self, path: str, key: bytes, reader: sqlite3.Connection, writer: sqlite3.Connection
    ) -> None:
        self._path = path
        self._key = key
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._view = _View()
        self._closed = False

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, hmac_key: bytes) -> EntitlementStore:
        """Open (or create) the store at ``path`` (``":memory:"`` for a throw-away one)."""
        name = str(path)
        try:
            reader, writer = _connect(name)
        except sqlite3.Error as exc:
            raise _open_error(name, exc) from exc
        store = cls(name, hmac_key, reader, writer)
        try:
            writer.executescript(_SCHEMA)
            store._view = store._load()
            if name != ":memory:":
                _remove_file(staged_path(name))  # a snapshot cut short by a stop or crash
                _remove_file(retired_path(name))  # a replaced file not yet deleted
        except (sqlite3.Error, ValueError, KeyError, TypeError, InvalidSet) as exc:
            store.close()
            raise _open_error(name, exc) from exc
        return store

    def _load(self) -> _View:
        meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
        if "gen" not in meta:
            return _View()
        gen = int(meta["gen"])
        # leftovers of a snapshot cut short, or of a swap the process did not finish
        # (two ranges, not !=, so that SQLite uses the (gen, rid) index)
        self._writer.execute("DELETE FROM records WHERE gen < ?", (gen,))
        self._writer.execute("DELETE FROM records WHERE gen > ?", (gen,))
        index = self._load_index(gen, meta.get("format"))
        return _view_of(self._writer, meta, index)

    def _load_index(self, gen: int, fmt: str | None) -> CredentialIndex:
        """The base blob plus the logged overlay; rebuilt from the records if missing."""
        w = self._writer
        row = w.execute("SELECT 1 FROM index_blob WHERE gen = ?", (gen,)).fetchone()
        if fmt == FORMAT and row is not None:
            log = w.execute(
                "SELECT prefix, rowid, added FROM index_log WHERE gen = ? ORDER BY n", (gen,)
            )
            index = _read_base(w, gen).replayed((p, r, bool(a)) for p, r, a in log)
            if index.dead:  # rows a delta superseded, if the process stopped before deleting
                _in_transaction(w, "DELETE FROM records WHERE rowid = ?", index.dead)
            return index
        w.execute("BEGIN IMMEDIATE")
        try:
            index = self._rebuild(gen)
            self._save_index(gen, index)
            w.execute("COMMIT")
        except BaseException:
            _rollback(w)
            raise
        return index

    def _rebuild(self, gen: int) -> CredentialIndex:
        """The base index built from the stored records of generation ``gen``."""
        return IndexBuilder.index(self._builder(gen).runs())

    def _builder(self, gen: int) -> IndexBuilder:
        """The index entries of the stored records of generation ``gen``."""
        builder = IndexBuilder()
        rows = self._writer.execute("SELECT rowid, hashes FROM records WHERE gen = ?", (gen,))
        for rowid, hashes in rows:
            for digest in _split(hashes):
                builder.add(prefix_of(digest), rowid)
        return builder

    def _save_index(self, gen: int, index: CredentialIndex) -> None:
        """Persist ``index`` as the base (inside the caller's transaction); clear the log.

        Written in chunks through incremental blob I/O, so that a 48 MB index is not copied
        twice more in memory on its way to disk.
        """
        w = self._writer
        w.execute("DELETE FROM index_blob")
        w.execute("DELETE FROM index_log")
        size = len(index.prefixes) * index.prefixes.itemsize
        w.execute(
            "INSERT INTO index_blob (gen, prefixes, rowids) VALUES (?, zeroblob(?), zeroblob(?))",
            (gen, size, size),
        )
        for column, values in (("prefixes", index.prefixes), ("rowids", index.rowids)):
            data = memoryview(values).cast("B")
            with w.blobopen("index_blob", column, gen) as blob:
                for start in range(0, len(data), _BLOB_CHUNK):
                    blob.write(data[start : start + _BLOB_CHUNK])
        self._set_meta("format", FORMAT)

    # --- reading ------------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """The set's version; None until the first snapshot."""
        return self._view.version

    @property
    def rules(self) -> SiteRules | None:
        """The site rules of the current set."""
        return self._view.rules

    @property
    def updated_at(self) -> datetime | None:
        """When the set was last updated or confirmed current (``max_offline_hours``)."""
        return self._view.updated_at

    @property
    def checkins_upto(self) -> dict[str, int]:
        """Per gateway, the check-in seq the central has counted in the credits."""
        return dict(self._view.checkins_upto)

    @property
    def record_count(self) -> int:
        """Members and tickets in the set."""
        return self._view.count

    def hash(self, key: str) -> bytes:
        """HMAC-SHA-256 of a canonical credential value with the gateway's secret."""
        mac = self._mac.copy()  # keyed once: copying skips hashing the key again
        mac.update(key.encode("utf-8"))
        return mac.digest()

    def find(self, kind: str, value: str, fmt: str | None = None) -> Record | None:
        """The member or ticket a card (``nfc``) or code (``code``) belongs to, or None."""
        key = credential_key(kind, value, fmt)
        if key is None:
            return None
        digest = self.hash(key)
        prefix = prefix_of(digest)
        while True:
            view = self._view
            missing = False
            for rowid in view.index.candidates(prefix):
                row = self._read("SELECT hashes, kind, body FROM records WHERE rowid = ?", rowid)
                if not row:
                    missing = True  # superseded after a swap: read again through the new view
                elif _holds(row[0][0], digest):
                    return _decode(row[0][1], row[0][2])
            if not missing or self._view is view:
                return None

    def member(self, member_id: str) -> Member | None:
        """A member by id."""
        record = self._by_id(member_id)
        return record if isinstance(record, Member) else None

    def ticket(self, ticket_id: str) -> Ticket | None:
        """A ticket by id."""
        record = self._by_id(ticket_id)
        return record if isinstance(record, Ticket) else None

    def _by_id(self, rid: str) -> Record | None:
        while True:
            view = self._view
            rows = self._read(
                "SELECT rowid, kind, body FROM records WHERE gen = ? AND rid = ? AND rowid <= ? "
                "ORDER BY rowid DESC",
                view.gen,
                rid,
                view.max_rowid,
            )
            for rowid, kind, body in rows:
                if rowid not in view.index.dead:
                    return _decode(kind, body)
            if self._view is view:
                return None

    def _read(self, sql: str, *args: Any) -> list[Any]:
        try:
            with self._read_lock:
                return self._reader.execute(sql, args).fetchall()
        except sqlite3.ProgrammingError as exc:
            raise StoreError(f"entitlement store at {self._path} is closed ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise _damaged(self._path, exc) from exc

    # --- writing ------------------------------------------------------------------------

    def replace(
        self,
        version: int,
        rules: SiteRules,
        records: Iterable[Record],
        checkins_upto: dict[str, int],
        at: datetime,
    ) -> list[str]:
        """Replace the whole set (a snapshot), atomically for readers; durable on return.

        Returns a note for each credential that two records were given (the later keeps it).
        """
        with self._write_lock:
            old = self._view
            gen = old.gen + 1
            try:
                count, last, index, notes = self._write_generation(
                    gen, version, rules, records, checkins_upto, at
                )
            except BaseException as exc:
                _rollback(self._writer)
                self._discard(gen)
                if isinstance(exc, sqlite3.Error):
                    raise self._write_error(exc) from exc
                raise
            self._view = _View(gen, version, rules, dict(checkins_upto), at, count, index, last)
            self._quietly("DELETE FROM records WHERE gen < ?", [(gen,)])
            _release_freed_memory()
            return notes

    def _write_generation(
        self,
        gen: int,
        version: int,
        rules: SiteRules,
        records: Iterable[Record],
        checkins_upto: dict[str, int],
        at: datetime,
    ) -> tuple[int, int, CredentialIndex, list[str]]:
        """Write the rows of ``gen`` beside the current ones; the last commit switches over.

        Rows are committed in batches (readers never look at ``gen`` before the switch, and
        a start-up after a crash deletes them), so the WAL file stays small.
        """
        w = self._writer
        w.execute("DELETE FROM records WHERE gen >= ?", (gen,))
        w.execute("BEGIN IMMEDIATE")
        builder = IndexBuilder()
        rowid = _last_rowid(self._writer)
        inserted = uncommitted = 0
        for batch in _batches(records, 2000):
            rows = []
            for record in batch:
                rowid += 1
                rid, kind, hashes, body = self._stored(record)
                rows.append((rowid, gen, rid, kind, hashes, body))
                for digest in _split(hashes):
                    builder.add(prefix_of(digest), rowid)
            w.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
            inserted += len(rows)
            uncommitted += len(rows)
            if uncommitted >= COMMIT_EVERY:
                w.execute("COMMIT")
                w.execute("BEGIN IMMEDIATE")
                uncommitted = 0
        count, index, notes = self._seal(gen, builder, inserted, version, rules, checkins_upto, at)
        w.execute("COMMIT")
        return count, rowid, index, notes

    def _seal(
        self,
        gen: int,
        builder: IndexBuilder,
        inserted: int,
        version: int,
        rules: SiteRules,
        checkins_upto: Mapping[str, int],
        at: datetime,
    ) -> tuple[int, CredentialIndex, list[str]]:
        """Finish the rows of ``gen`` (inside the caller's transaction): one record per id,
        each credential with the last record given it, the index and the meta saved.

        Returns the record count, the index and a note per credential given twice.
        """
        superseded = self._drop_repeated_ids(gen)
        notes: list[str] = []
        index = IndexBuilder.index(self._settled(builder.runs(), superseded, notes))
        count = inserted - len(superseded)
        self._save_index(gen, index)
        self._write_meta(gen=gen, version=version, rules=rules, upto=checkins_upto, at=at)
        self._set_meta("count", str(count))
        return count, index, notes

    def _drop_repeated_ids(self, gen: int) -> set[int]:
        """A set that lists an id twice keeps the later record; returns the dropped rowids."""
        repeated = self._writer.execute(
            "SELECT rid, MAX(rowid) FROM records WHERE gen = ? GROUP BY rid HAVING COUNT(*) > 1",
            (gen,),
        ).fetchall()
        dropped: set[int] = set()
        for rid, keep in repeated:
            rows = self._writer.execute(
                "SELECT rowid FROM records WHERE gen = ? AND rid = ? AND rowid != ?",
                (gen, rid, keep),
            )
            dropped.update(r for (r,) in rows)
        _many(self._writer, "DELETE FROM records WHERE rowid = ?", dropped)
        return dropped

    def _settled(
        self, runs: Iterable[tuple[int, list[int]]], dropped: set[int], notes: list[str]
    ) -> Iterator[tuple[int, list[int]]]:
        """Sorted index runs with each credential left only with the last record given it."""
        for prefix, rowids in runs:
            live = [r for r in rowids if r not in dropped] if dropped else rowids
            if len(live) > 1:
                live = self._share_out(prefix, live, notes)
            if live:
                yield prefix, live

    def _share_out(self, prefix: int, rowids: list[int], notes: list[str]) -> list[int]:
        """Rows whose credentials share a prefix: the same credential, or a collision.

        Of the rows holding the same full hash, the last one (in set order) keeps it; the
        others lose it and a note says so. Different hashes (a collision) all stay.
        """
        rows: dict[int, tuple[str, bytes]] = {}
        for rowid in sorted(set(rowids)):
            found = self._writer.execute(
                "SELECT rid, hashes FROM records WHERE rowid = ?", (rowid,)
            ).fetchone()
            rows[rowid] = (found[0], found[1])
        holder: dict[bytes, int] = {}
        for rowid in rows:  # in set order
            for digest in _split(rows[rowid][1]):
                if prefix_of(digest) != prefix:
                    continue
                earlier = holder.get(digest)
                if earlier is not None and earlier != rowid:
                    rid, hashes = rows[earlier]
                    rows[earlier] = (rid, _without(hashes, digest))
                    self._writer.execute(
                        "UPDATE records SET hashes = ? WHERE rowid = ?", (rows[earlier][1], earlier)
                    )  # a row of the new generation: no reader sees it yet
                    notes.append(_moved(rid, rows[rowid][0]))
                holder[digest] = rowid
        return sorted(set(holder.values()))

    def apply_delta(
        self,
        version: int,
        base: int | None,
        upsert: Sequence[Record],
        delete: Sequence[str],
        rules: SiteRules | None,
        checkins_upto: dict[str, int] | None,
        at: datetime,
    ) -> list[str]:
        """Apply a delta on top of version ``base``, atomically for readers; durable on return.

        Raises :class:`StoreError` (and changes nothing) when ``base`` is not the store's
        version. Returns a note for each credential that moved to another record.
        """
        with self._write_lock:
            old = self._view
            if old.version is None or base != old.version:
                have = "no set yet" if old.version is None else f"version {old.version}"
                raise StoreError(
                    f"delta {version} is based on version {base}, but the store has {have}: "
                    "it was not applied; ask the central system to sync"
                )
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                new = self._write_delta(old, version, upsert, delete, rules, checkins_upto, at)
                self._writer.execute("COMMIT")
            except BaseException as exc:
                _rollback(self._writer)
                if isinstance(exc, sqlite3.Error):
                    raise self._write_error(exc) from exc
                raise
            view, notes = new
            self._view = view
            superseded = view.index.dead - old.index.dead
            self._quietly("DELETE FROM records WHERE rowid = ?", [(r,) for r in superseded])
            if view.index.overlay_size > COMPACT_AFTER:
                self._compact()
            return notes

    def _write_delta(
        self,
        old: _View,
        version: int,
        upsert: Sequence[Record],
        delete: Sequence[str],
        rules: SiteRules | None,
        checkins_upto: dict[str, int] | None,
        at: datetime,
    ) -> tuple[_View, list[str]]:
        """Write the delta's rows and log inside the caller's transaction; the new view."""
        position = {r.id: i for i, r in enumerate(upsert)}
        final = [r for i, r in enumerate(upsert) if position[r.id] == i]  # an id twice: the later
        kill: set[int] = set()
        for rid in {*delete, *(r.id for r in final)}:
            kill.update(self._live_rowids(old, rid))
        removed = len(kill)
        rows, notes = self._moves(old, final, kill)
        add: list[tuple[int, int]] = []
        last = old.max_rowid
        for rid, kind, hashes, body in rows:
            cur = self._writer.execute(
                "INSERT INTO records (gen, rid, kind, hashes, body) VALUES (?, ?, ?, ?, ?)",
                (old.gen, rid, kind, hashes, body),
            )
            last = int(cur.lastrowid or 0)
            add.extend((prefix_of(d), last) for d in _split(hashes))
        self._writer.executemany(
            "INSERT INTO index_log (gen, prefix, rowid, added) VALUES (?, ?, ?, ?)",
            [(old.gen, 0, r, 0) for r in sorted(kill)] + [(old.gen, p, r, 1) for p, r in add],
        )
        new_rules = rules or old.rules
        upto = dict(checkins_upto if checkins_upto is not None else old.checkins_upto)
        count = old.count - removed + len(final)
        assert new_rules is not None
        self._write_meta(gen=old.gen, version=version, rules=new_rules, upto=upto, at=at)
        self._set_meta("count", str(count))
        index = old.index.changed(add, kill)
        return _View(old.gen, version, new_rules, upto, at, count, index, last), notes

    def _moves(
        self, old: _View, final: list[Record], kill: set[int]
    ) -> tuple[list[tuple[str, str, bytes, str]], list[str]]:
        """The rows to insert: the delta's records, and copies of records that lost a credential.

        A credential already held by another record (or by an earlier record of this delta)
        moves to the later one: the holder is written again without it (``kill`` gets its
        old row), so the current view's rows never change under a reader.
        """
        notes: list[str] = []
        rows: list[list[Any]] = []  # [rid, kind, hashes, body], changed as credentials move
        copies: list[list[Any]] = []
        taken: dict[bytes, list[Any]] = {}  # credential hash -> the row to be written with it
        for record in final:
            row: list[Any] = list(self._stored(record))
            for digest in _split(row[2]):
                holder = taken.get(digest)
                if holder is None and (holder := self._holder(old, digest, kill)) is not None:
                    copies.append(holder)
                    for other in _split(holder[2]):
                        taken.setdefault(other, holder)
                if holder is not None:
                    holder[2] = _without(holder[2], digest)
                    notes.append(_moved(holder[0], row[0]))
                taken[digest] = row
            rows.append(row)
        return [(r[0], r[1], r[2], r[3]) for r in rows + copies], notes

    def _holder(self, old: _View, digest: bytes, kill: set[int]) -> list[Any] | None:
        """A copy of the live row of the current set holding ``digest`` (its row dies)."""
        for rowid in old.index.candidates(prefix_of(digest)):
            if rowid in kill:
                continue  # deleted or replaced by this delta, or already copied
            row = self._writer.execute(
                "SELECT rid, kind, hashes, body FROM records WHERE rowid = ?", (rowid,)
            ).fetchone()
            if row is not None and _holds(row[2], digest):
                kill.add(rowid)
                return list(row)
        return None

    def _live_rowids(self, view: _View, rid: str) -> list[int]:
        rows = self._writer.execute(
            "SELECT rowid FROM records WHERE gen = ? AND rid = ?", (view.gen, rid)
        )
        return [r for (r,) in rows if r not in view.index.dead]

    def touch(self, at: datetime) -> None:
        """The central system confirmed the current version (a ``time`` envelope)."""
        with self._write_lock:
            old = self._view
            if old.version is None:
                return
            try:
                self._set_meta("updated_at", at.isoformat())
            except sqlite3.Error as exc:
                raise self._write_error(exc) from exc
            self._view = dataclasses.replace(old, updated_at=at)

    def _write_meta(
        self, *, gen: int, version: int, rules: SiteRules, upto: Mapping[str, int], at: datetime
    ) -> None:
        self._writer.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("gen", str(gen)),
                ("version", str(version)),
                ("rules", rules.model_dump_json(by_alias=True)),
                ("checkins_upto", json.dumps(dict(upto))),
                ("updated_at", at.isoformat()),
            ],
        )

    def _set_meta(self, key: str, value: str) -> None:
        self._writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _compact(self) -> None:
        """Fold the overlay into a new base index (built and saved while readers go on)."""
        view = self._view
        w = self._writer
        try:
            w.execute("BEGIN IMMEDIATE")
            _many(w, "DELETE FROM records WHERE rowid = ?", view.index.dead)
            index = self._rebuild(view.gen)
            self._save_index(view.gen, index)
            w.execute("COMMIT")
        except sqlite3.Error:
            _rollback(w)
            return  # the overlay stays valid; compaction is tried again after the next delta
        self._view = dataclasses.replace(view, index=index)

    def _discard(self, gen: int) -> None:
        """Remove the rows of a snapshot that failed part-way (some batches were committed)."""
        self._quietly("DELETE FROM records WHERE gen >= ?", [(gen,)])

    def _quietly(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Clean-up after a swap: if it fails, the next start-up removes the rows."""
        try:
            _in_transaction(self._writer, sql, [r[0] for r in rows])
        except sqlite3.Error:
            _rollback(self._writer)

    # --- a whole new set written elsewhere ----------------------------------------------

    def staging(self) -> Staging:
        """Where and how a :class:`StagedSet` for this store is to be written."""
        self._need_file()
        with self._write_lock:
            gen, first_rowid = self._view.gen + 1, _last_rowid(self._writer)
        return Staging(str(staged_path(self._path)), self._key, gen, first_rowid)

    def adopt(self, staged: Path | str) -> None:
        """Switch to the finished :class:`StagedSet` at ``staged``, atomically for readers and
        durably: its file takes the place of the store's.

        The new view is read before anything is locked. Then, for a few milliseconds, readers
        wait while the connections are closed, the file moved in place (with the old WAL
        gone: it belongs to the old file) and opened again. Raises :class:`StoreError` and
        keeps the current set when the staged file is not a finished set newer than it.
        """
        staged = str(staged)
        self._need_file()
        try:
            conn = sqlite3.connect(f"file:{staged}?mode=ro", uri=True)
            try:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                view = _view_of(conn, meta, _read_base(conn, int(meta["gen"])))
            finally:
                conn.close()
        except (sqlite3.Error, ValueError, KeyError, TypeError, InvalidSet) as exc:
            raise StoreError(f"staged set {staged} cannot be read ({exc}): not applied") from exc
        old = retired_path(self._path)
        with self._write_lock:
            if view.gen <= self._view.gen:
                raise StoreError(f"staged set {staged} is older than the store: not applied")
            with self._read_lock:
                self._reader.close()
                self._writer.close()
                try:
                    for suffix in ("-wal", "-shm"):
                        _remove_file(self._path + suffix)
                    # Freeing a big file's blocks takes a while (180 ms for 700 MB): keep a
                    # second name for the old file so the rename does not free them here,
                    # with readers waiting, and delete it after.
                    with contextlib.suppress(OSError):
                        os.link(self._path, old)
                    os.replace(staged, self._path)
                    _fsync_directory(self._path)
                    self._view = view
                finally:
                    try:
                        self._reader, self._writer = _connect(self._path)
                    except sqlite3.Error as exc:
                        self._closed = True
                        raise _open_error(self._path, exc) from exc
        _remove_file(old)
        _release_freed_memory()

    def _need_file(self) -> None:
        if self._path == ":memory:":
            raise StoreError("an in-memory store cannot take a staged set (it has no file)")

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"entitlement store at {self._path} could not be written ({exc}); nothing was "
            "applied: is the disk full or failing? The update will be asked for again"
        )

    def _stored(self, record: Record) -> tuple[str, str, bytes, str]:
        """(id, kind, credential hashes, JSON without card/code values) of a record."""
        hashes = b"".join(dict.fromkeys(self.hash(k) for k in record.credential_keys()))
        if isinstance(record, Member):
            cards = {i for i, c in enumerate(record.credentials) if c.kind != "phone"}
            body = record.model_dump_json(by_alias=True, exclude={"credentials": cards})
            return record.member, "member", hashes, body
        body = record.model_copy(update={"code": TICKET_CODE_PLACEHOLDER}).model_dump_json(
            by_alias=True
        )
        return record.ticket, "ticket", hashes, body

    def close(self) -> None:
        """Close both connections (a second call does nothing)."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            self._writer.close()


@dataclass(frozen=True)
class Staging:
    """What a :class:`StagedSet` needs to continue a store: its file, the HMAC key, and the
    generation and rowid to start from (so that no row of the new file has the rowid of a
    row of the current one: a reader still on the old view finds nothing and reads again)."""

    path: str
    key: bytes = field(repr=False)
    gen: int
    first_rowid: int


class StagedSet:
    """A whole new set written to a fresh store file, chunk by chunk, in any order.

    The snapshot builder (:mod:`gateway.sync.snapshots`, a process of its own) fills one as
    a snapshot's chunks arrive; the gateway then adopts the finished file
    (:meth:`EntitlementStore.adopt`). A record's rowid is its place in the set (chunk, then
    position), so "the later record wins" works as in :meth:`EntitlementStore.replace`. The file
    is written without a journal or fsync while it is being filled (a failure discards it
    whole); :meth:`finish` makes it durable.
    """

    def __init__(self, staging: Staging, *, chunk_size: int) -> None:
        self.path = staging.path
        self.gen = staging.gen
        self.chunks: set[int] = set()
        self._first = staging.first_rowid
        self._chunk_size = chunk_size
        self._inserted = 0
        _remove_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MiB
        conn.executescript(_SCHEMA)
        self._store = EntitlementStore(self.path, staging.key, conn, conn)

    def add(self, chunk: int, records: Sequence[Record]) -> None:
        """Write one chunk's records (validated already)."""
        if len(records) > self._chunk_size:
            raise ValueError(f"a chunk holds at most {self._chunk_size} records")
        base = self._first + chunk * self._chunk_size + 1
        rows = [(base + i, self.gen, *self._store._stored(r)) for i, r in enumerate(records)]
        w = self._store._writer
        w.execute("BEGIN")
        w.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
        w.execute("COMMIT")
        self.chunks.add(chunk)
        self._inserted += len(rows)

    def finish(
        self, version: int, rules: SiteRules, checkins_upto: Mapping[str, int], at: datetime
    ) -> tuple[int, list[str]]:
        """Index and seal the set, make the file durable and close it.

        Returns the record count and a note per credential that two records were given.
        """
        store = self._store
        w = store._writer
        w.execute("BEGIN")
        builder = store._builder(self.gen)
        count, _, notes = store._seal(
            self.gen, builder, self._inserted, version, rules, checkins_upto, at
        )
        w.execute("COMMIT")
        store.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return count, notes

    def discard(self) -> None:
        """Close and delete the file (a snapshot refused or given up)."""
        self._store.close()
        _remove_file(self.path)


def staged_path(store_path: Path | str) -> Path:
    """Where a new set for the store at ``store_path`` is written before it is adopted."""
    return Path(f"{store_path}.next")


def retired_path(store_path: Path | str) -> Path:
    """The second name a replaced store file has until it is deleted."""
    return Path(f"{store_path}.old")


# --- helpers -------------------------------------------------------------------------------


def _view_of(conn: sqlite3.Connection, meta: dict[str, str], index: CredentialIndex) -> _View:
    """The view of the set whose ``meta`` rows were read from ``conn``."""
    gen = int(meta["gen"])
    count = meta.get("count")
    if count is None:
        count = conn.execute("SELECT COUNT(*) FROM records WHERE gen = ?", (gen,)).fetchone()[0]
    return _View(
        gen=gen,
        version=int(meta["version"]),
        rules=parse_rules(json.loads(meta["rules"])),
        checkins_upto=dict(json.loads(meta["checkins_upto"])),
        updated_at=datetime.fromisoformat(meta["updated_at"]),
        count=int(count),
        index=index,
        max_rowid=_last_rowid(conn),
    )


def _read_base(conn: sqlite3.Connection, gen: int) -> CredentialIndex:
    """The persisted base index of ``gen``, read in chunks straight into arrays."""
    columns = []
    for column in ("prefixes", "rowids"):
        values = array("q")
        with conn.blobopen("index_blob", column, gen, readonly=True) as blob:
            while chunk := blob.read(_BLOB_CHUNK):
                values.frombytes(chunk)
        columns.append(values)
    if len(columns[0]) != len(columns[1]):
        raise ValueError("the persisted credential index is inconsistent")
    return CredentialIndex(columns[0], columns[1])


def _last_rowid(conn: sqlite3.Connection) -> int:
    """The highest rowid ever used (deleted ones included: rowids are never reused)."""
    row = conn.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0), "
        "COALESCE((SELECT MAX(rowid) FROM records), 0))"
    ).fetchone()
    return int(row[0])


def _remove_file(path: Path | str) -> None:
    Path(path).unlink(missing_ok=True)


def _fsync_directory(path: str) -> None:
    """Make a rename in the directory of ``path`` durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(name: str) -> tuple[sqlite3.Connection, sqlite3.Connection]:
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


def _release_freed_memory() -> None:
    """Give the heap freed after a snapshot back to the system (glibc keeps it otherwise).

    Building the index of a million members frees some hundred MB in small pieces; on a
    1 GB gateway that memory should not stay with this process until it restarts.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def _damaged(path: str, exc: BaseException) -> StoreError:
    return StoreError(
        f"entitlement store at {path} is damaged ({exc}): delete it (and its -wal and -shm "
        "files); the gateway will fetch a fresh snapshot from the central system"
    )


def _open_error(path: str, exc: BaseException) -> StoreError:
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
    return _damaged(path, exc)


def _split(blob: bytes | None) -> list[bytes]:
    if not blob:
        return []
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def _holds(blob: bytes, digest: bytes) -> bool:
    return any(hmac.compare_digest(h, digest) for h in _split(blob))


def _without(blob: bytes, digest: bytes) -> bytes:
    return b"".join(h for h in _split(blob) if h != digest)


def _moved(earlier: str, later: str) -> str:
    """The note for a credential given to two records (it never names the value)."""
    return f"a card or code of {earlier} was also given to {later}: {later} keeps it"


def _decode(kind: str, body: str) -> Record:
    # trusted data (validated before it was stored): no InvalidSet wrapping needed
    if kind == "member":
        return Member.model_validate_json(body, strict=False)
    return Ticket.model_validate_json(body, strict=False)


def _batches(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _many(conn: sqlite3.Connection, sql: str, rowids: Iterable[int]) -> None:
    conn.executemany(sql, ((r,) for r in rowids))


def _in_transaction(conn: sqlite3.Connection, sql: str, rowids: Iterable[int]) -> None:
    """``sql`` for each rowid in one transaction (one fsync, not one per row)."""
    conn.execute("BEGIN IMMEDIATE")
    _many(conn, sql, rowids)
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
