"""A whole new entitlement set written to a file of its own, then adopted by the store."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from gateway import store_generation
from gateway.credential_index import IndexBuilder
from gateway.entitlements import SiteRules
from gateway.record_codec import Record, RecordCodec, UnhashedRow, index_entries, unhashed
from gateway.store_files import RID_INDEX, connect_staged, remove_file, seal_staged


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
    (:meth:`~gateway.store.EntitlementStore.adopt`). A record's rowid is its place in the
    set (chunk, then position), so "the later record wins" works as in
    :meth:`~gateway.store.EntitlementStore.replace`. The file is written without a journal
    or fsync while it is being filled (a failure discards it whole); :meth:`finish` makes it
    durable.

    Memory stays that of a chunk or two however big the set: the credential index's
    entries spill to a scratch file beside the staged one (unlinked from the start, so that
    nothing of it outlives the process) and are sorted and saved a part at a time.
    """

    def __init__(self, staging: Staging, *, chunk_size: int) -> None:
        self.path = staging.path
        self.gen = staging.gen
        self.chunks: set[int] = set()
        self._first = staging.first_rowid
        self._chunk_size = chunk_size
        self._inserted = 0
        self._codec = RecordCodec(staging.key)
        self._scratch_dir = os.path.dirname(os.path.abspath(self.path))
        self._conn = connect_staged(self.path)
        self._inode = os.stat(self.path).st_ino  # the file that is this set's to delete
        self._spill = tempfile.TemporaryFile(dir=self._scratch_dir)
        # gathered as chunks come: nothing read back from the records at the end
        self._index = IndexBuilder(spill=self._spill)
        self._closed = False

    def add(self, chunk: int, records: Sequence[Record]) -> None:
        """Write one chunk's records (validated already)."""
        self.add_rows(chunk, [unhashed(r) for r in records])

    def add_rows(self, chunk: int, rows: Sequence[UnhashedRow]) -> None:
        """Write one chunk's records, encoded already (:func:`~gateway.record_codec.unhashed`)."""
        if len(rows) > self._chunk_size:
            raise ValueError(f"a chunk holds at most {self._chunk_size} records")
        first = self._first + chunk * self._chunk_size + 1
        stored = self._codec.hashed_rows(rows)
        self._index.extend(*index_entries(first, [row[2] for row in stored]))
        self._conn.execute("BEGIN")
        store_generation.insert_rows(self._conn, self.gen, first, stored)
        self._conn.execute("COMMIT")
        self._index.spill_if_full()
        self.chunks.add(chunk)
        self._inserted += len(stored)

    def finish(
        self, version: int, rules: SiteRules, checkins_upto: Mapping[str, int], at: datetime
    ) -> tuple[int, list[str]]:
        """Index and seal the set, make the file durable and close it.

        Returns the record count and a note per credential that two records were given.
        """
        conn = self._conn
        conn.execute("BEGIN")
        conn.execute(RID_INDEX)
        count, notes = store_generation.seal_streamed(
            conn,
            self.gen,
            self._index,
            self._inserted,
            scratch_dir=self._scratch_dir,
            version=version,
            rules=rules,
            checkins_upto=checkins_upto,
            at=at,
        )
        conn.execute("COMMIT")
        self._closed = True
        self._spill.close()
        seal_staged(conn, self.path)
        return count, notes

    def discard(self) -> None:
        """Close and delete the file (a snapshot refused or given up)."""
        if not self._closed:
            self._closed = True
            self._conn.close()
            self._spill.close()
        with contextlib.suppress(OSError):  # gone already, or a newer set's file by now
            if os.stat(self.path).st_ino == self._inode:
                remove_file(self.path)


class StagedSetProcess:
    """A :class:`StagedSet` written by a process of its own, for a machine with cores to spare.

    The snapshot builder validates and encodes a chunk while this process hashes, writes
    and indexes the one before: the two halves of the work side by side. Chunks go over a
    pipe (pickled rows, a few hundred KB each); the pipe's back-pressure keeps at most one
    chunk in flight, so the memory stays that of a chunk or two. The process is forked
    (no second start-up) and ends when its pipe closes: the builder finished, gave up or
    died, whereupon an unfinished file is deleted.
    """

    def __init__(self, staging: Staging, *, chunk_size: int) -> None:
        self.path = staging.path
        self.gen = staging.gen
        self.chunks: set[int] = set()
        self._chunk_size = chunk_size
        ctx = multiprocessing.get_context("fork")
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(
            target=_write_staged, args=(theirs, self._conn, staging, chunk_size), daemon=True
        )
        self._proc.start()
        theirs.close()
        self._closed = self._finished = False
        self._writer_peak_kib: int | None = None  # as it said when it finished
        self.writer_cpu_s = 0.0  # the CPU time the writer took, once finished
        try:
            self._answer("ready")
        except OSError:
            self.discard()
            raise

    def writer_peak_kib(self) -> int:
        """The writer process's peak resident memory so far (all of it once finished)."""
        if self._writer_peak_kib is None and self._proc.pid is not None:
            return peak_rss_kib(self._proc.pid)
        return self._writer_peak_kib or 0

    def add(self, chunk: int, records: Sequence[Record]) -> None:
        """Encode one chunk's records (validated already) and hand them to the writer."""
        if len(records) > self._chunk_size:
            raise ValueError(f"a chunk holds at most {self._chunk_size} records")
        self._failed_yet()
        self._conn.send(("add", chunk, [unhashed(r) for r in records]))
        self.chunks.add(chunk)

    def finish(
        self, version: int, rules: SiteRules, checkins_upto: Mapping[str, int], at: datetime
    ) -> tuple[int, list[str]]:
        """As :meth:`StagedSet.finish`, once the writer has written every chunk."""
        self._conn.send(("finish", version, rules, dict(checkins_upto), at))
        _, count, notes, self._writer_peak_kib, self.writer_cpu_s = self._answer()
        self._closed = self._finished = True
        self._conn.close()
        self._proc.join()
        return count, notes

    def discard(self) -> None:
        """Stop the writer and delete the file (a snapshot refused or given up)."""
        if not self._closed:
            self._closed = True
            self._conn.close()  # the writer sees the end of its pipe and deletes its file
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            if self._proc.exitcode != 0:
                remove_file(self.path)  # it died before it could delete its file
        elif self._finished:
            remove_file(self.path)  # as a StagedSet does with a finished file

    def _failed_yet(self) -> None:
        if self._conn.poll():
            self._answer()  # only a failure comes before finish

    def _answer(self, expected: str = "done") -> tuple[str, int, list[str], int, float]:
        try:
            answer: tuple[str, Any, Any, Any, Any] = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            code = self._proc.exitcode
            raise OSError(f"the staged set's writer process ended (exit code {code})") from None
        if answer[0] != expected:
            raise OSError(str(answer[1]))
        return answer


def _write_staged(conn: Connection, parents: Connection, staging: Staging, chunk_size: int) -> None:
    """The writer process of a :class:`StagedSetProcess`: chunks from ``conn`` until finish."""
    parents.close()  # its copy of the builder's end: the pipe must close when the builder's does
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the builder's answer channel is not this process's to hold open
    try:
        staged = StagedSet(staging, chunk_size=chunk_size)
    except (sqlite3.Error, OSError) as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}", None, None, None))
        return
    conn.send(("ready", 0, [], 0, 0.0))  # the file is there, as with a StagedSet
    try:
        while True:
            message = conn.recv()
            if message[0] == "add":
                staged.add_rows(message[1], message[2])
            else:
                count, notes = staged.finish(*message[1:])
                conn.send(("done", count, notes, peak_rss_kib(), time.process_time()))
                return
    except EOFError:
        staged.discard()  # the builder gave up, or died
    except (sqlite3.Error, OSError, ValueError) as exc:
        staged.discard()
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}", None, None, None))


def peak_rss_kib(pid: int | None = None) -> int:
    """A process's peak resident memory (VmHWM; this one's by default), 0 where /proc is
    not there or the process is gone."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    return 0
