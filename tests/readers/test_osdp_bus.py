"""Issue 12 point 18: several OSDP readers on one RS-485 bus (multi-drop).

Config validation (through the drivers' typed settings and the registry, as
gateway/validation.py runs it) accepts readers sharing a port at different addresses with
the same line settings, and refuses two at one address or two baud rates on one port,
with the key path.

At run time the gateway's driver runs one libosdp Control Panel for the bus, with a PD
per reader (libosdp's own PeripheralDevice as the readers, on a model of the shared wire:
simulators/rs485_bus.py): each reads with its own key, tamper/power/keypad reports become
events, and one reader rebooting is recovered on its own while its neighbour reads on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, GatewaySection, ReaderConfig
from gateway.profiles import build_reader
from gateway.state_dir import StateDir
from gateway.validation import all_device_problems
from simulators.rs485_bus import Rs485Bus
from tests.readers.helpers import HealthLog, running

PORT = "/dev/ttyUSB0"
WITHIN = 15.0  # generous: SC setup takes ~1 s, CI machines are slow and shared


def osdp_reader(reader_id: str, address: int | None, **options: Any) -> ReaderConfig:
    return ReaderConfig(
        id=reader_id,
        profile="osdp-generic-v2",
        door="front",
        port=PORT,
        address=address,
        options=options,
    )


def problems(*readers: ReaderConfig) -> list[str]:
    config = Config(gateway=GatewaySection(id="gw-1", site="club"), readers=list(readers))
    return [str(p) for p in all_device_problems(config)]


def test_readers_at_different_addresses_with_one_baud_rate_share_a_port() -> None:
    assert problems(osdp_reader("in", 1), osdp_reader("out", 2), osdp_reader("side", 3)) == []


def test_two_readers_at_one_address_on_a_port_are_refused_with_the_key() -> None:
    found = problems(osdp_reader("in", 1), osdp_reader("out", 1))
    assert len(found) == 1, found
    assert found[0].startswith("readers[out].address: address 1 on /dev/ttyUSB0 is already")


def test_two_readers_left_at_the_profiles_address_are_refused_too() -> None:
    """No ``address`` in the config means the profile's (0) for both: they collide."""
    found = problems(osdp_reader("in", None), osdp_reader("out", None))
    assert any(p.startswith("readers[out].address:") for p in found), found
    assert problems(osdp_reader("in", None), osdp_reader("out", 1)) == []


def test_two_baud_rates_on_one_port_are_refused_with_the_key() -> None:
    found = problems(osdp_reader("in", 1), osdp_reader("out", 2, baudrate=38400))
    assert any(
        p.startswith("readers[out].port:") and "different line settings" in p for p in found
    ), found


# --- two libosdp PDs on one wire, driven by the gateway's driver ---------------------


def store_key(state: StateDir, reader_id: str, key: bytes) -> None:
    path = state.osdp_scbk(reader_id)
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)


def bus_reader(state: StateDir, reader_id: str, port: str, address: int, health: Any) -> Any:
    config = ReaderConfig(
        id=reader_id,
        profile="osdp-generic-v2",
        door="front",
        port=port,
        address=address,
        options={"baudrate": 115200, "online_timeout": 5.0, "settle_seconds": 0.5},
    )
    return build_reader(config, state, health)


class EventLog:
    """What the readers reported besides reads (what the daemon journals)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.seen.append((kind, detail))

    async def wait_for(self, kind: str, reader: str, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for seen_kind, detail in self.seen:
                    if seen_kind == kind and detail.get("reader") == reader:
                        return detail
                await asyncio.sleep(0.02)


@pytest.fixture
def pds() -> Iterator[Any]:
    """libosdp PDs (the osdp package's PeripheralDevice) and the wire they share."""
    pytest.importorskip("osdp", reason="libosdp (the 'osdp' extra) is not installed")
    from simulators.osdp_pd import OsdpReaderSimulator

    started: list[Any] = []
    bus = Rs485Bus()

    def start(key: bytes, address: int) -> Any:
        sim = OsdpReaderSimulator(scbk=key, address=address).start()
        started.append(sim)
        bus.attach(sim.path)
        return sim

    yield bus, start
    for sim in started:
        sim.stop()
    bus.close()


async def test_two_readers_on_one_bus_read_report_and_recover_one_at_a_time(
    tmp_path: Path, pds: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bus, start = pds
    state = StateDir(tmp_path / "state").ensure()
    key_in, key_out = secrets.token_bytes(16), secrets.token_bytes(16)
    store_key(state, "in", key_in)
    store_key(state, "out", key_out)
    sim_in, sim_out = start(key_in, 1), start(key_out, 2)
    health_in, health_out = HealthLog(), HealthLog()
    events = EventLog()
    reader_in = bus_reader(state, "in", bus.path, 1, health_in)
    reader_out = bus_reader(state, "out", bus.path, 2, health_out)
    reader_in.events = reader_out.events = events
    async with running(reader_in) as reads_in, running(reader_out) as reads_out:
        await health_in.wait_for(lambda h: h.online, within=WITHIN)
        await health_out.wait_for(lambda h: h.online, within=WITHIN)
        assert reader_in._bus is reader_out._bus, "one control panel for the bus"
        await asyncio.sleep(0.6)  # past the settling time

        # each reads its own cards, over a Secure Channel with its own key
        assert (await read_card(sim_in, reads_in, 1001)).value == "1001"
        assert (await read_card(sim_out, reads_out, 2001)).value == "2001"

        # a tamper from one, keys on the other: events, never the digits
        assert await asyncio.to_thread(sim_in.report_local_status, tamper=True)
        tamper = await events.wait_for("tamper", "in")
        assert tamper["active"] is True
        assert reader_in.health.alerts == ("tamper",)
        assert reader_out.health.alerts == ()
        assert await asyncio.to_thread(sim_out.report_local_status, power_fault=True)
        power = await events.wait_for("reader_power", "out")
        assert power["active"] is True and reader_out.health.alerts == ("power fault",)
        assert await asyncio.to_thread(sim_out.press_keys, "4711")
        keypad = await events.wait_for("reader_keypad", "out")
        assert keypad == {"reader": "out", "keys": 4}
        assert "4711" not in caplog.text and "4711" not in repr(events.seen)

        # "in" reboots (a new Secure Channel session); "out" keeps reading meanwhile, on
        # the same panel: the reader is restarted on its own, not the bus
        panel = reader_in._bus.session
        waiting = asyncio.create_task(dropped_and_back(health_in))
        rebooting = asyncio.create_task(asyncio.to_thread(sim_in.reboot, 1.0))
        read_meanwhile = []
        number = 2100
        while not rebooting.done() or not waiting.done():
            number += 1
            read_meanwhile.append((await read_card(sim_out, reads_out, number)).value)
            await asyncio.sleep(0.2)
        await rebooting
        back = asyncio.get_running_loop().time()
        await waiting
        await asyncio.sleep(0.6)  # a card shown now is a fresh presentation
        assert (await read_card(sim_in, reads_in, 1002)).value == "1002"
        assert asyncio.get_running_loop().time() - back < 5.0, "libosdp's 300 s wait won"
        assert len(read_meanwhile) >= 3, "the neighbour was read while the other rebooted"
        assert reader_in._bus.session is panel, "the whole panel was restarted"
        assert health_in.last is not None and health_in.last.online
        assert health_out.last is not None and health_out.last.online
        assert (await read_card(sim_out, reads_out, 2999)).value == "2999"


async def read_card(sim: Any, reads: Any, number: int, within: float = WITHIN) -> Any:
    """Present a card until the gateway reads it: a Secure Channel that this busy test
    machine let time out is set up again by the driver, and a read in the first
    moments after that is dropped by design (it may have been queued)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        assert await asyncio.to_thread(sim.present_card, number)
        try:
            return await reads.next_where(lambda r: r.value == str(number), within=2.0)
        except TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


async def dropped_and_back(health: HealthLog, within: float = WITHIN) -> None:
    """Wait for an offline report, then an online one, both after this call."""
    start = len(health.changes)
    async with asyncio.timeout(within):
        while True:
            later = health.changes[start:]
            offline = next((i for i, h in enumerate(later) if not h.online), None)
            if offline is not None and any(h.online for h in later[offline:]):
                return
            await asyncio.sleep(0.02)


async def test_a_damaged_key_of_one_reader_does_not_stop_the_bus(tmp_path: Path, pds: Any) -> None:
    bus, start = pds
    state = StateDir(tmp_path / "state").ensure()
    key = secrets.token_bytes(16)
    store_key(state, "good", key)
    damaged = state.osdp_scbk("damaged")
    damaged.write_text("not a key\n")
    damaged.chmod(0o600)
    sim = start(key, 2)
    health_damaged, health_good = HealthLog(), HealthLog()
    reader_damaged = bus_reader(state, "damaged", bus.path, 1, health_damaged)
    reader_good = bus_reader(state, "good", bus.path, 2, health_good)
    async with running(reader_damaged), running(reader_good) as reads:
        report = await health_damaged.wait_for(lambda h: "damaged" in h.reason, within=WITHIN)
        assert not report.online
        await health_good.wait_for(lambda h: h.online, within=WITHIN)
        await asyncio.sleep(0.6)
        assert (await read_card(sim, reads, 4242)).value == "4242"
