"""Fixtures of the door tests: a fake board, a started door, the Modbus simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from drivers.fake_io import FakeBoard
from drivers.modbus import ModbusBoard
from gateway.config import BoardConfig
from gateway.doors import Door
from simulators.relay_board import RelayBoardSim
from tests.doors.helpers import CONTACT, FIRE, PASSAGE, REX, Events, door_config, modbus_board

MODBUS_TEST_SETTINGS = {
    "coils": 8,
    "inputs": 8,
    "poll_interval": 0.02,
    "timeout": 0.3,
    "retries": 0,
    "reconnect_min": 0.05,
    "reconnect_max": 0.3,
}


@pytest.fixture
async def board() -> AsyncIterator[FakeBoard]:
    """A started fake board, every input at rest (contact closed, no REX, no fire)."""
    fake = FakeBoard("io")
    await fake.start()
    for index in (CONTACT, REX, PASSAGE, FIRE):
        fake.set_input(index, False)
    yield fake
    await fake.close()


@pytest.fixture
def events() -> Events:
    """The events a door reports."""
    return Events()


@pytest.fixture
async def door(board: FakeBoard, events: Events) -> AsyncIterator[Door]:
    """A fail-secure door with contact, REX and fire input on the fake board, started."""
    d = Door(door_config(), {"io": board}, on_event=events)
    await d.start()
    yield d
    await d.stop()


@pytest.fixture(params=["tcp", "rtu"])
def sim(request: pytest.FixtureRequest) -> Iterator[RelayBoardSim]:
    """pymodbus's server as an 8-relay, 8-input board, over TCP loopback and RTU on ptys."""
    board_sim = RelayBoardSim()
    if request.param == "tcp":
        board_sim.start_tcp()
    else:
        board_sim.start_rtu()
    yield board_sim
    board_sim.close()


def modbus_config(sim: RelayBoardSim, board_id: str = "relays") -> BoardConfig:
    """The board config that reaches ``sim``."""
    if sim.transport == "tcp":
        return BoardConfig(id=board_id, profile="test", host=sim.host, tcp_port=sim.port)
    return BoardConfig(id=board_id, profile="test", port=sim.path)


@pytest.fixture
async def modbus(sim: RelayBoardSim) -> AsyncIterator[ModbusBoard]:
    """The Modbus driver connected to ``sim``."""
    assert sim.transport is not None
    settings = {**MODBUS_TEST_SETTINGS, "transport": sim.transport}
    relays = modbus_board(modbus_config(sim), settings)
    await relays.start()
    yield relays
    await relays.close()
