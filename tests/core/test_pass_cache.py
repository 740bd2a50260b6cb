"""PASSES.md, Verification: ``(d, t, n)`` not seen within the window at this gateway; the
replay cache survives a restart."""

from __future__ import annotations

import pytest

from gateway.errors import StoreError
from gateway.pass_cache import PassCache


@pytest.fixture
def cache(tmp_path):
    c = PassCache.open(tmp_path / "passes.sqlite")
    yield c
    c.close()


def test_a_presented_pass_is_seen_and_others_are_not(cache):
    cache.add("dev-1", 1000, "AAAA")
    assert cache.seen("dev-1", 1000, "AAAA")
    assert not cache.seen("dev-1", 1000, "BBBB")
    assert not cache.seen("dev-2", 1000, "AAAA")
    assert not cache.seen("dev-1", 1001, "AAAA")


def test_a_presented_pass_is_still_seen_after_a_restart(tmp_path):
    cache = PassCache.open(tmp_path / "passes.sqlite")
    cache.add("dev-1", 1000, "AAAA")
    cache.close()
    again = PassCache.open(tmp_path / "passes.sqlite")
    assert again.seen("dev-1", 1000, "AAAA")
    assert again.entries() == {("dev-1", 1000, "AAAA")}
    again.close()


def test_adding_a_pass_twice_keeps_one_entry(cache):
    cache.add("dev-1", 1000, "AAAA")
    cache.add("dev-1", 1000, "AAAA")
    assert cache.entries() == {("dev-1", 1000, "AAAA")}


def test_prune_forgets_tokens_outside_the_window_on_both_sides(cache):
    for t, n in ((900, "old"), (970, "edge"), (990, "recent"), (1030, "ahead"), (1031, "far")):
        cache.add("dev-1", t, n)
    assert cache.prune(1000, 30) == 2
    assert cache.entries() == {("dev-1", 970, "edge"), ("dev-1", 990, "recent"),
                               ("dev-1", 1030, "ahead")}  # fmt: skip
    assert not cache.seen("dev-1", 900, "old")


def test_pruned_tokens_stay_forgotten_after_a_restart(tmp_path):
    cache = PassCache.open(tmp_path / "passes.sqlite")
    cache.add("dev-1", 900, "old")
    cache.add("dev-1", 990, "recent")
    cache.prune(1000, 30)
    cache.close()
    again = PassCache.open(tmp_path / "passes.sqlite")
    assert again.entries() == {("dev-1", 990, "recent")}
    again.close()


def test_entries_is_a_copy_the_decision_cannot_change(cache):
    cache.add("dev-1", 1000, "AAAA")
    cache.entries().clear()
    assert cache.seen("dev-1", 1000, "AAAA")


def test_a_damaged_cache_file_gets_a_clear_error(tmp_path):
    bad = tmp_path / "passes.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=r"damaged.*delete it"):
        PassCache.open(bad)


def test_an_unwritable_place_gets_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="state_dir"):
        PassCache.open(blocker / "passes.sqlite")


def test_a_pass_is_seen_at_once_and_durable_when_its_write_is_done(tmp_path):
    from gateway.pass_cache import PassCache

    cache = PassCache.open(tmp_path / "p.sqlite")
    written = cache.add("dev-1", 1000, "AAAA")
    assert cache.seen("dev-1", 1000, "AAAA")  # before the disk: a replay is refused now
    written.result()
    cache.close()
    assert PassCache.open(tmp_path / "p.sqlite").seen("dev-1", 1000, "AAAA")
