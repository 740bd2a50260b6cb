"""Issue 10 point 2: what the dashboard is told, from the gateway's own parts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.sync.entitlement_sync import EntitlementSync
from gateway.web.gateway_side import GatewaySide
from simulators.central import CentralSimulator
from tests.integration.gateways import running
from tests.support.broker import Broker, eventually


def _side(sync: Any) -> GatewaySide:
    config = SimpleNamespace(gateway=SimpleNamespace(language="nb"))
    return GatewaySide(SimpleNamespace(config=config, sync=sync), clock=lambda: 100.0)  # type: ignore[arg-type]


async def test_a_snapshot_arriving_shows_its_version_chunks_of_all_and_records(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the dashboard is told while a snapshot of 12 chunks comes in, chunk by chunk."""
    from tests.integration.gateways import SITE
    from tests.integration.gateways import config as gateway_text

    shown: list[dict[str, Any] | None] = []
    noted = EntitlementSync._note_progress

    def and_show(sync: EntitlementSync, answer: dict[str, Any]) -> None:
        noted(sync, answer)
        shown.append(_side(SimpleNamespace(entitlements=sync))._sync_progress())

    monkeypatch.setattr(EntitlementSync, "_note_progress", and_show)
    async with CentralSimulator(
        "127.0.0.1", broker.port, SITE, members=600, chunk_records=50
    ) as central:
        text = gateway_text(tmp_path / "state", "gw-1", broker.port, central.public_key_b64)
        async with running(text) as gateway:
            await eventually(lambda: gateway.store.version is not None, within=20)
            assert _side(gateway.sync)._sync_progress() is None  # adopted: nothing arriving
    assert len(shown) == 11  # the 12th chunk completes the set
    for n, progress in enumerate(shown, start=1):
        assert progress is not None
        assert progress["snapshot"] == "arriving" and progress["version"] == 1
        assert progress["chunks"] == f"{n} of 12" and progress["records_staged"] == 50 * n
        assert 0 <= progress["last_chunk_s_ago"] < 5


def test_no_sync_or_none_arriving_shows_nothing() -> None:
    assert _side(None)._sync_progress() is None
    idle = SimpleNamespace(entitlements=SimpleNamespace(progress=lambda: None))
    assert _side(idle)._sync_progress() is None
