"""HARDWARE.md, Doors: grant, REX, door_forced, door_held_open, door_closed, modes."""

from __future__ import annotations

import asyncio

from drivers.fake_io import FakeBoard
from gateway.config import Point
from gateway.doors import Door
from tests.doors.helpers import CONTACT, LOCK, REX, Events, door_config, until


async def test_grant_energises_a_fail_secure_lock_for_unlock_seconds_then_relocks(
    board: FakeBoard,
) -> None:
    door = Door(door_config(relock_on_close=False), {"io": board})
    await door.start()
    try:
        release = asyncio.create_task(door.release())
        await until(lambda: board.outputs.get(LOCK) is True)
        board.set_input(CONTACT, True)
        board.set_input(CONTACT, False)
        outcome = await release
        assert outcome.passed and outcome.seen_at is not None
        await until(lambda: board.outputs[LOCK] is False)
        on, off = board.changes(LOCK)[-2:]
        assert (on.value, off.value) == (True, False)
        assert 0.25 <= off.at - on.at <= 0.45  # unlock_seconds = 0.3
    finally:
        await door.stop()


async def test_the_door_closing_after_a_passage_relocks_at_once(
    door: Door, board: FakeBoard
) -> None:
    door_seconds = 0.3
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)  # the member goes through
    board.set_input(CONTACT, False)  # and the door shuts behind them
    await release
    await until(lambda: board.outputs[LOCK] is False)
    on, off = board.changes(LOCK)[-2:]
    assert (on.value, off.value) == (True, False)
    assert off.at - on.at < door_seconds / 2, "the lock stayed open for a follower"


async def test_contact_opening_with_no_grant_and_no_rex_is_door_forced(
    door: Door, board: FakeBoard, events: Events
) -> None:
    board.set_input(CONTACT, True)
    assert events.types == ["door_forced"]
    board.set_input(CONTACT, False)
    assert events.types == ["door_forced", "door_closed"]
    assert board.energised() == []  # an alarm never opens the lock


async def test_door_opened_during_a_grant_is_not_forced(
    door: Door, board: FakeBoard, events: Events
) -> None:
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)
    board.set_input(CONTACT, False)
    await release
    assert "door_forced" not in events.types


async def test_rex_releases_the_lock_with_no_alarm_and_relocks(
    door: Door, board: FakeBoard, events: Events
) -> None:
    board.set_input(REX, True)
    board.set_input(REX, False)
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)
    board.set_input(CONTACT, False)
    await until(lambda: board.outputs[LOCK] is False)
    assert events.types == []


async def test_door_left_open_past_held_open_seconds_is_held_open_then_closed(
    door: Door, board: FakeBoard, events: Events
) -> None:
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)
    assert (await release).passed
    await until(lambda: "door_held_open" in events.types, within=2)
    assert events.types == ["door_held_open"]  # reported once, not forced
    assert events.of("door_held_open") == [{"seconds": 0.4}]
    board.set_input(CONTACT, False)
    assert events.types == ["door_held_open", "door_closed"]


async def test_door_closed_in_time_raises_no_held_open_alarm(
    door: Door, board: FakeBoard, events: Events
) -> None:
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)
    await asyncio.sleep(0.1)
    board.set_input(CONTACT, False)
    await release
    await asyncio.sleep(0.5)
    assert events.types == []


async def test_lockdown_keeps_egress_free_rex_still_releases(
    door: Door, board: FakeBoard, events: Events
) -> None:
    door.set_mode("lockdown")
    assert door.mode == "lockdown"
    board.set_input(REX, True)
    await until(lambda: board.outputs.get(LOCK) is True)
    board.set_input(CONTACT, True)
    board.set_input(CONTACT, False)
    assert "door_forced" not in events.types
    await until(lambda: board.outputs[LOCK] is False)


async def test_command_unlock_holds_the_lock_released_until_normal(
    door: Door, board: FakeBoard, events: Events
) -> None:
    door.set_mode("unlock")
    await until(lambda: board.outputs.get(LOCK) is True)
    await asyncio.sleep(0.5)  # longer than unlock_seconds
    assert board.outputs[LOCK] is True and door.status()["lock"] == "unlocked"
    board.set_input(CONTACT, True)
    await asyncio.sleep(0.5)  # longer than held_open_seconds: the door is meant to be open
    board.set_input(CONTACT, False)
    door.set_mode("normal")
    await until(lambda: board.outputs[LOCK] is False)
    assert events.types == ["emergency_release", "emergency_cleared"]
    assert events.of("emergency_release") == [{"cause": "command"}]


async def test_an_unknown_mode_is_refused_with_the_modes_named(door: Door) -> None:
    try:
        door.set_mode("party")  # type: ignore[arg-type]
    except ValueError as exc:
        assert "normal, unlock, lockdown" in str(exc)
    else:
        raise AssertionError("set_mode accepted an unknown mode")
    assert door.mode == "normal"


async def test_status_reports_mode_lock_and_contact(door: Door, board: FakeBoard) -> None:
    assert door.status() == {"mode": "normal", "lock": "locked", "contact": "closed"}
    board.set_input(CONTACT, True)
    door.set_mode("unlock")
    await until(lambda: board.outputs.get(LOCK) is True)
    assert door.status() == {"mode": "unlock", "lock": "unlocked", "contact": "open"}


async def test_a_door_with_no_sensor_counts_a_grant_as_passed_once_energised(
    board: FakeBoard,
) -> None:
    door = Door(door_config(contact=None), {"io": board})
    await door.start()
    try:
        outcome = await door.release()
        assert outcome.passed and outcome.seen_at is not None
        assert board.outputs[LOCK] is True  # energised before the outcome came back
        assert door.status()["contact"] == "unknown"
    finally:
        await door.stop()


async def test_open_command_releases_for_the_seconds_it_names(
    board: FakeBoard,
) -> None:
    door = Door(door_config(contact=None), {"io": board})
    await door.start()
    try:
        await door.open_once(0.1)
        await until(lambda: board.outputs[LOCK] is False)
        on, off = board.changes(LOCK)[-2:]
        assert 0.05 <= off.at - on.at <= 0.25
    finally:
        await door.stop()


async def test_an_active_low_lock_output_is_inverted_on_the_board(board: FakeBoard) -> None:
    door = Door(door_config(lock=Point(board="io", index=LOCK, active_low=True)), {"io": board})
    await door.start()
    try:
        assert board.outputs[LOCK] is True  # de-energised, active-low: the line is high
        door.set_mode("unlock")
        await until(lambda: board.outputs[LOCK] is False)
    finally:
        await door.stop()
    assert board.outputs[LOCK] is True


async def test_an_event_sink_that_fails_never_stops_the_door(board: FakeBoard) -> None:
    def broken(kind: str, detail: dict[str, object]) -> None:
        raise RuntimeError("journal is gone")

    door = Door(door_config(), {"io": board}, on_event=broken)
    await door.start()
    try:
        board.set_input(CONTACT, True)  # door_forced: the sink raises
        board.set_input(CONTACT, False)
        board.set_input(REX, True)
        await until(lambda: board.outputs.get(LOCK) is True)
    finally:
        await door.stop()
