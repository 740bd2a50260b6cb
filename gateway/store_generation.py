"""Writing and reading a generation of the entitlement store: a whole set's rows and meta.

A snapshot writes a new generation beside the current one (the store's :meth:`replace`) or
into a file of its own (:class:`~gateway.staged_set.StagedSet`); both finish it with
:func:`seal`: one record per id, each credential with the last record given it, the index
and the meta saved. :func:`view_of` reads a sealed generation back as a :class:`StoreView`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

from gateway import store_index
from gateway.credential_index import CredentialIndex, IndexBuilder
from gateway.entitlements import SiteRules, parse_rules
from gateway.record_codec import StoredRow, moved_note, prefix_of, split_hashes, without
from gateway.store_files import last_rowid, many


@dataclass(frozen=True)
class StoreView:
    """Everything a reader needs, swapped as one reference."""

    gen: int = 0
    version: int | None = None
    rules: SiteRules | None = None
    checkins_upto: Mapping[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None
    count: int = 0
    index: CredentialIndex = field(default_factory=CredentialIndex)
    max_rowid: int = 0


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The store's meta rows."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def view_of(conn: sqlite3.Connection, meta: dict[str, str], index: CredentialIndex) -> StoreView:
    """The view of the set whose ``meta`` rows were read from ``conn``."""
    gen = int(meta["gen"])
    count = meta.get("count")
    if count is None:
        count = conn.execute("SELECT COUNT(*) FROM records WHERE gen = ?", (gen,)).fetchone()[0]
    return StoreView(
        gen=gen,
        version=int(meta["version"]),
        rules=parse_rules(json.loads(meta["rules"])),
        checkins_upto=dict(json.loads(meta["checkins_upto"])),
        updated_at=datetime.fromisoformat(meta["updated_at"]),
        count=int(count),
        index=index,
        max_rowid=last_rowid(conn),
    )


_ROW = "(?, ?, ?, ?, ?, ?)"
# Rows written by one INSERT: a statement per row costs twice as much a row as one of a
# hundred rows (4.5 against 2 us, a million-member snapshot's 1M rows); 600 parameters are
# within the least limit of any SQLite (999).
ROWS_PER_INSERT = 100
_INSERT_ONE = f"INSERT INTO records VALUES {_ROW}"
_INSERT_MANY = f"INSERT INTO records VALUES {', '.join([_ROW] * ROWS_PER_INSERT)}"


def insert_rows(
    conn: sqlite3.Connection, gen: int, first_rowid: int, rows: Iterable[StoredRow]
) -> None:
    """Insert ``rows`` of ``gen`` with rowids from ``first_rowid`` on (inside the caller's
    transaction)."""
    numbered = [(rowid, gen, *row) for rowid, row in enumerate(rows, first_rowid)]
    whole = len(numbered) - len(numbered) % ROWS_PER_INSERT
    for at in range(0, whole, ROWS_PER_INSERT):
        conn.execute(_INSERT_MANY, [*chain.from_iterable(numbered[at : at + ROWS_PER_INSERT])])
    conn.executemany(_INSERT_ONE, numbered[whole:])


def write_meta(
    conn: sqlite3.Connection,
    *,
    gen: int,
    version: int,
    rules: SiteRules,
    upto: Mapping[str, int],
    at: datetime,
    count: int,
) -> None:
    """The meta rows of a set (inside the caller's transaction)."""
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [
            ("gen", str(gen)),
            ("version", str(version)),
            ("rules", rules.model_dump_json(by_alias=True)),
            ("checkins_upto", json.dumps(dict(upto))),
            ("updated_at", at.isoformat()),
            ("count", str(count)),
        ],
    )


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """One meta row."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def seal(
    conn: sqlite3.Connection,
    gen: int,
    builder: IndexBuilder,
    inserted: int,
    *,
    version: int,
    rules: SiteRules,
    checkins_upto: Mapping[str, int],
    at: datetime,
) -> tuple[int, CredentialIndex, list[str]]:
    """Finish the rows of ``gen`` (inside the caller's transaction): one record per id,
    each credential with the last record given it, the index and the meta saved.

    Returns the record count, the index and a note per credential given twice.
    """
    superseded = _drop_repeated_ids(conn, gen)
    notes: list[str] = []
    index = builder.build(superseded, lambda prefix, live: _share_out(conn, prefix, live, notes))
    store_index.save(conn, gen, index)
    count = inserted - len(superseded)
    write_meta(conn, gen=gen, version=version, rules=rules, upto=checkins_upto, at=at, count=count)
    return count, index, notes


def seal_streamed(
    conn: sqlite3.Connection,
    gen: int,
    builder: IndexBuilder,
    inserted: int,
    *,
    scratch_dir: str,
    version: int,
    rules: SiteRules,
    checkins_upto: Mapping[str, int],
    at: datetime,
) -> tuple[int, list[str]]:
    """:func:`seal` for a set written to a file of its own, whose index nobody needs in
    memory: it is sorted and saved a part at a time (scratch files in ``scratch_dir``), so
    that a million members are sealed in the memory of a few thousand.

    Returns the record count and a note per credential given twice.
    """
    superseded = _drop_repeated_ids(conn, gen)
    notes: list[str] = []
    runs = builder.sorted_runs(
        superseded, lambda prefix, live: _share_out(conn, prefix, live, notes)
    )
    store_index.save_runs(conn, gen, runs, scratch_dir)
    count = inserted - len(superseded)
    write_meta(conn, gen=gen, version=version, rules=rules, upto=checkins_upto, at=at, count=count)
    return count, notes


def _drop_repeated_ids(conn: sqlite3.Connection, gen: int) -> set[int]:
    """A set that lists an id twice keeps the later record; returns the dropped rowids."""
    repeated = conn.execute(
        "SELECT rid, MAX(rowid) FROM records WHERE gen = ? GROUP BY rid HAVING COUNT(*) > 1",
        (gen,),
    ).fetchall()
    dropped: set[int] = set()
    for rid, keep in repeated:
        rows = conn.execute(
            "SELECT rowid FROM records WHERE gen = ? AND rid = ? AND rowid != ?",
            (gen, rid, keep),
        )
        dropped.update(r for (r,) in rows)
    many(conn, "DELETE FROM records WHERE rowid = ?", dropped)
    return dropped


def _share_out(
    conn: sqlite3.Connection, prefix: int, rowids: list[int], notes: list[str]
) -> list[int]:
    """Rows whose credentials share a prefix: the same credential, or a collision.

    Of the rows holding the same full hash, the last one (in set order) keeps it; the
    others lose it and a note says so. Different hashes (a collision) all stay.
    """
    rows: dict[int, tuple[str, bytes]] = {}
    for rowid in sorted(set(rowids)):
        found = conn.execute("SELECT rid, hashes FROM records WHERE rowid = ?", (rowid,)).fetchone()
        rows[rowid] = (found[0], found[1])
    holder: dict[bytes, int] = {}
    for rowid in rows:  # in set order
        for digest in split_hashes(rows[rowid][1]):
            if prefix_of(digest) != prefix:
                continue
            earlier = holder.get(digest)
            if earlier is not None and earlier != rowid:
                rid, hashes = rows[earlier]
                rows[earlier] = (rid, without(hashes, digest))
                conn.execute(
                    "UPDATE records SET hashes = ? WHERE rowid = ?", (rows[earlier][1], earlier)
                )  # a row of the new generation: no reader sees it yet
                notes.append(moved_note(rid, rows[rowid][0]))
            holder[digest] = rowid
    return sorted(set(holder.values()))
