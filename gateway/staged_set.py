"""A whole new entitlement set written to a file of its own, then adopted by the store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway import store_generation
from gateway.credential_index import IndexBuilder
from gateway.entitlements import SiteRules
from gateway.record_codec import Record, RecordCodec, prefixes_of
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
        self._spill = tempfile.TemporaryFile(dir=self._scratch_dir)
        # gathered as chunks come: nothing read back from the records at the end
        self._index = IndexBuilder(spill=self._spill)
        self._closed = False

    def add(self, chunk: int, records: Sequence[Record]) -> None:
        """Write one chunk's records (validated already)."""
        if len(records) > self._chunk_size:
            raise ValueError(f"a chunk holds at most {self._chunk_size} records")
        first = self._first + chunk * self._chunk_size + 1
        rows = [self._codec.stored(r) for r in records]
        add = self._index.add
        for rowid, row in enumerate(rows, first):
            for prefix in prefixes_of(row[2]):
                add(prefix, rowid)
        self._conn.execute("BEGIN")
        store_generation.insert_rows(self._conn, self.gen, first, rows)
        self._conn.execute("COMMIT")
        self._index.spill_if_full()
        self.chunks.add(chunk)
        self._inserted += len(rows)

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
        remove_file(self.path)
