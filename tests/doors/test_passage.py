"""ENTITLEMENTS.md, charging on passage: a grant counts as passed only when the passage is
seen within pass_timeout; a passage nobody was granted is an ``unauthorised_passage``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from drivers.fake_io import FakeBoard
from drivers.modbus import ModbusBoard
from gateway.doors import Door
from simulators.relay_board import RelayBoardSim
from simulators.turnstile import TurnstileSim
from tests.doors.helpers import CONTACT, LOCK, PASSAGE, Events, door_config, turnstile_config, until


@pytest.fixture
async def turnstile(board: FakeBoard, events: Events) -> AsyncIterator[Door]:
    """A turnstile on the fake board: open pulse on output 0, rotation on input 2."""
    door = Door(turnstile_config(pulse_seconds=0.2), {"io": board}, on_event=events)
    await door.start()
    yield door
    await door.stop()


def rotate(board: FakeBoard) -> None:
    """One full turn of the turnstile: the rotation contact closes and opens."""
    board.set_input(PASSAGE, True)
    board.set_input(PASSAGE, False)


async def test_grant_and_one_rotation_is_passed_once(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    release = asyncio.create_task(turnstile.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    rotate(board)
    outcome = await release
    assert outcome.passed and outcome.seen_at is not None
    assert events.types == []


async def test_turnstile_gets_a_pulse_of_its_controller_length(
    turnstile: Door, board: FakeBoard
) -> None:
    release = asyncio.create_task(turnstile.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    rotate(board)
    await release
    await until(lambda: board.outputs[LOCK] is False)
    on, off = board.changes(LOCK)[-2:]
    assert 0.15 <= off.at - on.at <= 0.35  # pulse_seconds = 0.2, not unlock_seconds


async def test_grant_with_no_rotation_is_not_passed_after_pass_timeout(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    started = time.monotonic()
    outcome = await turnstile.release()
    assert not outcome.passed and outcome.seen_at is None
    assert time.monotonic() - started >= 0.4  # pass_timeout
    rotate(board)  # too late: it is nobody's passage
    assert events.types == ["unauthorised_passage"]


async def test_two_people_on_one_grant_pass_the_first_and_flag_the_second(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    release = asyncio.create_task(turnstile.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    rotate(board)
    rotate(board)
    assert (await release).passed
    assert events.types == ["unauthorised_passage"]


async def test_rotation_with_no_grant_is_an_unauthorised_passage(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    rotate(board)
    assert events.types == ["unauthorised_passage"]
    assert events.of("unauthorised_passage") == [{"sensor": "passage"}]


async def test_two_grants_in_a_row_each_take_their_own_rotation(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    first = asyncio.create_task(turnstile.release())
    second = asyncio.create_task(turnstile.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    rotate(board)
    assert (await first).passed
    rotate(board)
    assert (await second).passed
    assert events.types == []


async def test_rotations_are_free_while_the_door_is_held_unlocked(
    turnstile: Door, board: FakeBoard, events: Events
) -> None:
    turnstile.set_mode("unlock")
    rotate(board)
    rotate(board)
    assert events.types == ["emergency_release"]


async def test_a_door_contact_opening_is_the_passage_of_a_door(
    board: FakeBoard, events: Events
) -> None:
    door = Door(door_config(), {"io": board}, on_event=events)
    await door.start()
    try:
        release = asyncio.create_task(door.release())
        await until(lambda: board.outputs.get(LOCK) is True)
        board.set_input(CONTACT, True)
        outcome = await release
        assert outcome.passed
        board.set_input(CONTACT, False)
        assert not (await door.release()).passed  # nobody opened it this time
    finally:
        await door.stop()


async def test_turnstile_simulator_on_modbus_passes_one_and_flags_the_rest(
    sim: RelayBoardSim, modbus: ModbusBoard, events: Events
) -> None:
    gate = TurnstileSim(sim, coil=LOCK, rotation_input=PASSAGE)
    door = Door(
        turnstile_config(board="relays", rex=None, fire=None, pass_timeout=1.0, pulse_seconds=0.2),
        {"relays": modbus},
        on_event=events,
    )
    await door.start()
    try:
        gate.arrive(1)
        assert (await door.release()).passed
        assert not (await door.release()).passed  # nobody came
        gate.arrive(2)
        assert (await door.release()).passed
        await until(lambda: len(gate.rotations) == 3)
        await asyncio.sleep(0.1)
        assert events.types == ["unauthorised_passage"]  # the second person on one grant
        gate.jump()
        await until(lambda: len(gate.rotations) == 4)
        await until(lambda: events.types.count("unauthorised_passage") == 2)
    finally:
        await door.stop()
