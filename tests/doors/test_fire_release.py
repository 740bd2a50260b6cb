"""HARDWARE.md, Doors: a fire alarm input releases every lock within 500 ms and holds it
released until the alarm clears, whatever else happens (grants, lockdown, normal, REX)."""

from __future__ import annotations

import asyncio
import time

from drivers.fake_io import FakeBoard
from drivers.modbus import ModbusBoard
from gateway.config import Point
from gateway.doors import Door
from simulators.relay_board import RelayBoardSim
from tests.doors.helpers import FIRE, LOCK, REX, Events, door_config, until


async def test_fire_alarm_releases_the_lock_and_holds_it_until_it_clears(
    door: Door, board: FakeBoard, events: Events
) -> None:
    board.set_input(FIRE, True)
    await until(lambda: board.outputs.get(LOCK) is True, within=0.5)
    assert events.of("emergency_release") == [{"cause": "fire"}]
    await door.release()  # a grant ends its window: the lock must not relock
    door.set_mode("lockdown")
    board.set_input(REX, True)
    board.set_input(REX, False)
    door.set_mode("normal")
    door.set_mode("unlock")
    door.set_mode("normal")
    await asyncio.sleep(0.5)  # past every unlock_seconds window
    assert board.outputs[LOCK] is True
    assert [c.value for c in board.changes(LOCK)] == [False, True]  # never relocked meanwhile
    board.set_input(FIRE, False)
    await until(lambda: board.outputs[LOCK] is False)
    assert events.of("emergency_cleared")[-1] == {"cause": "fire"}


async def test_fire_alarm_de_energises_a_fail_safe_lock(board: FakeBoard, events: Events) -> None:
    door = Door(door_config(fail_mode="safe"), {"io": board}, on_event=events)
    await door.start()
    try:
        await until(lambda: board.outputs.get(LOCK) is True)  # maglock holding
        board.set_input(FIRE, True)
        await until(lambda: board.outputs[LOCK] is False, within=0.5)
        await asyncio.sleep(0.4)
        assert board.outputs[LOCK] is False and door.status()["lock"] == "unlocked"
        board.set_input(FIRE, False)
        await until(lambda: board.outputs[LOCK] is True)
    finally:
        await door.stop()


async def test_a_fire_alarm_already_active_at_start_releases_at_once(
    board: FakeBoard, events: Events
) -> None:
    board.set_input(FIRE, True)
    door = Door(door_config(), {"io": board}, on_event=events)
    await door.start()
    try:
        await until(lambda: board.outputs.get(LOCK) is True, within=0.5)
        assert events.types == ["emergency_release"]
    finally:
        await door.stop()


async def test_a_fire_alarm_input_that_is_active_low_still_releases(
    board: FakeBoard, events: Events
) -> None:
    board.set_input(FIRE, True)  # a normally-closed alarm contact: closed = no fire
    config = door_config(fire=Point(board="io", index=FIRE, active_low=True))
    door = Door(config, {"io": board}, on_event=events)
    await door.start()
    try:
        assert board.outputs[LOCK] is False and events.types == []
        board.set_input(FIRE, False)  # the contact opens (or its wire is cut)
        await until(lambda: board.outputs[LOCK] is True, within=0.5)
    finally:
        await door.stop()


async def test_fire_input_on_a_modbus_board_releases_the_lock_within_500_ms(
    sim: RelayBoardSim, modbus: ModbusBoard, events: Events
) -> None:
    config = door_config(board="relays", contact=None, rex=None)
    door = Door(config, {"relays": modbus}, on_event=events)
    await door.start()
    try:
        fire_at = time.monotonic()
        sim.set_input(FIRE, True)
        await until(lambda: sim.coil(LOCK), within=2)
        released_at = sim.changes(LOCK)[-1].at
        assert released_at - fire_at < 0.5
        await asyncio.sleep(0.5)
        assert sim.coil(LOCK)
        sim.set_input(FIRE, False)
        await until(lambda: not sim.coil(LOCK), within=2)
        assert events.types == ["emergency_release", "emergency_cleared"]
    finally:
        await door.stop()
