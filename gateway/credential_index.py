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
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from operator import itemgetter

_BUCKET_SHIFT = 52  # 4096 buckets by the top 12 bits of the (signed) prefix


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

    @property
    def overlay_size(self) -> int:
        """Entries in the overlay; the store rebuilds the base when this grows large."""
        return sum(len(v) for v in self.added.values()) + len(self.dead)

    def __len__(self) -> int:
        return len(self.prefixes) + sum(len(v) for v in self.added.values())


class IndexBuilder:
    """Collects ``(prefix, rowid)`` entries and yields them sorted, in bounded memory.

    Sorting three million pairs as Python tuples or big ints would take several hundred
    MB; entries are bucketed by their top bits into arrays instead, and each small bucket
    is sorted on its own.
    """

    def __init__(self) -> None:
        self._prefixes: list[array[int]] = [array("q") for _ in range(4096)]
        self._rowids: list[array[int]] = [array("q") for _ in range(4096)]

    def add(self, prefix: int, rowid: int) -> None:
        """Add one entry."""
        bucket = (prefix >> _BUCKET_SHIFT) + 2048
        self._prefixes[bucket].append(prefix)
        self._rowids[bucket].append(rowid)

    def __len__(self) -> int:
        return sum(len(b) for b in self._prefixes)

    def build(
        self,
        dropped: Set[int] = frozenset(),
        share: Callable[[int, list[int]], list[int]] | None = None,
    ) -> CredentialIndex:
        """The sorted base index of the entries (no overlay); empties the builder.

        Rowids in ``dropped`` are left out. Where several rowids share a prefix, ``share``
        (given the prefix and the rowids, ascending) says which keep it. A bucket without
        either is copied as it is, in C, so that a million members index in a few seconds.
        """
        prefixes, rowids = array("q"), array("q")
        first, second = itemgetter(0), itemgetter(1)
        for bucket in range(4096):
            pairs = sorted(zip(self._prefixes[bucket], self._rowids[bucket], strict=True))
            self._prefixes[bucket] = self._rowids[bucket] = array("q")  # free as we go
            sorted_prefixes = array("q", map(first, pairs))
            if not dropped and len(set(sorted_prefixes)) == len(sorted_prefixes):
                prefixes.extend(sorted_prefixes)
                rowids.extend(map(second, pairs))
                continue
            for prefix, run in _runs(pairs):
                live = [r for r in run if r not in dropped] if dropped else run
                if len(live) > 1 and share is not None:
                    live = share(prefix, live)
                for rowid in live:
                    prefixes.append(prefix)
                    rowids.append(rowid)
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
