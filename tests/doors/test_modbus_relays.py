"""HARDWARE.md, Outputs and inputs: Modbus relay boards over TCP and RTU, against
pymodbus's own server: the right coil for the right time, read-back, unplug and back."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.modbus import ModbusBoard
from gateway.config import BoardConfig, Point
from gateway.doors import Door
from gateway.errors import ConfigError
from gateway.outputs import BoardOffline, Debouncer, RelayFault
from gateway.profiles import build_board
from simulators.relay_board import RelayBoardSim
from tests.doors.conftest import MODBUS_TEST_SETTINGS, modbus_config
from tests.doors.helpers import CONTACT, Events, door_config, modbus_board, until

LOCK_COIL = 5


def _door(modbus: ModbusBoard, events: Events, **overrides: object) -> Door:
    values: dict[str, object] = {
        "lock": Point(board="relays", index=LOCK_COIL),
        "contact": None,
        "rex": None,
        "fire": None,
        "unlock_seconds": 0.5,
    }
    values.update(overrides)
    return Door(door_config(board="relays", **values), {"relays": modbus}, on_event=events)


async def test_grant_pulses_the_right_coil_for_unlock_seconds(
    sim: RelayBoardSim, modbus: ModbusBoard, events: Events
) -> None:
    door = _door(modbus, events)
    await door.start()
    try:
        asked = time.monotonic()
        assert (await door.release()).passed
        await until(lambda: len(sim.changes(LOCK_COIL)) == 2)
        on, off = sim.changes(LOCK_COIL)
        assert (on.value, off.value) == (True, False)
        assert on.at - asked < 0.1  # the coil is set within 100 ms of the decision
        assert abs((off.at - on.at) - 0.5) < 0.1  # and held for unlock_seconds
        assert {c.index for c in sim.history} == {LOCK_COIL}  # no other relay moved
        assert events.types == []
    finally:
        await door.stop()


async def test_stuck_relay_is_seen_by_read_back_as_relay_fault(
    sim: RelayBoardSim, modbus: ModbusBoard, events: Events
) -> None:
    door = _door(modbus, events)
    await door.start()
    try:
        sim.stick(LOCK_COIL)
        assert not (await door.release()).passed
        assert events.types == ["relay_fault"]
        assert "did not switch" in events.of("relay_fault")[0]["reason"]
        assert not sim.coil(LOCK_COIL)
        with pytest.raises(RelayFault, match="did not switch"):
            await modbus.set_output(LOCK_COIL, True)
        sim.stick(LOCK_COIL, False)
        await until(lambda: sim.coil(LOCK_COIL) is False and modbus.health.online)
    finally:
        await door.stop()


async def test_board_unplugged_goes_offline_and_is_rewritten_when_back(
    sim: RelayBoardSim, modbus: ModbusBoard, events: Events
) -> None:
    door = _door(modbus, events, fail_mode="safe")  # a maglock, energised to hold
    await door.start()
    try:
        await until(lambda: sim.coil(LOCK_COIL))
        assert modbus.health.online
        sim.unplug()  # power lost too: every relay drops
        await until(lambda: not modbus.health.online, within=3)
        assert "no answer" in modbus.health.reason or "cannot connect" in modbus.health.reason
        await until(lambda: events.types == ["relay_fault"])
        with pytest.raises(BoardOffline):
            await modbus.set_output(1, True)
        sim.plug()
        await until(lambda: modbus.health.online, within=3)
        await until(lambda: sim.coil(LOCK_COIL))  # the door holds again
        assert not sim.coil(1)  # a level that could not be set is never replayed later
        assert events.types == ["relay_fault"]  # one fault for one outage
    finally:
        await door.stop()
    await until(lambda: not sim.coil(LOCK_COIL))


async def test_discrete_inputs_become_de_bounced_edges(
    sim: RelayBoardSim, modbus: ModbusBoard
) -> None:
    seen: list[bool] = []
    modbus.watch(CONTACT, lambda edge: seen.append(edge.value))
    await until(lambda: modbus.input_state(CONTACT) is False)
    sim.set_input(CONTACT, True)
    await until(lambda: seen[-1:] == [True])
    sim.set_input(CONTACT, False)
    await until(lambda: seen[-1:] == [False])
    assert seen == [True, False]


async def test_a_board_that_never_answers_is_offline_with_a_reason(tmp_path: object) -> None:
    config = BoardConfig(id="relays", profile="test", port="/dev/ttyUSB-nothing-here")
    board = modbus_board(config, {**MODBUS_TEST_SETTINGS, "transport": "rtu"})
    await board.start()
    try:
        assert not board.health.online
        assert "/dev/ttyUSB-nothing-here not found" in board.health.reason
        assert "ports seen" in board.health.reason
        with pytest.raises(BoardOffline):
            await board.set_output(0, True)
    finally:
        await board.close()


def test_a_modbus_board_without_an_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="host: is required"):
        build_board(BoardConfig(id="relays", profile="modbus-tcp-relay"))


async def test_each_modbus_profile_drives_the_simulator(sim: RelayBoardSim) -> None:
    name = "modbus-tcp-relay" if sim.transport == "tcp" else "waveshare-modbus-rtu-relay-8ch"
    config = modbus_config(sim).model_copy(update={"profile": name})
    board = build_board(config)
    await board.start()
    try:
        await board.pulse(2, 0.1)
        assert sim.coil(2)
        await until(lambda: not sim.coil(2))
    finally:
        await board.close()
    await asyncio.sleep(0)


def test_an_input_glitch_shorter_than_debounce_is_no_edge() -> None:
    contact = Debouncer(0.05)
    assert contact.feed(False, 0.00) is False  # first sample: the level is known
    assert contact.feed(True, 0.02) is None  # a bounce...
    assert contact.feed(False, 0.04) is None  # ...gone by the next poll: nothing
    assert contact.feed(True, 0.06) is None
    assert contact.feed(True, 0.11) is True  # held for 50 ms: an edge
    assert contact.stable is True


async def test_an_ethernet_board_speaking_rtu_framing_over_tcp_is_driven() -> None:
    """``framer = "rtu"``: pymodbus's server with the RTU framer on a TCP socket (unit,
    PDU, CRC, no MBAP header) takes a coil write and answers an input read."""
    with RelayBoardSim() as board_sim:
        board_sim.start_tcp(rtu_framing=True)
        board_sim.set_input(3, True)
        config = BoardConfig(
            id="relays",
            profile="modbus-tcp-relay",
            host=board_sim.host,
            tcp_port=board_sim.port,
            options={**MODBUS_TEST_SETTINGS, "framer": "rtu", "inputs": 8},
        )
        board = build_board(config)
        board.watch(3, lambda _edge: None)
        await board.start()
        try:
            await board.set_output(2, True)
            assert board_sim.coil(2)
            await until(lambda: board.input_state(3) is True)
            await board.set_output(2, False)
            assert not board_sim.coil(2)
        finally:
            await board.close()
