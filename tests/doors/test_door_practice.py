"""HARDWARE.md, Door and reader practice (2026-12-01): contact polarity named, a grant
whose lock did not move is over, fire input unknown counts as alarm on safe doors."""

from __future__ import annotations

import asyncio

from drivers.fake_io import FakeBoard
from gateway.config import ContactPoint, Point
from gateway.doors import Door
from tests.doors.helpers import CONTACT, FIRE, LOCK, Events, door_config, until


async def test_a_standard_contact_closed_when_active_gives_no_alarm_at_start_and_forced_on_open(
    board: FakeBoard, events: Events
) -> None:
    """A dry contact that is closed (input active) while the door is shut: with the
    default ``closed_when = "active"`` nothing fires at start, and opening it without a
    grant is door_forced (before, active meant open: held-open at start, never forced)."""
    board.set_input(CONTACT, True)  # door shut: the contact is closed, the input active
    contact = ContactPoint(board="io", index=CONTACT)  # closed_when defaults to "active"
    door = Door(door_config(contact=contact, held_open_seconds=0.2), {"io": board}, events)
    await door.start()
    try:
        await asyncio.sleep(0.35)
        assert events.types == []
        assert door.status()["contact"] == "closed"
        board.set_input(CONTACT, False)  # opened with no grant
        await until(lambda: "door_forced" in events.types)
    finally:
        await door.stop()


async def test_a_grant_whose_lock_did_not_move_is_over_when_the_board_comes_back(
    board: FakeBoard, events: Events
) -> None:
    door = Door(door_config(contact=None, unlock_seconds=2.0), {"io": board}, events)
    await door.start()
    try:
        board.unplug()
        outcome = await door.release()  # the write fails: the member was told "no"
        assert not outcome.passed
        board.plug()
        board._report(True)
        await asyncio.sleep(0.3)  # well inside the old grant's 2 s window
        assert board.outputs.get(LOCK, False) is False, "an old grant was restored"
        assert door.status()["lock"] == "locked"
    finally:
        await door.stop()


async def fire_on_its_own_board(
    events: Events, fail_mode: str
) -> tuple[FakeBoard, FakeBoard, Door]:
    """A door whose lock is on one board and whose fire input is on another, started."""
    locks, alarms = FakeBoard("locks"), FakeBoard("alarms")
    await locks.start()
    await alarms.start()
    alarms.set_input(FIRE, False)
    fire = Point(board="alarms", index=FIRE)
    config = door_config("locks", fail_mode=fail_mode, contact=None, rex=None, fire=fire)
    door = Door(config, {"locks": locks, "alarms": alarms}, events)
    await door.start()
    return locks, alarms, door


async def test_a_fire_input_that_cannot_be_read_releases_a_fail_safe_door(
    events: Events,
) -> None:
    locks, alarms, door = await fire_on_its_own_board(events, fail_mode="safe")
    try:
        await until(lambda: locks.outputs.get(LOCK) is True)  # a maglock, held
        alarms.unplug()  # the fire panel's board goes away: its input is unknown
        await until(lambda: locks.outputs.get(LOCK) is False)  # released
        assert events.of("emergency_release") == [{"cause": "fire_input_unknown"}]
        alarms.plug()
        alarms.set_input(FIRE, False)  # read again: no fire
        await until(lambda: locks.outputs.get(LOCK) is True)
        assert "emergency_cleared" in events.types
    finally:
        await door.stop()


async def test_a_fire_input_that_cannot_be_read_leaves_a_fail_secure_door_locked(
    events: Events,
) -> None:
    locks, alarms, door = await fire_on_its_own_board(events, fail_mode="secure")
    try:
        alarms.unplug()
        await asyncio.sleep(0.2)
        assert not locks.outputs.get(LOCK, False)
        assert "emergency_release" not in events.types
    finally:
        await door.stop()
