"""The entitlement store: site rules, members and tickets with a version (SQLite, WAL).

Privacy: credential values (NFC UIDs, codes, ticket codes) are kept only as
HMAC-SHA-256 with a per-gateway secret; the stored record JSON has them removed.

Memory: a million members must fit a 1 GB Raspberry Pi. The credential index is two
sorted ``array('q')`` (64-bit hash prefixes and record rowids, 16 bytes a credential)
plus a small overlay of changes since; a hit is confirmed against the full hashes kept
with the record, so a prefix collision can never open a door for the wrong member.
The base index is persisted as a blob, so start-up reads no million rows.

Atomicity: readers (the event loop) use one connection, the writer (possibly a worker
thread) another. A write commits new rows beside the old ones, then swaps one Python
reference (:class:`_View`), then removes the superseded rows. A reader sees the old set
or the new one, never a mix.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.entitlements import (
    Member,
    SiteRules,
    Ticket,
    credential_key,
    parse_rules,
)
from gateway.errors import StoreError

Record = Member | Ticket
HASH_SIZE = 32
COMPACT_AFTER = 50_000  # overlay entries before the base index is rebuilt
GRACE_S = 0.2  # readers finish within microseconds; superseded rows go after this

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
class _Index:
    """Sorted base arrays plus the changes since (added rowids, removed (prefix, rowid))."""

    prefixes: array[int] = field(default_factory=lambda: array("q"))
    rowids: array[int] = field(default_factory=lambda: array("q"))
    added: dict[int, tuple[int, ...]] = field(default_factory=dict)
    removed: frozenset[tuple[int, int]] = frozenset()

    def candidates(self, prefix: int) -> list[int]:
        """Rowids of records that may hold a credential with this prefix."""
        lo = bisect.bisect_left(self.prefixes, prefix)
        hi = bisect.bisect_right(self.prefixes, prefix, lo)
        found = [r for r in self.rowids[lo:hi] if (prefix, r) not in self.removed]
        return found + list(self.added.get(prefix, ()))

    def changed(self, add: Iterable[tuple[int, int]], remove: Iterable[tuple[int, int]]) -> _Index:
        """A new index with these changes (this one stays as it is for current readers)."""
        added = dict(self.added)
        removed = set(self.removed)
        for prefix, rowid in remove:
            if rowid in added.get(prefix, ()):
                added[prefix] = tuple(r for r in added[prefix] if r != rowid)
            else:
                removed.add((prefix, rowid))
        for prefix, rowid in add:
            added[prefix] = (*added.get(prefix, ()), rowid)
        return _Index(self.prefixes, self.rowids, added, frozenset(removed))

    @property
    def overlay_size(self) -> int:
        return sum(len(v) for v in self.added.values()) + len(self.removed)


@dataclass(frozen=True)
class _View:
    """Everything a reader needs, swapped as one reference."""

    gen: int = 0
    version: int | None = None
    rules: SiteRules | None = None
    checkins_upto: dict[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None
    count: int = 0
    index: _Index = field(default_factory=_Index)
    max_rowid: int = 0
    dead: frozenset[int] = frozenset()


class EntitlementStore:
    """The entitlement set on disk, with a compact credential index in memory."""

    def __init__(
        self, path: str, key: bytes, reader: sqlite3.Connection, writer: sqlite3.Connection
    ) -> None:
        self._path = path
        self._key = key
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._view = _View()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, hmac_key: bytes) -> EntitlementStore:
        """Open (or create) the store at ``path`` (``":memory:"`` for a throw-away one)."""
        name = str(path)
        try:
            if name == ":memory:":
                uri = f"file:accessgw-{id(object())}-{time.monotonic_ns()}?mode=memory&cache=shared"
                writer = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None
                )
                reader = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None
                )
                reader.execute("PRAGMA read_uncommitted=0")
            else:
                writer = sqlite3.connect(name, check_same_thread=False, isolation_level=None)
                writer.execute("PRAGMA journal_mode=WAL")
                writer.execute("PRAGMA synchronous=FULL")
                reader = sqlite3.connect(name, check_same_thread=False, isolation_level=None)
            writer.executescript(_SCHEMA)
            store = cls(name, hmac_key, reader, writer)
            store._view = store._load()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"entitlement store at {name} is damaged ({exc}): delete it; the "
                "gateway will fetch a fresh snapshot from the central system"
            ) from exc
        return store

    def _meta(self) -> dict[str, str]:
        return dict(self._writer.execute("SELECT key, value FROM meta").fetchall())

    def _load(self) -> _View:
        meta = self._meta()
        if "gen" not in meta:
            return _View()
        gen = int(meta["gen"])
        row = self._writer.execute(
            "SELECT prefixes, rowids FROM index_blob WHERE gen = ?", (gen,)
        ).fetchone()
        index = _Index()
        if row is not None:
            prefixes, rowids = array("q"), array("q")
            prefixes.frombytes(row[0])
            rowids.frombytes(row[1])
            index = _Index(prefixes, rowids)
        else:
            index = self._build_index(gen)
        log = self._writer.execute(
            "SELECT prefix, rowid, added FROM index_log WHERE gen = ? ORDER BY n", (gen,)
        )
        for prefix, rowid, added in log:
            index = index.changed(
                [(prefix, rowid)] if added else [], [] if added else [(prefix, rowid)]
            )
        (count, max_rowid) = self._writer.execute(
            "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM records WHERE gen = ?", (gen,)
        ).fetchone()
        return _View(
            gen=gen,
            version=int(meta["version"]),
            rules=parse_rules(json.loads(meta["rules"])),
            checkins_upto=json.loads(meta["checkins_upto"]),
            updated_at=datetime.fromisoformat(meta["updated_at"]),
            count=int(count),
            index=index,
            max_rowid=int(max_rowid),
        )

    def _build_index(self, gen: int) -> _Index:
        """Rebuild the base index from the records (first start, or after compaction)."""
        pairs: list[int] = []
        rows = self._writer.execute("SELECT rowid, hashes FROM records WHERE gen = ?", (gen,))
        for rowid, hashes in rows:
            for i in range(0, len(hashes), HASH_SIZE):
                pairs.append(((prefix_of(hashes[i : i + HASH_SIZE]) + 2**63) << 64) | rowid)
        pairs.sort()
        prefixes = array("q", ((p >> 64) - 2**63 for p in pairs))
        rowids = array("q", (p & 0xFFFF_FFFF_FFFF_FFFF for p in pairs))
        return _Index(prefixes, rowids)

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
        return hmac.new(self._key, key.encode("utf-8"), hashlib.sha256).digest()

    def find(self, kind: str, value: str, fmt: str | None = None) -> Record | None:
        """The member or ticket a card/code belongs to, or None."""
        key = credential_key(kind, value, fmt)
        if key is None:
            return None
        digest = self.hash(key)
        view = self._view
        for rowid in view.index.candidates(prefix_of(digest)):
            row = self._row(
                "SELECT hashes, kind, body FROM records WHERE rowid = ? AND gen = ?",
                (rowid, view.gen),
            )
            if row is not None and rowid not in view.dead and _holds(row[0], digest):
                return _decode(row[1], row[2])
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
        view = self._view
        rows = self._rows(
            "SELECT rowid, kind, body FROM records WHERE gen = ? AND rid = ? AND rowid <= ? "
            "ORDER BY rowid DESC",
            (view.gen, rid, view.max_rowid),
        )
        for rowid, kind, body in rows:
            if rowid not in view.dead:
                return _decode(kind, body)
        return None

    def _row(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchone()

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    # --- writing ------------------------------------------------------------------------

    def replace(
        self,
        version: int,
        rules: SiteRules,
        records: Iterable[Record],
        checkins_upto: dict[str, int],
        at: datetime,
    ) -> list[str]:
        """Replace the whole set (a snapshot), atomically for readers; durable on return."""
        with self._write_lock:
            old = self._view
            gen = old.gen + 1
            notes: list[str] = []
            w = self._writer
            try:
                w.execute("BEGIN IMMEDIATE")
                w.execute("DELETE FROM records WHERE gen = ?", (gen,))  # a crashed attempt
                pairs: list[int] = []
                for batch in _batches(records, 2000):
                    rows = [self._stored(r) for r in batch]
                    cur = self._last_rowid()
                    w.executemany(
                        "INSERT INTO records (rowid, gen, rid, kind, hashes, body) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (cur + i + 1, gen, rid, kind, hashes, body)
                            for i, (rid, kind, hashes, body) in enumerate(rows)
                        ],
                    )
                    for i, (_, _, hashes, _) in enumerate(rows):
                        for j in range(0, len(hashes), HASH_SIZE):
                            prefix = prefix_of(hashes[j : j + HASH_SIZE])
                            pairs.append(((prefix + 2**63) << 64) | (cur + i + 1))
                pairs.sort()
                index, notes = self._dedupe(gen, pairs)
                w.execute("DELETE FROM index_blob")
                w.execute("DELETE FROM index_log")
                w.execute(
                    "INSERT INTO index_blob (gen, prefixes, rowids) VALUES (?, ?, ?)",
                    (gen, index.prefixes.tobytes(), index.rowids.tobytes()),
                )
                self._write_meta(gen, version, rules, checkins_upto, at)
                count, max_rowid = w.execute(
                    "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM records WHERE gen = ?", (gen,)
                ).fetchone()
                w.execute("COMMIT")
            except BaseException:
                _rollback(w)
                raise
            self._view = _View(
                gen, version, rules, dict(checkins_upto), at, int(count), index, int(max_rowid)
            )
            self._after_swap("DELETE FROM records WHERE gen < ?", [(gen,)])
            return notes

    def _last_rowid(self) -> int:
        """The highest rowid ever used (deleted ones included: rowids are never reused)."""
        row = self._writer.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0), "
            "COALESCE((SELECT MAX(rowid) FROM records), 0))"
        ).fetchone()
        return int(row[0])

    def _dedupe(self, gen: int, pairs: list[int]) -> tuple[_Index, list[str]]:
        """Split sorted pairs into arrays; a credential given twice stays with the later record."""
        prefixes, rowids = array("q"), array("q")
        notes: list[str] = []
        last_prefix: int | None = None
        for pair in pairs:
            prefix, rowid = (pair >> 64) - 2**63, pair & 0xFFFF_FFFF_FFFF_FFFF
            if prefix == last_prefix:
                moved = self._settle_duplicate(gen, prefix, rowids[-1], rowid)
                if moved is not None:
                    notes.append(moved)
                    rowids[-1] = rowid  # the later record keeps it
                    continue
            prefixes.append(prefix)
            rowids.append(rowid)
            last_prefix = prefix
        return _Index(prefixes, rowids), notes

    def _settle_duplicate(self, gen: int, prefix: int, earlier: int, later: int) -> str | None:
        """Two records share a prefix: the same credential (moved, noted) or a collision."""
        rows = dict(
            self._writer.execute(
                "SELECT rowid, hashes FROM records WHERE rowid IN (?, ?)", (earlier, later)
            ).fetchall()
        )
        shared = set(_hashes(rows[earlier])) & set(_hashes(rows[later]))
        shared = {h for h in shared if prefix_of(h) == prefix}
        if not shared:
            return None  # a prefix collision: both keep their own credential
        kept = b"".join(h for h in _hashes(rows[earlier]) if h not in shared)
        self._writer.execute("UPDATE records SET hashes = ? WHERE rowid = ?", (kept, earlier))
        ids = dict(
            self._writer.execute(
                "SELECT rowid, rid FROM records WHERE rowid IN (?, ?)", (earlier, later)
            ).fetchall()
        )
        return f"a credential of {ids[earlier]} was also given to {ids[later]}; {ids[later]} has it"

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
        """Apply a delta on top of version ``base``, atomically for readers; durable on return."""
        with self._write_lock:
            old = self._view
            if old.version is None or base != old.version:
                raise StoreError(
                    f"delta {version} is based on version {base}, but the store "
                    f"has {old.version}: ask the central system to sync"
                )
            w = self._writer
            notes: list[str] = []
            add: list[tuple[int, int]] = []
            remove: list[tuple[int, int]] = []
            dead: set[int] = set()
            try:
                w.execute("BEGIN IMMEDIATE")
                for rid in [*delete, *(r.id for r in upsert)]:
                    for rowid, hashes in self._live_rows(rid, old, dead):
                        dead.add(rowid)
                        remove.extend((prefix_of(h), rowid) for h in _hashes(hashes))
                for record in upsert:
                    rid, kind, hashes, body = self._stored(record)
                    hashes = self._take_credentials(record, hashes, old, dead, remove, notes)
                    cur = w.execute(
                        "INSERT INTO records (gen, rid, kind, hashes, body) VALUES (?, ?, ?, ?, ?)",
                        (old.gen, rid, kind, hashes, body),
                    )
                    rowid = int(cur.lastrowid or 0)
                    add.extend((prefix_of(h), rowid) for h in _hashes(hashes))
                w.executemany(
                    "INSERT INTO index_log (gen, prefix, rowid, added) VALUES (?,?,?,0)",
                    [(old.gen, p, r) for p, r in remove],
                )
                w.executemany(
                    "INSERT INTO index_log (gen, prefix, rowid, added) VALUES (?,?,?,1)",
                    [(old.gen, p, r) for p, r in add],
                )
                new_rules = rules or old.rules
                assert new_rules is not None
                upto = checkins_upto if checkins_upto is not None else old.checkins_upto
                self._write_meta(old.gen, version, new_rules, upto, at)
                max_rowid = w.execute("SELECT COALESCE(MAX(rowid), 0) FROM records").fetchone()[0]
                w.execute("COMMIT")
            except BaseException:
                _rollback(w)
                raise
            index = old.index.changed(add, remove)
            count = old.count - len(dead) + len(upsert)
            self._view = _View(
                old.gen,
                version,
                new_rules,
                dict(upto),
                at,
                count,
                index,
                int(max_rowid),
                frozenset(old.dead | dead),
            )
            self._after_swap("DELETE FROM records WHERE rowid = ?", [(r,) for r in dead])
            if index.overlay_size > COMPACT_AFTER:
                self._compact()
            return notes

    def _live_rows(self, rid: str, view: _View, dead: set[int]) -> list[tuple[int, bytes]]:
        rows = self._writer.execute(
            "SELECT rowid, hashes FROM records WHERE gen = ? AND rid = ?", (view.gen, rid)
        ).fetchall()
        return [(r, h) for r, h in rows if r not in view.dead and r not in dead]

    def _take_credentials(
        self,
        record: Record,
        hashes: bytes,
        view: _View,
        dead: set[int],
        remove: list[tuple[int, int]],
        notes: list[str],
    ) -> bytes:
        """A credential that another record holds moves to ``record`` (the later one wins)."""
        for digest in _hashes(hashes):
            prefix = prefix_of(digest)
            for rowid in view.index.candidates(prefix):
                if rowid in dead or rowid in view.dead:
                    continue
                row = self._writer.execute(
                    "SELECT rid, hashes FROM records WHERE rowid = ?", (rowid,)
                ).fetchone()
                if row is None or not _holds(row[1], digest):
                    continue
                kept = b"".join(h for h in _hashes(row[1]) if h != digest)
                self._writer.execute("UPDATE records SET hashes = ? WHERE rowid = ?", (kept, rowid))
                remove.append((prefix, rowid))
                notes.append(
                    f"a credential of {row[0]} was also given to {record.id}; {record.id} has it"
                )
        return hashes

    def touch(self, at: datetime) -> None:
        """The central system confirmed the current version (a ``time`` envelope)."""
        with self._write_lock:
            old = self._view
            if old.version is None:
                return
            self._writer.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                ("updated_at", at.isoformat()),
            )
            self._view = _View(
                old.gen,
                old.version,
                old.rules,
                old.checkins_upto,
                at,
                old.count,
                old.index,
                old.max_rowid,
                old.dead,
            )

    def _write_meta(
        self, gen: int, version: int, rules: SiteRules, checkins_upto: dict[str, int], at: datetime
    ) -> None:
        self._writer.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("gen", str(gen)),
                ("version", str(version)),
                ("rules", rules.model_dump_json(by_alias=True)),
                ("checkins_upto", json.dumps(checkins_upto)),
                ("updated_at", at.isoformat()),
            ],
        )

    def _after_swap(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Remove superseded rows once readers of the old view are done with them."""
        time.sleep(GRACE_S)
        self._writer.executemany(sql, rows)

    def _compact(self) -> None:
        """Fold the overlay into a new base index blob."""
        view = self._view
        index = self._build_index(view.gen)
        w = self._writer
        w.execute("BEGIN IMMEDIATE")
        w.execute("DELETE FROM index_blob")
        w.execute("DELETE FROM index_log")
        w.execute(
            "INSERT INTO index_blob (gen, prefixes, rowids) VALUES (?, ?, ?)",
            (view.gen, index.prefixes.tobytes(), index.rowids.tobytes()),
        )
        w.execute("COMMIT")
        self._view = _View(
            view.gen,
            view.version,
            view.rules,
            view.checkins_upto,
            view.updated_at,
            view.count,
            index,
            view.max_rowid,
            frozenset(),
        )

    def _stored(self, record: Record) -> tuple[str, str, bytes, str]:
        """(id, kind, credential hashes, JSON without card/code values) of a record."""
        hashes = b"".join(self.hash(k) for k in record.credential_keys())
        data = record.model_dump(mode="json", by_alias=True)
        if isinstance(record, Member):
            data["credentials"] = [c for c in data["credentials"] if c["kind"] == "phone"]
            return record.member, "member", hashes, json.dumps(data, separators=(",", ":"))
        data["code"] = "#"  # only its hash is kept
        return record.ticket, "ticket", hashes, json.dumps(data, separators=(",", ":"))

    def close(self) -> None:
        """Close both connections."""
        with self._write_lock:
            self._reader.close()
            self._writer.close()


def _hashes(blob: bytes) -> list[bytes]:
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def _holds(blob: bytes, digest: bytes) -> bool:
    return any(hmac.compare_digest(h, digest) for h in _hashes(blob))


def _decode(kind: str, body: str) -> Record:
    data = json.loads(body)
    if kind == "member":
        return Member.model_validate(data, strict=False)
    return Ticket.model_validate({**data, "code": "#"}, strict=False)


def _batches(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
