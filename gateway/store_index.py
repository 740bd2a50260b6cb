"""Persistence of the store's credential index.

Start-up must not read a million rows: the sorted base of the
:class:`~gateway.credential_index.CredentialIndex` is kept as a blob (``index_blob``), and
every change since as a log (``index_log``) written in the same transaction as the delta
that made it. A missing or older-format blob is rebuilt from the records.
"""

from __future__ import annotations

import sqlite3
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from functools import partial

from gateway.credential_index import CredentialIndex, IndexBuilder
from gateway.record_codec import prefix_of, split_hashes

FORMAT = "2"  # of the persisted index; another one is rebuilt from the records at start
_BLOB_CHUNK = 1 << 20


def entries(conn: sqlite3.Connection, gen: int) -> IndexBuilder:
    """The index entries of the stored records of generation ``gen``."""
    builder = IndexBuilder()
    rows = conn.execute("SELECT rowid, hashes FROM records WHERE gen = ?", (gen,))
    for rowid, hashes in rows:
        for digest in split_hashes(hashes):
            builder.add(prefix_of(digest), rowid)
    return builder


def rebuilt(conn: sqlite3.Connection, gen: int) -> CredentialIndex:
    """The base index built from the stored records of generation ``gen``."""
    return entries(conn, gen).build()


def save(conn: sqlite3.Connection, gen: int, index: CredentialIndex) -> None:
    """Persist ``index`` as the base (inside the caller's transaction); clear the log.

    Written in chunks through incremental blob I/O, so that a 48 MB index is not copied
    twice more in memory on its way to disk.
    """
    columns = [memoryview(index.prefixes).cast("B"), memoryview(index.rowids).cast("B")]
    chunks = [
        (data[start : start + _BLOB_CHUNK] for start in range(0, len(data), _BLOB_CHUNK))
        for data in columns
    ]
    _write_base(conn, gen, len(columns[0]), chunks)


def save_runs(
    conn: sqlite3.Connection,
    gen: int,
    runs: Iterable[tuple[array[int], array[int]]],
    scratch_dir: str,
) -> int:
    """Persist sorted ``(prefixes, rowids)`` runs as the base, as :func:`save` does, without
    holding them all in memory: they go through two scratch files (in ``scratch_dir``, gone
    when closed or when the process ends) until their total size is known. Returns the
    number of entries."""
    with (
        tempfile.TemporaryFile(dir=scratch_dir) as prefixes,
        tempfile.TemporaryFile(dir=scratch_dir) as rowids,
    ):
        entries = 0
        for run_prefixes, run_rowids in runs:
            prefixes.write(run_prefixes)
            rowids.write(run_rowids)
            entries += len(run_prefixes)
        for scratch in (prefixes, rowids):
            scratch.seek(0)
        chunks = [iter(partial(f.read, _BLOB_CHUNK), b"") for f in (prefixes, rowids)]
        _write_base(conn, gen, entries * 8, chunks)
    return entries


def _write_base(
    conn: sqlite3.Connection, gen: int, size: int, columns: Sequence[Iterable[bytes | memoryview]]
) -> None:
    """The base blob of ``size`` bytes a column, written from each column's chunks."""
    conn.execute("DELETE FROM index_blob")
    conn.execute("DELETE FROM index_log")
    conn.execute(
        "INSERT INTO index_blob (gen, prefixes, rowids) VALUES (?, zeroblob(?), zeroblob(?))",
        (gen, size, size),
    )
    for column, chunks in zip(("prefixes", "rowids"), columns, strict=True):
        with conn.blobopen("index_blob", column, gen) as blob:
            for chunk in chunks:
                blob.write(chunk)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))


def read_base(conn: sqlite3.Connection, gen: int) -> CredentialIndex:
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


def has_base(conn: sqlite3.Connection, gen: int, fmt: str | None) -> bool:
    """Whether a base index of ``gen`` in the current format is stored."""
    if fmt != FORMAT:
        return False
    return conn.execute("SELECT 1 FROM index_blob WHERE gen = ?", (gen,)).fetchone() is not None


def read_log(conn: sqlite3.Connection, gen: int) -> Iterable[tuple[int, int, bool]]:
    """The logged overlay ``(prefix, rowid, added)`` of ``gen``, in order."""
    log = conn.execute(
        "SELECT prefix, rowid, added FROM index_log WHERE gen = ? ORDER BY n", (gen,)
    )
    return ((p, r, bool(a)) for p, r, a in log)


def log_changes(
    conn: sqlite3.Connection, gen: int, kill: Iterable[int], add: Iterable[tuple[int, int]]
) -> None:
    """Log a delta's index changes (inside the caller's transaction): rowids dead, then
    ``(prefix, rowid)`` entries added."""
    conn.executemany(
        "INSERT INTO index_log (gen, prefix, rowid, added) VALUES (?, ?, ?, ?)",
        [(gen, 0, r, 0) for r in sorted(kill)] + [(gen, p, r, 1) for p, r in add],
    )
