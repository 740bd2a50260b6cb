"""HARDWARE.md, Outputs and inputs / Door and reader practice: the GPIO driver's own code
paths (line set-up, values, edges read on the event loop) against a GPIO chip modelled at
the gpiod boundary (simulators/gpio_chip.py; no gpio-sim in this kernel: no configfs).

The Waveshare RPi Relay Board switches a relay ON while its pin is LOW: with its profile,
a locked door's relay is off (pin high) at start, on only during a grant, off at stop.
"""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("gpiod", reason="the gpio extra (gpiod) is not installed")

from drivers.gpio import GpioBoard, GpioSettings
from gateway.config import Point
from gateway.doors import Door
from gateway.profiles import find_profile, parse_settings
from simulators.gpio_chip import FakeChip
from tests.doors.helpers import Events, door_config, until

CH1, CH2, CH3 = 26, 20, 21  # BCM lines of relay CH1..CH3 on the Waveshare HAT
CONTACT_LINE, REX_LINE = 17, 27


def test_gpio_sim_is_not_available_here_so_the_chip_is_modelled() -> None:
    """Say why the kernel's gpio-sim is not used, so a reader of the log knows."""
    if os.path.isdir("/sys/kernel/config/gpio-sim"):
        pytest.skip("gpio-sim exists here: a test against it would be the better proof")
    assert not os.path.isdir("/sys/kernel/config/gpio-sim")


def hat_board(chip: FakeChip) -> GpioBoard:
    """The relay HAT board exactly as its firmware profile describes it."""
    profile = find_profile("rpi-relay-hat-gpio")
    settings = parse_settings(GpioSettings, {**profile.settings, "chip": chip.path}, "test")
    return GpioBoard("hat", settings, request_lines=chip.request_lines)


def relay_on(chip: FakeChip, line: int) -> bool:
    """The Waveshare HAT: a relay is energised while its pin is LOW."""
    return not chip.pin_high(line)


async def test_relay_hat_relays_are_off_at_start_on_during_a_grant_and_off_at_stop() -> None:
    chip = FakeChip()
    board = hat_board(chip)
    await board.start()
    assert [relay_on(chip, line) for line in (CH1, CH2, CH3)] == [False, False, False]
    door = Door(
        door_config("hat", lock=Point(board="hat", index=0), contact=None, rex=None, fire=None),
        {"hat": board},
        Events(),
    )
    await door.start()
    assert not relay_on(chip, CH1), "a locked fail-secure door must not energise its strike"
    grant = asyncio.create_task(door.release())
    await until(lambda: relay_on(chip, CH1))
    await until(lambda: not relay_on(chip, CH1))  # relocked after unlock_seconds
    await grant
    await door.stop()
    await board.close()
    assert not relay_on(chip, CH1)


async def test_an_active_low_lock_point_stays_at_its_safe_level_when_the_board_closes() -> None:
    """A lock point with active_low = true: its de-energised (safe) physical level is
    ON; closing the board must not put it to physical off (that would release a
    fail-secure strike wired that way)."""
    chip = FakeChip()
    board = GpioBoard(
        "io", GpioSettings(chip=chip.path, outputs=[CH1]), request_lines=chip.request_lines
    )
    await board.start()
    door = Door(
        door_config(
            "io",
            lock=Point(board="io", index=0, active_low=True),
            contact=None,
            rex=None,
            fire=None,
        ),
        {"io": board},
    )
    await door.start()
    assert chip.pin_high(CH1)  # logical de-energised = physical high for this point
    await door.stop()
    await board.close()
    assert chip.pin_high(CH1), "board close drove the output to the energised level"


async def test_gpio_inputs_give_edges_through_the_event_loop() -> None:
    chip = FakeChip()
    settings = GpioSettings(
        chip=chip.path, outputs=[CH1], inputs=[CONTACT_LINE, REX_LINE], inputs_active_low=True
    )
    board = GpioBoard("io", settings, request_lines=chip.request_lines)
    await board.start()
    try:
        seen: list[bool] = []
        board.watch(0, lambda edge: seen.append(edge.value))
        assert board.input_state(0) is False  # pull-up, contact open: high = inactive
        chip.drive(CONTACT_LINE, False)  # contact closes to GND
        await until(lambda: seen == [True])
        chip.drive(CONTACT_LINE, True)
        await until(lambda: seen == [True, False])
    finally:
        await board.close()
