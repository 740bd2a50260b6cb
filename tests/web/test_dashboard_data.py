"""Issue 10 point 2: what the dashboard is told, from the gateway's own parts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.web.gateway_side import GatewaySide


def _side(sync: Any) -> GatewaySide:
    config = SimpleNamespace(gateway=SimpleNamespace(language="nb"))
    return GatewaySide(SimpleNamespace(config=config, sync=sync), clock=lambda: 100.0)  # type: ignore[arg-type]


def test_a_snapshot_arriving_shows_its_version_records_and_last_chunk() -> None:
    entitlements = SimpleNamespace(_snapshot_progress=97.5, _progress=(7, object(), 60_000))
    shown = _side(SimpleNamespace(entitlements=entitlements))._sync_progress()
    assert shown == {"snapshot": "arriving", "last_chunk_s_ago": 2.5, "version": 7,
                     "records_staged": 60_000}  # fmt: skip


def test_no_sync_or_none_arriving_shows_nothing() -> None:
    assert _side(None)._sync_progress() is None
    idle = SimpleNamespace(entitlements=SimpleNamespace(_snapshot_progress=None))
    assert _side(idle)._sync_progress() is None


def test_a_progress_mapping_wins_when_the_sync_offers_one() -> None:
    entitlements = SimpleNamespace(progress=lambda: {"chunks": 12, "of": 40, "records": 60_000})
    assert _side(SimpleNamespace(entitlements=entitlements))._sync_progress() == {
        "chunks": 12, "of": 40, "records": 60_000}  # fmt: skip
