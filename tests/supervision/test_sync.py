"""A crash injected into sync: the runner is rebuilt and check-ins still reach the central."""

from __future__ import annotations

import pytest

from gateway.sync.outbox import Outbox
from simulators.central import CentralSimulator
from tests.integration.gateways import RULES, SITE, config, member, present
from tests.supervision.helpers import FAST, until


@pytest.fixture
async def central(broker):
    async with CentralSimulator(
        "127.0.0.1", broker.port, SITE, rules=RULES, records=[member(1)], time_interval=None
    ) as sim:
        yield sim


async def test_sync_that_raises_is_rebuilt_and_check_ins_still_arrive(
    tmp_path, broker, central, monkeypatch
):
    from gateway.config import parse_config
    from gateway.daemon import Gateway

    real_run = Outbox.run
    crashes = 0

    async def crashing_run(self: Outbox) -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("injected outbox bug")
        await real_run(self)

    monkeypatch.setattr(Outbox, "run", crashing_run)
    text = config(tmp_path, "door-1", broker.port, central.public_key_b64)
    gw = Gateway(parse_config(text, "test"), backoff=FAST)
    await gw.start()
    try:
        await until(lambda: gw.status()["components"]["sync"]["failures"] == 1)
        await until(lambda: gw.store.version == central.version)
        first_runner = gw.sync
        checkin = await present(gw, "nfc", "04000001")
        assert checkin["decision"] == "granted"
        [got] = await central.wait_checkins("door-1", 1)
        assert got["id"] == checkin["id"]

        def failed_at_central() -> list[dict]:
            got = central.received.get("door-1")
            return [e for e in got.events if e["type"] == "component_failed"] if got else []

        await until(failed_at_central)  # the failure reached the central once sync was back
        assert failed_at_central()[0]["detail"]["component"] == "sync"
        assert "injected outbox bug" in failed_at_central()[0]["detail"]["error"]
        assert gw.sync is first_runner  # one runner after the restart, not one per failure
        assert len(gw._published) == 1  # the failed runner's outbox no longer wakes up
    finally:
        await gw.stop()
    assert crashes == 1
