"""The entitlement store: site rules, members and tickets with a version (SQLite, WAL).

Its seams, one module each: how a record is kept (:mod:`gateway.record_codec`, credential
values only as HMAC), the credential index's persistence (:mod:`gateway.store_index`),
writing and reading a whole generation (:mod:`gateway.store_generation`), the files and
their swap (:mod:`gateway.store_files`), and a new set written elsewhere
(:mod:`gateway.staged_set`).

Memory: records stay on disk and are decoded on demand; only the compact
:class:`~gateway.credential_index.CredentialIndex` lives in memory. Its sorted base is
persisted as a blob and every change since as a log written in the same transaction as
the delta, so start-up reads no million rows.

Atomicity: readers (the event loop) use one connection, the writer (usually a worker
thread) another. Rows of the current set are never changed in place: a write adds new
rows beside them, commits, swaps one Python reference (:class:`StoreView`), and only then
deletes the superseded rows. A reader that finds a row gone after such a swap reads again
through the new view, so it sees the old set or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from gateway import store_generation, store_index
from gateway.credential_index import CredentialIndex, IndexBuilder
from gateway.entitlements import Member, SiteRules, Ticket, credential_key
from gateway.errors import InvalidSet, StoreError
from gateway.gil import short_turns_while_computing
from gateway.record_codec import (
    EncodedRecords,
    Record,
    RecordCodec,
    StoredRow,
    decode,
    holds,
    index_entries,
    moved_note,
    prefix_of,
    split_hashes,
    without,
)
from gateway.staged_set import StagedSet, Staging
from gateway.store_files import (
    SCHEMA,
    connect,
    damaged,
    in_transaction,
    last_rowid,
    many,
    open_error,
    release_freed_memory,
    remove_file,
    retire,
    retired_path,
    rollback,
    staged_path,
    swap_in,
)
from gateway.store_generation import StoreView, read_meta, view_of

__all__ = [
    "EntitlementStore",
    "Record",
    "StagedSet",
    "Staging",
    "prefix_of",
    "retired_path",
    "staged_path",
]

_Item = TypeVar("_Item")

_RIDS_PER_QUERY = 500  # records looked up at once (SQLite allows 32,766 parameters)
COMPACT_AFTER = 50_000  # overlay entries before the base index is rebuilt
COMMIT_EVERY = 50_000  # snapshot rows per transaction: keeps the WAL file small
STAGED_CHUNK = 2000  # records per staged chunk when a set is loaded in-process


class EntitlementStore:
    """The entitlement set on disk, with a compact credential index in memory."""

    def __init__(
        self, path: str, key: bytes, reader: sqlite3.Connection, writer: sqlite3.Connection
    ) -> None:
        self._path = path
        self._codec = RecordCodec(key)
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._view = StoreView()
        self._closed = False

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, hmac_key: bytes) -> EntitlementStore:
        """Open (or create) the store at ``path`` (``":memory:"`` for a throw-away one)."""
        name = str(path)
        try:
            reader, writer = connect(name)
        except sqlite3.Error as exc:
            raise open_error(name, exc) from exc
        store = cls(name, hmac_key, reader, writer)
        try:
            writer.executescript(SCHEMA)
            store._view = store._load()
            if name != ":memory:":
                remove_file(staged_path(name))  # a snapshot cut short by a stop or crash
                remove_file(retired_path(name))  # a replaced file not yet deleted
        except (sqlite3.Error, ValueError, KeyError, TypeError, InvalidSet) as exc:
            store.close()
            raise open_error(name, exc) from exc
        return store

    def _load(self) -> StoreView:
        meta = read_meta(self._writer)
        if "gen" not in meta:
            return StoreView()
        gen = int(meta["gen"])
        # leftovers of a snapshot cut short, or of a swap the process did not finish
        # (two ranges, not !=, so that SQLite uses the (gen, rid) index)
        self._writer.execute("DELETE FROM records WHERE gen < ?", (gen,))
        self._writer.execute("DELETE FROM records WHERE gen > ?", (gen,))
        index = self._load_index(gen, meta.get("format"))
        return view_of(self._writer, meta, index)

    def _load_index(self, gen: int, fmt: str | None) -> CredentialIndex:
        """The base blob plus the logged overlay; rebuilt from the records if missing."""
        w = self._writer
        if store_index.has_base(w, gen, fmt):
            index = store_index.read_base(w, gen).replayed(store_index.read_log(w, gen))
            if index.dead:  # rows a delta superseded, if the process stopped before deleting
                in_transaction(w, "DELETE FROM records WHERE rowid = ?", index.dead)
            return index
        w.execute("BEGIN IMMEDIATE")
        try:
            index = store_index.rebuilt(w, gen)
            store_index.save(w, gen, index)
            w.execute("COMMIT")
        except BaseException:
            rollback(w)
            raise
        return index

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

    @property
    def key(self) -> bytes:
        """The HMAC key of credential values, for a worker process encoding records."""
        return self._codec.key

    def hash(self, key: str) -> bytes:
        """HMAC-SHA-256 of a canonical credential value with the gateway's secret."""
        return self._codec.hash(key)

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
                elif holds(row[0][0], digest):
                    return decode(row[0][1], row[0][2])
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
                    return decode(kind, body)
            if self._view is view:
                return None

    def _read(self, sql: str, *args: Any) -> list[Any]:
        try:
            with self._read_lock:
                return self._reader.execute(sql, args).fetchall()
        except sqlite3.ProgrammingError as exc:
            raise StoreError(f"entitlement store at {self._path} is closed ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise damaged(self._path, exc) from exc

    # --- a whole new set ----------------------------------------------------------------

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
        A store with a file takes the snapshot builder's path: the set is written to a
        :class:`StagedSet` and adopted; an in-memory one writes a new generation beside the
        current one.
        """
        if self._path != ":memory:":
            return self._replace_staged(version, rules, records, checkins_upto, at)
        with self._write_lock:
            gen = self._view.gen + 1
            try:
                count, last, index, notes = self._write_generation(
                    gen, version, rules, records, checkins_upto, at
                )
            except BaseException as exc:
                rollback(self._writer)
                self._discard(gen)
                if isinstance(exc, sqlite3.Error):
                    raise self._write_error(exc) from exc
                raise
            upto = dict(checkins_upto)
            self._view = StoreView(gen, version, rules, upto, at, count, index, last)
            self._quietly("DELETE FROM records WHERE gen < ?", [(gen,)])
            release_freed_memory()
            return notes

    def _replace_staged(
        self,
        version: int,
        rules: SiteRules,
        records: Iterable[Record],
        checkins_upto: dict[str, int],
        at: datetime,
    ) -> list[str]:
        staged = StagedSet(self.staging(), chunk_size=STAGED_CHUNK)
        try:
            with _collector_paused():
                for chunk, batch in enumerate(_batches(records, STAGED_CHUNK)):
                    staged.add(chunk, batch)
                _, notes = staged.finish(version, rules, checkins_upto, at)
        except sqlite3.Error as exc:
            staged.discard()
            raise self._write_error(exc) from exc
        except BaseException:
            staged.discard()
            raise
        self.adopt(staged.path)
        release_freed_memory()  # what validating and encoding the records left behind
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
        first = last_rowid(w) + 1
        inserted = uncommitted = 0
        for batch in _batches(records, 2000):
            rows = [self._codec.stored(record) for record in batch]
            builder.extend(*index_entries(first + inserted, [row[2] for row in rows]))
            store_generation.insert_rows(w, gen, first + inserted, rows)
            inserted += len(rows)
            uncommitted += len(rows)
            if uncommitted >= COMMIT_EVERY:
                w.execute("COMMIT")
                w.execute("BEGIN IMMEDIATE")
                uncommitted = 0
        count, index, notes = store_generation.seal(
            w,
            gen,
            builder,
            inserted,
            version=version,
            rules=rules,
            checkins_upto=checkins_upto,
            at=at,
        )
        w.execute("COMMIT")
        return count, first + inserted - 1, index, notes

    # --- a delta --------------------------------------------------------------------------

    def apply_delta(
        self,
        version: int,
        base: int | None,
        upsert: Sequence[Record] | EncodedRecords,
        delete: Sequence[str],
        rules: SiteRules | None,
        checkins_upto: dict[str, int] | None,
        at: datetime,
    ) -> list[str]:
        """Apply a delta on top of version ``base``, atomically for readers; durable on return.

        ``upsert``: the records, or the same already encoded with this store's key
        (:attr:`key`) by a worker process. Raises :class:`StoreError` (and changes nothing)
        when ``base`` is not the store's version. Returns a note for each credential that
        moved to another record.
        """
        # The cyclic collector waits until the delta is in: its rows made it run here, in the
        # store's thread, holding the interpreter lock while the doors' loop waited
        # (collections of 5-8.5 ms seen on 2026-12-02 with a 20,000-record delta); they are
        # freed by reference counting anyway.
        # Its Python work also lets the doors' loop have the interpreter lock after 0.1 ms
        # rather than 1 ms whenever the loop wants it (gateway.gil).
        with self._write_lock, _collector_paused(), short_turns_while_computing():
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
                rollback(self._writer)
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
        old: StoreView,
        version: int,
        upsert: Sequence[Record] | EncodedRecords,
        delete: Sequence[str],
        rules: SiteRules | None,
        checkins_upto: dict[str, int] | None,
        at: datetime,
    ) -> tuple[StoreView, list[str]]:
        """Write the delta's rows and log inside the caller's transaction; the new view."""
        encoded: list[StoredRow] = (
            list(upsert.rows())
            if isinstance(upsert, EncodedRecords)
            else [self._codec.stored(r) for r in upsert]
        )
        position = {row[0]: i for i, row in enumerate(encoded)}
        final = [r for i, r in enumerate(encoded) if position[r[0]] == i]  # an id twice: the later
        kill, replaced_hashes = self._live_rows(old, {*delete, *(r[0] for r in final)})
        removed = len(kill)
        rows, notes = self._moves(old, final, kill, replaced_hashes)
        # Rowids given here rather than read back row by row (lastrowid): one executemany,
        # which lets go of the interpreter lock at every row, so the doors' loop is not kept
        # waiting by a Python loop of 20,000 inserts. The table is AUTOINCREMENT and
        # last_rowid counts deleted rows too: no rowid is ever used twice.
        first = last_rowid(self._writer) + 1
        self._writer.executemany(
            "INSERT INTO records (rowid, gen, rid, kind, hashes, body) VALUES (?, ?, ?, ?, ?, ?)",
            ((rowid, old.gen, *row) for rowid, row in enumerate(rows, first)),
        )
        last = first + len(rows) - 1 if rows else old.max_rowid
        prefixes, rowids = index_entries(first, [row[2] for row in rows])
        add = list(zip(prefixes, rowids, strict=True))
        store_index.log_changes(self._writer, old.gen, kill, add)
        new_rules = rules or old.rules
        upto = dict(checkins_upto if checkins_upto is not None else old.checkins_upto)
        count = old.count - removed + len(final)
        assert new_rules is not None
        store_generation.write_meta(
            self._writer, gen=old.gen, version=version, rules=new_rules, upto=upto, at=at,
            count=count,
        )  # fmt: skip
        index = old.index.changed(add, kill)
        return StoreView(old.gen, version, new_rules, upto, at, count, index, last), notes

    def _moves(
        self, old: StoreView, final: list[StoredRow], kill: set[int], replaced: set[bytes]
    ) -> tuple[list[StoredRow], list[str]]:
        """The rows to insert: the delta's records, and copies of records that lost a credential.

        A credential already held by another record (or by an earlier record of this delta)
        moves to the later one: the holder is written again without it (``kill`` gets its
        old row), so the current view's rows never change under a reader. A credential in
        ``replaced`` (held by a row this delta replaces or deletes) needs no search: a set
        gives each credential to one record at most (a snapshot's builder and every delta
        see to it), so no other live row holds it. Most of a delta is members updated with
        the cards they had: their credentials are not looked up one by one.
        """
        notes: list[str] = []
        rows: list[list[Any]] = []  # [rid, kind, hashes, body], changed as credentials move
        copies: list[list[Any]] = []
        taken: dict[bytes, list[Any]] = {}  # credential hash -> the row to be written with it
        for stored in final:
            row: list[Any] = list(stored)
            for digest in split_hashes(row[2]):
                holder = taken.get(digest)
                if (
                    holder is None
                    and digest not in replaced
                    and (holder := self._holder(old, digest, kill)) is not None
                ):
                    copies.append(holder)
                    for other in split_hashes(holder[2]):
                        taken.setdefault(other, holder)
                if holder is not None:
                    holder[2] = without(holder[2], digest)
                    notes.append(moved_note(holder[0], row[0]))
                taken[digest] = row
            rows.append(row)
        return [(r[0], r[1], r[2], r[3]) for r in rows + copies], notes

    def _holder(self, old: StoreView, digest: bytes, kill: set[int]) -> list[Any] | None:
        """A copy of the live row of the current set holding ``digest`` (its row dies)."""
        for rowid in old.index.candidates(prefix_of(digest)):
            if rowid in kill:
                continue  # deleted or replaced by this delta, or already copied
            row = self._writer.execute(
                "SELECT rid, kind, hashes, body FROM records WHERE rowid = ?", (rowid,)
            ).fetchone()
            if row is not None and holds(row[2], digest):
                kill.add(rowid)
                return list(row)
        return None

    def _live_rows(self, view: StoreView, rids: set[str]) -> tuple[set[int], set[bytes]]:
        """The rowids of the live rows of records ``rids``, and the credentials they hold;
        read a few hundred records at a query, not one."""
        rowids: set[int] = set()
        held: set[bytes] = set()
        for part in _batches(rids, _RIDS_PER_QUERY):
            found = self._writer.execute(
                "SELECT rowid, hashes FROM records WHERE gen = ? AND rid IN "
                f"({', '.join('?' * len(part))})",
                (view.gen, *part),
            )
            for rowid, hashes in found:
                if rowid not in view.index.dead:
                    rowids.add(rowid)
                    held.update(split_hashes(hashes))
        return rowids, held

    def touch(self, at: datetime) -> None:
        """The central system confirmed the current version (a ``time`` envelope)."""
        with self._write_lock:
            old = self._view
            if old.version is None:
                return
            try:
                store_generation.set_meta(self._writer, "updated_at", at.isoformat())
            except sqlite3.Error as exc:
                raise self._write_error(exc) from exc
            self._view = dataclasses.replace(old, updated_at=at)

    def _compact(self) -> None:
        """Fold the overlay into a new base index (built and saved while readers go on)."""
        view = self._view
        w = self._writer
        try:
            w.execute("BEGIN IMMEDIATE")
            many(w, "DELETE FROM records WHERE rowid = ?", view.index.dead)
            index = view.index.compacted()
            store_index.save(w, view.gen, index)
            w.execute("COMMIT")
        except sqlite3.Error:
            rollback(w)
            return  # the overlay stays valid; compaction is tried again after the next delta
        self._view = dataclasses.replace(view, index=index)

    def _discard(self, gen: int) -> None:
        """Remove the rows of a snapshot that failed part-way (some batches were committed)."""
        self._quietly("DELETE FROM records WHERE gen >= ?", [(gen,)])

    def _quietly(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Clean-up after a swap: if it fails, the next start-up removes the rows."""
        try:
            in_transaction(self._writer, sql, [r[0] for r in rows])
        except sqlite3.Error:
            rollback(self._writer)

    # --- a whole new set written elsewhere ----------------------------------------------

    def staging(self) -> Staging:
        """Where and how a :class:`StagedSet` for this store is to be written."""
        self._need_file()
        with self._write_lock:
            gen, first_rowid = self._view.gen + 1, last_rowid(self._writer)
        return Staging(str(staged_path(self._path)), self._codec.key, gen, first_rowid)

    def adopt(self, staged: Path | str) -> None:
        """Switch to the finished :class:`StagedSet` at ``staged``, atomically for readers and
        durably: its file takes the place of the store's.

        Everything slow is done while readers go on: the new view is read first, and the
        old file's WAL is checkpointed (so that closing its last connection is quick). Then,
        for a few milliseconds, readers wait while the connections are closed, the file
        moved in place and opened again; the rename is made durable and the old file
        deleted after. Raises :class:`StoreError` and keeps the current set when the staged
        file is not a finished set newer than it.
        """
        staged = str(staged)
        self._need_file()
        try:
            # read-write (it writes nothing), so that closing it removes its -wal and -shm
            conn = sqlite3.connect(f"file:{staged}?mode=rw", uri=True)
            try:
                meta = read_meta(conn)
                view = view_of(conn, meta, store_index.read_base(conn, int(meta["gen"])))
            finally:
                conn.close()
        except (sqlite3.Error, ValueError, KeyError, TypeError, InvalidSet) as exc:
            raise StoreError(f"staged set {staged} cannot be read ({exc}): not applied") from exc
        with self._write_lock:
            if view.gen <= self._view.gen:
                raise StoreError(f"staged set {staged} is older than the store: not applied")
            with contextlib.suppress(sqlite3.Error):  # else closing checkpoints, readers waiting
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with self._read_lock:
                self._reader.close()
                self._writer.close()
                try:
                    swap_in(self._path, staged)
                    self._view = view
                finally:
                    try:
                        self._reader, self._writer = connect(self._path)
                    except sqlite3.Error as exc:
                        self._closed = True
                        raise open_error(self._path, exc) from exc
        retire(self._path)

    def _need_file(self) -> None:
        if self._path == ":memory:":
            raise StoreError("an in-memory store cannot take a staged set (it has no file)")

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"entitlement store at {self._path} could not be written ({exc}); nothing was "
            "applied: is the disk full or failing? The update will be asked for again"
        )

    def close(self) -> None:
        """Close both connections (a second call does nothing)."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            self._writer.close()


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a whole set is loaded, as in the snapshot
    builder: the records (and what validating them made) are freed by reference counting,
    and with a million of them passing through, every collection would walk all of the
    process's objects again for nothing (a fifth of the load's time). On again after,
    unless it was off before."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
