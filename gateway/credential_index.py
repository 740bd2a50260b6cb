"""The in-memory credential index of the entitlement store: hash prefix -> record rowids.

A million members hold about three million credentials. A dict of three million byte
strings would not fit a 1 GB Raspberry Pi beside the rest of the gateway, so the index is
two sorted ``array('q')`` (64-bit prefixes of the credential hashes, and the rowids of
the records holding them: 16 bytes a credential), searched with bisect. Changes since the
sorted base was built sit in a small overlay (added entries, dead rowids) until the
store compacts it. An index is never changed in place: a change makes a new one, so a
reader holding the old one keeps a consistent view.

The index only narrows the search: the store confirms every hit against the full hashes
kept with the record, so a prefix collision can never resolve to the wrong record.
"""

from __future__ import annotations

import bisect
import io
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import BinaryIO

_BUCKET_SHIFT = 52  # 4096 buckets by the top 12 bits of the (signed) prefix
_BUCKETS = 4096
_PART = 64  # buckets read back from a spill file at a time
SPILL_AFTER = 1 << 17  # entries an IndexBuilder with a spill file holds in memory (2 MiB)


def _empty() -> array[int]:
    return array("q")


@dataclass(frozen=True)
class CredentialIndex:
    """Sorted base arrays plus the overlay of changes since they were built."""

    prefixes: array[int] = field(default_factory=_empty)
    rowids: array[int] = field(default_factory=_empty)
    added: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    dead: frozenset[int] = frozenset()

    def candidates(self, prefix: int) -> list[int]:
        """Rowids of live records that may hold a credential with this prefix."""
        lo = bisect.bisect_left(self.prefixes, prefix)
        hi = bisect.bisect_right(self.prefixes, prefix, lo)
        found = [*self.rowids[lo:hi], *self.added.get(prefix, ())]
        return [r for r in found if r not in self.dead] if self.dead else found

    def changed(self, add: Iterable[tuple[int, int]], kill: Iterable[int]) -> CredentialIndex:
        """A new index with entries ``(prefix, rowid)`` added and rowids ``kill`` dead."""
        added = dict(self.added)
        for prefix, rowid in add:
            added[prefix] = (*added.get(prefix, ()), rowid)
        dead = self.dead.union(kill)
        return CredentialIndex(self.prefixes, self.rowids, added, dead)

    def replayed(self, log: Iterable[tuple[int, int, bool]]) -> CredentialIndex:
        """This index with a logged overlay ``(prefix, rowid, added)`` applied in order.

        ``added`` false means the rowid died (its prefix is not used). One pass, so that a
        long log replays in linear time at start-up.
        """
        added: dict[int, list[int]] = {k: list(v) for k, v in self.added.items()}
        dead = set(self.dead)
        for prefix, rowid, is_add in log:
            if is_add:
                added.setdefault(prefix, []).append(rowid)
            else:
                dead.add(rowid)
        overlay = {k: tuple(v) for k, v in added.items()}
        return CredentialIndex(self.prefixes, self.rowids, overlay, frozenset(dead))

    def compacted(self) -> CredentialIndex:
        """The live entries as one sorted base, no overlay: what a rebuild from the stored
        records gives, merged from this index instead.

        A rebuild reads every record back and sorts all their entries again (0.9 s of
        Python holding the interpreter lock for 100,000 members, beside the doors' loop);
        the base is sorted already, and rowids only grow (the store never reuses one), so
        an added entry sorts after the base's entries of its prefix.

        Most of an overlay is members written again with the cards they had: a dead base
        entry and an added one of the same prefix. Where the dead entry is the last of its
        prefix in the base and the prefix gained one entry, the new rowid takes its place
        in a copy of the base's rowids (no entry moves); the rest (new credentials, removed
        ones, prefixes shared) is merged in one pass over the base, a slice at a time.
        """
        dead = self.dead
        base_prefixes = self.prefixes
        rowids = array("q", self.rowids)  # a copy: an index is never changed in place
        added = {
            prefix: live
            for prefix, entries in self.added.items()
            if (live := sorted(r for r in entries if r not in dead))
        }
        drops: list[int] = []
        last = len(base_prefixes) - 1
        for at in [i for i, rowid in enumerate(rowids) if rowid in dead] if dead else []:
            prefix = base_prefixes[at]
            taking = added.get(prefix)
            if (
                taking is not None
                and len(taking) == 1
                and (at == last or base_prefixes[at + 1] != prefix)
            ):
                rowids[at] = taking[0]
                del added[prefix]
            else:
                drops.append(at)
        if not drops and not added:
            return CredentialIndex(base_prefixes, rowids)
        return _merged(base_prefixes, rowids, drops, added)

    @property
    def overlay_size(self) -> int:
        """Entries in the overlay; the store rebuilds the base when this grows large."""
        return sum(len(v) for v in self.added.values()) + len(self.dead)

    def __len__(self) -> int:
        return len(self.prefixes) + sum(len(v) for v in self.added.values())


def _merged(
    base_prefixes: array[int],
    base_rowids: array[int],
    drops: list[int],
    added: Mapping[int, list[int]],
) -> CredentialIndex:
    """The base without the entries at ``drops`` (ascending), with ``added``'s sorted
    rowids merged in after the base's entries of their prefix."""
    prefixes, rowids = array("q"), array("q")
    at = dropped = 0

    def copy_live_until(stop: int) -> None:
        """Copy the base's entries from ``at`` to ``stop`` but the dropped, a slice at a time."""
        nonlocal at, dropped
        while dropped < len(drops) and drops[dropped] < stop:
            prefixes.extend(base_prefixes[at : drops[dropped]])
            rowids.extend(base_rowids[at : drops[dropped]])
            at = drops[dropped] + 1
            dropped += 1
        prefixes.extend(base_prefixes[at:stop])
        rowids.extend(base_rowids[at:stop])
        at = stop

    for prefix in sorted(added):
        copy_live_until(bisect.bisect_right(base_prefixes, prefix, at))
        for rowid in added[prefix]:
            prefixes.append(prefix)
            rowids.append(rowid)
    copy_live_until(len(base_prefixes))
    return CredentialIndex(prefixes, rowids)


class IndexBuilder:
    """Collects ``(prefix, rowid)`` entries and yields them sorted, in bounded memory.

    Sorting three million pairs as Python tuples or big ints would take several hundred
    MB; entries are bucketed by their top bits into arrays instead, and each small bucket
    is sorted on its own. Given a ``spill`` file, the builder also holds at most
    ``spill_after`` entries (16 bytes each) in memory: :meth:`spill_if_full` appends them
    to the file, bucket by bucket, and :meth:`sorted_runs` reads them back a part of the
    buckets at a time. A snapshot builder's memory then does not grow with the set.
    """

    def __init__(self, spill: BinaryIO | None = None, spill_after: int | None = None) -> None:
        self._prefixes: list[array[int]] = [array("q") for _ in range(_BUCKETS)]
        self._rowids: list[array[int]] = [array("q") for _ in range(_BUCKETS)]
        self._spill = spill
        self._spill_after = SPILL_AFTER if spill_after is None else spill_after
        self._spilled: list[tuple[int, array[int]]] = []  # (offset, entries per bucket)

    def add(self, prefix: int, rowid: int) -> None:
        """Add one entry."""
        bucket = (prefix >> _BUCKET_SHIFT) + _BUCKETS // 2
        self._prefixes[bucket].append(prefix)
        self._rowids[bucket].append(rowid)

    def extend(self, prefixes: Iterable[int], rowids: Iterable[int]) -> None:
        """Add the entries ``zip(prefixes, rowids)``: :meth:`add` of each, without a call."""
        by_bucket, rowids_by_bucket = self._prefixes, self._rowids
        shift, middle = _BUCKET_SHIFT, _BUCKETS // 2
        for prefix, rowid in zip(prefixes, rowids, strict=True):
            bucket = (prefix >> shift) + middle
            by_bucket[bucket].append(prefix)
            rowids_by_bucket[bucket].append(rowid)

    def __len__(self) -> int:
        return self.held + sum(sum(c) for _, c in self._spilled)

    @property
    def held(self) -> int:
        """Entries held in memory (not spilled)."""
        return sum(map(len, self._prefixes))

    def spill_if_full(self) -> None:
        """Move the entries held in memory to the spill file, if they are too many."""
        if self._spill is None or self.held < self._spill_after:
            return
        spill = self._spill
        offset = spill.seek(0, io.SEEK_END)
        counts = array("q", map(len, self._prefixes))
        spill.writelines(self._prefixes)  # every bucket's prefixes, then every one's rowids
        spill.writelines(self._rowids)
        self._spilled.append((offset, counts))
        self._prefixes = [array("q") for _ in range(_BUCKETS)]
        self._rowids = [array("q") for _ in range(_BUCKETS)]

    def _bucket_parts(self, first: int) -> Iterator[tuple[array[int], array[int]]]:
        """The entries of buckets ``first`` .. ``first + _PART - 1`` (spilled ones and those
        held), one bucket after the other, unsorted."""
        prefixes = [array("q") for _ in range(_PART)]
        rowids = [array("q") for _ in range(_PART)]
        spill = self._spill
        for offset, counts in self._spilled:
            assert spill is not None
            before, held = sum(counts[:first]), sum(counts)
            part = counts[first : first + _PART]
            size = sum(part) * 8
            spill.seek(offset + before * 8)
            p = memoryview(spill.read(size))
            spill.seek(offset + (held + before) * 8)
            r = memoryview(spill.read(size))
            at = 0
            for i, n in enumerate(part):
                prefixes[i].frombytes(p[at : at + n * 8])
                rowids[i].frombytes(r[at : at + n * 8])
                at += n * 8
        for i in range(_PART):
            bucket = first + i
            prefixes[i].extend(self._prefixes[bucket])
            rowids[i].extend(self._rowids[bucket])
            self._prefixes[bucket] = self._rowids[bucket] = array("q")  # free as we go
            yield prefixes[i], rowids[i]
            prefixes[i] = rowids[i] = array("q")

    def sorted_runs(
        self,
        dropped: Set[int] = frozenset(),
        share: Callable[[int, list[int]], list[int]] | None = None,
    ) -> Iterator[tuple[array[int], array[int]]]:
        """The entries sorted, as ``(prefixes, rowids)`` a bucket at a time; empties the builder.

        Rowids in ``dropped`` are left out. Where several rowids share a prefix, ``share``
        (given the prefix and the rowids, ascending) says which keep it. A bucket without
        either is copied as it is, in C, so that a million members index in a few seconds.
        """
        for part in range(0, _BUCKETS, _PART):
            for bucket_prefixes, bucket_rowids in self._bucket_parts(part):
                if not dropped:
                    rowid_of = dict(zip(bucket_prefixes, bucket_rowids, strict=True))
                    if len(rowid_of) == len(bucket_prefixes):
                        # each prefix once (the usual bucket): sorting the prefixes, plain
                        # ints, is enough, and costs a fraction of sorting pairs
                        ordered = sorted(rowid_of)
                        yield array("q", ordered), array("q", map(rowid_of.__getitem__, ordered))
                        continue
                pairs = sorted(zip(bucket_prefixes, bucket_rowids, strict=True))
                prefixes, rowids = array("q"), array("q")
                for prefix, run in _runs(pairs):
                    live = [r for r in run if r not in dropped] if dropped else run
                    if len(live) > 1 and share is not None:
                        live = share(prefix, live)
                    for rowid in live:
                        prefixes.append(prefix)
                        rowids.append(rowid)
                yield prefixes, rowids
        self._spilled = []

    def build(
        self,
        dropped: Set[int] = frozenset(),
        share: Callable[[int, list[int]], list[int]] | None = None,
    ) -> CredentialIndex:
        """The sorted base index of the entries (no overlay); empties the builder.

        ``dropped`` and ``share`` as for :meth:`sorted_runs`.
        """
        prefixes, rowids = array("q"), array("q")
        for run_prefixes, run_rowids in self.sorted_runs(dropped, share):
            prefixes.extend(run_prefixes)
            rowids.extend(run_rowids)
        return CredentialIndex(prefixes, rowids)


def _runs(pairs: list[tuple[int, int]]) -> Iterator[tuple[int, list[int]]]:
    """Each distinct prefix of sorted ``(prefix, rowid)`` pairs with its rowids."""
    i = 0
    while i < len(pairs):
        prefix = pairs[i][0]
        j = i
        while j < len(pairs) and pairs[j][0] == prefix:
            j += 1
        yield prefix, [rowid for _, rowid in pairs[i:j]]
        i = j
