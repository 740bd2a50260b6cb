"""A crash injected into sync, or its wire process killed: the sync is rebuilt and
check-ins still reach the central."""

from __future__ import annotations

import os
import signal

import pytest

from gateway.sync.entitlement_sync import EntitlementSync
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

    real_run = EntitlementSync.run
    crashes = 0

    async def crashing_run(self: EntitlementSync) -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("injected sync bug")
        await real_run(self)

    monkeypatch.setattr(EntitlementSync, "run", crashing_run)
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
        assert "injected sync bug" in failed_at_central()[0]["detail"]["error"]
        assert gw.sync is first_runner  # one runner after the restart, not one per failure
        assert len(gw._published) == 1  # the failed runner's outbox no longer wakes up
    finally:
        await gw.stop()
    assert crashes == 1


async def test_a_killed_wire_process_is_reported_and_replaced_and_nothing_is_lost(
    tmp_path, broker, central
):
    """The link and the outbox live in a process of their own (gateway.sync.wire): killed,
    it is a sync failure (event, status), a new one starts, and the check-ins decided
    meanwhile reach the central, each once."""
    from gateway.config import parse_config
    from gateway.daemon import Gateway

    text = config(tmp_path, "door-1", broker.port, central.public_key_b64)
    gw = Gateway(parse_config(text, "test"), backoff=FAST)
    await gw.start()
    try:
        await until(lambda: gw.store.version == central.version and gw.online())
        first = await present(gw, "nfc", "04000001")
        await central.wait_checkins("door-1", 1)
        assert gw.sync is not None and gw.sync.wire.process is not None
        wire_pid = gw.sync.wire.process.pid
        assert wire_pid != os.getpid()
        os.kill(wire_pid, signal.SIGKILL)
        await until(lambda: gw.status()["components"]["sync"]["failures"] == 1)
        failure = gw.status()["components"]["sync"]
        assert "MQTT wire process ended" in failure["last_error"], failure
        during = [await present(gw, "nfc", "04000001") for _ in range(3)]  # offline or not
        await until(lambda: gw.online())
        assert gw.sync.wire.process is not None and gw.sync.wire.process.pid != wire_pid
        got = await central.wait_checkins("door-1", 4)
        ids = [c["id"] for c in got]
        assert ids == [first["id"], *(c["id"] for c in during)]  # once each, in order
    finally:
        await gw.stop()
    # stopped: no wire process is left behind
    process = gw.sync.wire.process if gw.sync is not None else None
    assert process is None or process.poll() is not None
