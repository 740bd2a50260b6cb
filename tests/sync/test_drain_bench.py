"""bench.drain measures the drain against a central that does a central's work: it checks
the signature of every check-in (PROTOCOL.md, "Trust between gateways"), the floor's too."""

from __future__ import annotations

from pathlib import Path

from bench.drain import drain
from tests.support.broker import Broker


async def test_the_drain_benchs_central_verifies_every_check_in(
    broker: Broker, tmp_path: Path
) -> None:
    assert broker.process is not None
    out = await drain(broker.port, broker.process.pid, tmp_path, 300)
    assert out["distinct_at_central"] == 300 and out["duplicates_at_central"] == 0
    assert out["verified_at_central"] == 300
