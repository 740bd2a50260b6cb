"""The phone-pass replay cache survives a restart and forgets what can never verify again."""

from __future__ import annotations

from gateway.pass_cache import PassCache


def test_a_presented_pass_is_still_seen_after_a_restart(tmp_path):
    cache = PassCache.open(tmp_path / "p.sqlite")
    cache.add("dev-1", 1000, "AAAA")
    cache.close()
    again = PassCache.open(tmp_path / "p.sqlite")
    assert again.seen("dev-1", 1000, "AAAA")
    assert not again.seen("dev-1", 1000, "BBBB")
    assert again.entries() == {("dev-1", 1000, "AAAA")}


def test_prune_forgets_tokens_outside_the_window(tmp_path):
    cache = PassCache.open(tmp_path / "p.sqlite")
    cache.add("dev-1", 900, "old")
    cache.add("dev-1", 990, "recent")
    assert cache.prune(1000, 30) == 1
    assert cache.entries() == {("dev-1", 990, "recent")}
