"""The credential index builder: sorted output, and bounded memory with a spill file."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway import credential_index
from gateway.credential_index import IndexBuilder
from gateway.entitlements import parse_record, parse_rules
from gateway.store import EntitlementStore, StagedSet

KEY = b"k" * 32
AT = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def entries(n: int, seed: int = 1) -> list[tuple[int, int]]:
    """Random (prefix, rowid) entries, with repeated prefixes and extreme values."""
    rng = random.Random(seed)
    out = [(rng.randrange(-(2**63), 2**63), rowid) for rowid in range(1, n + 1)]
    out += [(out[i][0], n + i + 1) for i in range(0, n, 7)]  # shared prefixes
    out += [(-(2**63), n * 2 + 1), (2**63 - 1, n * 2 + 2), (0, n * 2 + 3)]
    rng.shuffle(out)
    return out


def build(items: list[tuple[int, int]], spill_after: int | None, **kw: object) -> tuple:
    with tempfile.TemporaryFile() as spill:
        builder = IndexBuilder(spill=spill if spill_after else None, spill_after=spill_after)
        for n, (prefix, rowid) in enumerate(items):
            builder.add(prefix, rowid)
            if n % 50 == 0:
                builder.spill_if_full()
                assert builder.held < (spill_after or len(items)) + 50
        assert len(builder) == len(items)
        index = builder.build(**kw)  # type: ignore[arg-type]
    return list(index.prefixes), list(index.rowids)


def test_entries_come_out_sorted_by_prefix_then_rowid() -> None:
    items = entries(3000)
    prefixes, rowids = build(items, None)
    assert list(zip(prefixes, rowids, strict=True)) == sorted(items)


@pytest.mark.parametrize("spill_after", [1, 64, 1000])
def test_a_spilling_builder_gives_the_same_index_as_one_held_in_memory(spill_after: int) -> None:
    items = entries(3000)
    assert build(items, spill_after) == build(items, None)


def test_dropped_rowids_and_shared_prefixes_are_settled_the_same_after_a_spill() -> None:
    items = entries(3000)
    dropped = frozenset(rowid for _, rowid in items if rowid % 5 == 0)
    asked: list[tuple[int, list[int]]] = []

    def share(prefix: int, rowids: list[int]) -> list[int]:
        asked.append((prefix, rowids))
        return rowids[-1:]  # the later keeps it

    held = build(items, None, dropped=dropped, share=share)
    asked_held = list(asked)
    asked.clear()
    assert build(items, 10, dropped=dropped, share=share) == held
    assert asked == asked_held and asked
    assert not set(held[1]) & dropped


def test_a_staged_set_bigger_than_its_memory_is_adopted_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credential_index, "SPILL_AFTER", 16)  # spills after every chunk
    from simulators.central import default_rules, generated_member

    store = EntitlementStore.open(tmp_path / "store.sqlite", KEY)
    rules = parse_rules(default_rules("bench"))
    staged = StagedSet(store.staging(), chunk_size=100)
    members = [parse_record(generated_member(i)) for i in range(1, 1001)]
    for chunk in range(10):
        staged.add(chunk, members[chunk * 100 : (chunk + 1) * 100])
        assert staged._index.held == 0  # what is held is what bounds the memory
    count, notes = staged.finish(1, rules, {}, AT)
    store.adopt(staged.path)
    assert (count, notes, store.record_count) == (1000, [], 1000)
    for i in (1, 500, 1000):
        found = store.find("nfc", f"04{i:012X}")
        assert found is not None and found.id == f"M{i:07d}"
        assert store.find("code", f"CODE-{i}") == found
    store.close()
    assert [p.name for p in tmp_path.iterdir()] == ["store.sqlite"]  # no scratch file left


def built(pairs: list[tuple[int, int]]) -> credential_index.CredentialIndex:
    builder = IndexBuilder()
    for prefix, rowid in pairs:
        builder.add(prefix, rowid)
    return builder.build()


@pytest.mark.parametrize("seed", range(6))
def test_compacting_gives_the_index_a_rebuild_of_the_live_entries_gives(seed: int) -> None:
    """Deltas add entries (new rowids only grow) and kill rowids, base and added alike,
    some on prefixes the base has; compacting merges instead of rebuilding, to the same."""
    rng = random.Random(seed)
    base = entries(500, seed)
    index, live, next_rowid = built(base), set(base), max(r for _, r in base) + 1
    for _ in range(rng.randrange(1, 6)):
        prefixes = [p for p, _ in live]
        add = []
        for _ in range(rng.randrange(0, 80)):
            prefix = rng.choice(prefixes) if rng.random() < 0.5 else rng.randrange(-(2**63), 2**63)
            add.append((prefix, next_rowid))
            next_rowid += rng.randrange(1, 3)
        kill = {rowid for _, rowid in rng.sample(sorted(live), rng.randrange(0, 60))}
        index = index.changed(add, kill)
        live = {(p, r) for p, r in live | set(add) if r not in index.dead}
    compacted = index.compacted()
    assert compacted == built(sorted(live))
    assert compacted.overlay_size == 0 and len(compacted) == len(live)
    for prefix, _ in rng.sample(sorted(live), 50):
        assert compacted.candidates(prefix) == index.candidates(prefix)


def test_compacting_an_index_with_nothing_dead_copies_the_base_and_merges_the_added() -> None:
    index = built([(5, 1), (9, 2)]).changed([(5, 3), (1, 4), (12, 5)], [])
    assert index.compacted() == built([(1, 4), (5, 1), (5, 3), (9, 2), (12, 5)])


@pytest.mark.parametrize("seed", range(6))
def test_compacting_members_written_again_with_their_cards_gives_a_rebuild(seed: int) -> None:
    """The usual delta: members written again (their rows killed, their cards added under
    new rowids), a few new and removed, and prefixes several entries share (a collision)."""
    rng = random.Random(seed)
    base = entries(400, seed)
    shared = base[0][0]
    base += [(shared, 10_000 + i) for i in range(3)]  # one prefix, four rows
    index, live, next_rowid = built(base), set(base), 20_000
    for _ in range(rng.randrange(1, 4)):
        rewritten = rng.sample(sorted(live), rng.randrange(1, 120))
        add = []
        for prefix, _ in rewritten:
            add.append((prefix, next_rowid))
            next_rowid += 1
        add += [(rng.randrange(-(2**63), 2**63), next_rowid + i) for i in range(rng.randrange(5))]
        next_rowid += 5
        removed = rng.sample(sorted(live), rng.randrange(0, 10))
        kill = {rowid for _, rowid in rewritten + removed}
        index = index.changed(add, kill)
        live = {(p, r) for p, r in live | set(add) if r not in index.dead}
    compacted = index.compacted()
    assert compacted == built(sorted(live))
    assert compacted.overlay_size == 0 and len(compacted) == len(live)
    assert compacted.candidates(shared) == index.candidates(shared)
