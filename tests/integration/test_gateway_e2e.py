"""The whole gateway against a real Mosquitto and the central simulator (PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from simulators.central import CentralSimulator
from simulators.pn532 import Pn532Simulator
from tests.integration.gateways import RULES, SITE, config, member, present, running, ticket


async def until(condition, within: float = 10.0) -> float:
    """Wait for ``condition()``; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def central(broker):
    async with CentralSimulator(
        "127.0.0.1",
        broker.port,
        SITE,
        rules=RULES,
        records=[member(1), member(2), ticket()],
        time_interval=None,
        gateways={},  # strict: every gateway's messages must be signed by its registered key
    ) as sim:
        yield sim


async def test_a_card_on_the_reader_opens_the_door_and_the_checkin_reaches_the_central(
    tmp_path, broker, central
):
    with Pn532Simulator() as nfc:
        readers = (
            f'[[readers]]\nid = "nfc"\nprofile = "pn532-hsu"\ndoor = "in"\nport = "{nfc.path}"\n'
        )
        text = config(tmp_path, "door-1", broker.port, central.public_key_b64, readers=readers)
        async with running(text, central) as gw:
            await until(lambda: gw.store.version == central.version)
            nfc.place("04000001")
            [checkin] = await central.wait_checkins("door-1", 1)
            nfc.remove()
    assert (checkin["member"], checkin["decision"], checkin["reason"]) == ("M1", "granted", "ok")
    assert checkin["passed"] is True and checkin["offline"] is False
    board_changes = [c.on for c in gw.boards["io"].changes(0)]
    assert True in board_changes  # the lock was released


async def test_member_changes_at_the_central_change_decisions_within_a_second(
    tmp_path, broker, central
):
    async with running(
        config(tmp_path, "door-1", broker.port, central.public_key_b64), central
    ) as gw:
        await until(lambda: gw.store.version == central.version)
        await central.add_member(member(3))
        assert await until(lambda: gw.store.find("nfc", "04000003") is not None) < 1.0
        assert (await present(gw, "nfc", "04000003"))["reason"] == "ok"

        today = datetime.now(UTC).date()
        await central.freeze_contract("M3", "C1", today, today + timedelta(days=3))
        await until(lambda: gw.store.member("M3").contracts[0].freezes, within=1.0)
        assert (await present(gw, "nfc", "04000003"))["reason"] == "frozen"

        now = datetime.now(UTC)
        await central.block("M2", now - timedelta(minutes=1), now + timedelta(days=1))
        await until(lambda: gw.store.member("M2").blocks, within=1.0)
        assert (await present(gw, "nfc", "04000002"))["reason"] == "blocked"

        await central.delete("M3")
        await until(lambda: gw.store.member("M3") is None, within=1.0)
        assert (await present(gw, "nfc", "04000003"))["reason"] == "unknown_credential"


async def test_a_single_use_ticket_used_at_one_gateway_is_refused_at_the_other(
    tmp_path, broker, central
):
    key = central.public_key_b64
    async with (
        running(config(tmp_path / "a", "door-a", broker.port, key), central) as a,
        running(config(tmp_path / "b", "door-b", broker.port, key), central) as b,
    ):
        await until(lambda: a.store.version == b.store.version == central.version)
        assert (await present(a, "code", "EVT-1"))["reason"] == "ok"
        await until(lambda: b.state.ticket_uses("T-1") == 1)
        assert (await present(b, "code", "EVT-1"))["reason"] == "ticket_used"
        # occupancy adds up across the site's gateways
        assert (await present(b, "nfc", "04000001"))["reason"] == "ok"
        await until(lambda: a.state.inside("gym") == 2 and b.state.inside("gym") == 2)


async def test_open_command_releases_the_door_and_is_recorded_replays_are_refused(
    tmp_path, broker, central
):
    async with running(
        config(tmp_path, "door-1", broker.port, central.public_key_b64), central
    ) as gw:
        await until(lambda: gw.link_up())
        command_id = await central.send_command("door-1", "open", "in", 1)
        await central.wait_until(lambda: len(central.received["door-1"].results) == 1)
        result = central.received["door-1"].results[0]
        assert result["gw"] == "door-1" and "sig" in result  # signed (the central verified it)
        assert {k: result[k] for k in ("id", "ok", "error")} == {
            "id": command_id,
            "ok": True,
            "error": None,
        }
        checkins = await central.wait_checkins("door-1", 1)
        assert (checkins[0]["reason"], checkins[0]["credential"]) == ("remote_open", "unknown")
        assert True in [c.on for c in gw.boards["io"].changes(0)]

        await central.send_command("door-1", "open", "in", 1, command_id=command_id)
        old = datetime.now(UTC) - timedelta(seconds=60)
        await central.send_command("door-1", "open", "in", 1, issued_at=old)
        await central.wait_until(lambda: len(central.received["door-1"].results) == 3)
        errors = [r["error"] for r in central.received["door-1"].results[1:]]
        assert errors == ["replayed", "stale"]


async def test_lockdown_command_refuses_entry_and_normal_restores_it(tmp_path, broker, central):
    async with running(
        config(tmp_path, "door-1", broker.port, central.public_key_b64), central
    ) as gw:
        await until(lambda: gw.store.version == central.version)
        await central.send_command("door-1", "lockdown", "*")
        await until(lambda: gw.doors["in"].mode == "lockdown")
        assert (await present(gw, "nfc", "04000001"))["reason"] == "locked_down"
        assert (await present(gw, "nfc", "04000001", door="out"))["reason"] == "ok"  # egress
        await central.send_command("door-1", "normal", "*")
        await until(lambda: gw.doors["in"].mode == "normal")
        assert (await present(gw, "nfc", "04000001"))["reason"] == "ok"


@pytest.mark.slow
async def test_offline_decisions_all_arrive_in_order_after_the_outage(tmp_path, broker, central):
    count = 5000
    async with running(
        config(tmp_path, "door-1", broker.port, central.public_key_b64), central
    ) as gw:
        await until(lambda: gw.store.version == central.version)
        await until(lambda: central.received["door-1"].events != [])  # "started" went out
        broker.stop()
        await until(lambda: not gw.link_up())
        for i in range(count):
            final = await present(gw, "nfc", "04000001" if i % 2 else "04000002")
            assert final["offline"] is True
        broker.start()
        await central.wait_checkins("door-1", count, within=120)
        got = central.received["door-1"]
        seqs = [c["seq"] for c in got.checkins]
        assert seqs == sorted(seqs) and len(set(c["id"] for c in got.checkins)) == count
        await until(lambda: gw.journal.acked_upto >= gw.journal.last_seq - 2, within=30)
        assert await gw.journal.pending_count() <= 2
