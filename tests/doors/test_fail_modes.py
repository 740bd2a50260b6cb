"""HARDWARE.md, Doors: fail_mode; outputs in their safe state at start and stop, and never
left energised when a door's task or a caller is cancelled."""

from __future__ import annotations

import asyncio

from drivers.fake_io import FakeBoard
from gateway.doors import Door
from gateway.outputs import RelayFault
from tests.doors.helpers import LOCK, Events, door_config, until


async def test_fail_secure_lock_starts_and_stops_de_energised(board: FakeBoard) -> None:
    door = Door(door_config(fail_mode="secure"), {"io": board})
    await door.start()
    await asyncio.sleep(0.05)
    assert [c.value for c in board.changes(LOCK)] == [False]
    assert door.status()["lock"] == "locked"
    await door.stop()
    assert board.outputs[LOCK] is False


async def test_fail_safe_lock_goes_to_its_safe_state_first_then_holds_the_door(
    board: FakeBoard,
) -> None:
    door = Door(door_config(fail_mode="safe"), {"io": board})
    await door.start()
    await until(lambda: board.outputs[LOCK] is True)
    assert [c.value for c in board.changes(LOCK)] == [False, True]  # safe, then locked
    assert door.status()["lock"] == "locked"
    await door.stop()
    assert board.outputs[LOCK] is False  # stopped: released, as a fire door must be


async def test_a_maglock_is_released_at_stop_even_when_one_write_is_lost(
    board: FakeBoard, events: Events
) -> None:
    # nobody retries after a stop: one frame lost on a bus that just came back must not
    # leave a maglock holding a door its gateway no longer watches
    door = Door(door_config(fail_mode="safe"), {"io": board}, on_event=events)
    await door.start()
    await until(lambda: board.outputs[LOCK] is True)
    write = board._write
    lost: list[bool] = []

    async def loses_the_first_write(index: int, on: bool) -> None:
        if not lost:
            lost.append(on)
            raise RelayFault(board.id, index, "no answer (frame lost)")
        await write(index, on)

    board._write = loses_the_first_write  # type: ignore[method-assign]
    await door.stop()
    assert lost == [False]
    assert board.outputs[LOCK] is False
    assert events.types == ["relay_fault"]  # the lost write is still reported


async def test_fail_safe_grant_de_energises_the_maglock(board: FakeBoard) -> None:
    door = Door(door_config(fail_mode="safe", contact=None), {"io": board})
    await door.start()
    try:
        await until(lambda: board.outputs[LOCK] is True)
        assert (await door.release()).passed
        assert board.outputs[LOCK] is False
        await until(lambda: board.outputs[LOCK] is True)
    finally:
        await door.stop()


async def test_cancelling_the_door_task_leaves_the_lock_de_energised(board: FakeBoard) -> None:
    door = Door(door_config(unlock_seconds=30), {"io": board})
    await door.start()
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    assert door._task is not None
    door._task.cancel()  # a crash or a cancellation of the door's own task
    await asyncio.gather(door._task, return_exceptions=True)
    assert board.outputs[LOCK] is False
    assert not (await release).passed
    await door.stop()


async def test_cancelling_a_grant_midway_still_relocks_on_time(board: FakeBoard) -> None:
    door = Door(door_config(), {"io": board})
    await door.start()
    try:
        release = asyncio.create_task(door.release())
        await until(lambda: board.outputs.get(LOCK) is True)
        release.cancel()
        await asyncio.gather(release, return_exceptions=True)
        await until(lambda: board.outputs[LOCK] is False, within=1)
    finally:
        await door.stop()


async def test_a_board_pulse_ends_even_when_its_caller_is_cancelled(board: FakeBoard) -> None:
    async def caller() -> None:
        await board.pulse(5, 0.1)
        await asyncio.sleep(10)

    task = asyncio.create_task(caller())
    await until(lambda: board.outputs.get(5) is True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await until(lambda: board.outputs[5] is False, within=1)
    on, off = board.changes(5)
    assert 0.08 <= off.at - on.at <= 0.3


async def test_closing_a_board_de_energises_its_outputs(board: FakeBoard) -> None:
    await board.set_output(2, True)
    await board.pulse(3, 60)
    await board.close()
    assert board.energised() == []


async def test_a_stuck_relay_is_reported_once_as_relay_fault(
    board: FakeBoard, events: Events
) -> None:
    door = Door(door_config(contact=None), {"io": board}, on_event=events)
    await door.start()
    try:
        board.stuck.add(LOCK)
        assert not (await door.release()).passed  # the lock never opened: nobody passed
        await asyncio.sleep(0.1)
        assert events.types == ["relay_fault"]
        assert events.of("relay_fault")[0]["output"] == LOCK
        try:
            await board.set_output(LOCK, True)
        except RelayFault as exc:
            assert "read-back" in str(exc)
        else:
            raise AssertionError("a stuck relay was not reported")
    finally:
        board.stuck.clear()
        await door.stop()


async def test_an_unplugged_board_is_a_relay_fault_and_the_lock_is_rewritten_when_back(
    board: FakeBoard, events: Events
) -> None:
    # no fire input here: one on the unplugged board would be "unknown" = alarm (own test)
    config = door_config(fail_mode="safe", contact=None, fire=None)
    door = Door(config, {"io": board}, on_event=events)
    await door.start()
    try:
        await until(lambda: board.outputs.get(LOCK) is True)
        board.unplug()
        board.outputs[LOCK] = False  # it lost power: the maglock let go
        assert events.types == ["relay_fault"]
        assert "offline" in events.of("relay_fault")[0]["reason"]
        board.plug()
        await until(lambda: board.outputs[LOCK] is True)
    finally:
        await door.stop()


async def test_a_grant_shorter_than_the_write_itself_still_relocks(board: FakeBoard) -> None:
    board.write_delay = 0.1  # the bus takes longer than the whole grant window
    door = Door(door_config(contact=None, unlock_seconds=0.02), {"io": board})
    await door.start()
    try:
        assert (await door.release()).passed
        await until(lambda: board.outputs[LOCK] is False, within=1)
        assert [c.value for c in board.changes(LOCK)] == [False, True, False]
    finally:
        await door.stop()


async def test_stopping_a_door_ends_a_grant_waiting_for_its_passage(board: FakeBoard) -> None:
    door = Door(door_config(pass_timeout=30), {"io": board})
    await door.start()
    release = asyncio.create_task(door.release())
    await until(lambda: board.outputs.get(LOCK) is True)
    await door.stop()
    outcome = await asyncio.wait_for(release, 2)
    assert not outcome.passed
    assert board.outputs[LOCK] is False
