"""HARDWARE.md, Outputs and inputs: the GPIO driver fails clearly where there is no GPIO
(gpiod itself cannot run here), and every board profile loads and names its driver."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from drivers.gpio import GpioBoard, GpioMissing, GpioSettings
from drivers.modbus import ModbusSettings
from gateway.config import BoardConfig
from gateway.profiles import build_board, find_profile
from tests.doors.helpers import turnstile_config

BOARD_PROFILES = {
    "waveshare-modbus-rtu-relay-8ch": ("relay", "modbus"),
    "modbus-tcp-relay": ("relay", "modbus"),
    "rpi-relay-hat-gpio": ("relay", "gpio"),
    "generic-turnstile": ("turnstile", "modbus"),
    "fake-io": ("relay", "fake_io"),
}


@pytest.mark.parametrize("name", sorted(BOARD_PROFILES))
def test_each_board_profile_names_its_driver_and_makes_a_board(name: str) -> None:
    profile = find_profile(name)
    assert (profile.role, profile.driver) == BOARD_PROFILES[name] and profile.model
    config = BoardConfig(id="b", profile=name, port="/dev/ttyUSB0", host="192.0.2.10")
    board = build_board(config)
    assert board.id == "b"
    assert profile.settings.items() <= board.settings.items()


def test_the_turnstile_pulse_is_the_doors_not_the_boards() -> None:
    """A board profile cannot say how long a turnstile's open input wants: the door does."""
    assert "pulse_seconds" not in find_profile("generic-turnstile").settings
    with pytest.raises(ValidationError, match="pulse_seconds"):
        ModbusSettings(pulse_seconds=0.5)  # type: ignore[call-arg]
    assert turnstile_config(pulse_seconds=0.3).pulse_seconds == 0.3


def test_fail_mode_safe_is_refused_for_a_turnstile() -> None:
    with pytest.raises(ValidationError, match="refused for a turnstile"):
        turnstile_config(fail_mode="safe")


async def test_a_missing_gpio_chip_is_a_clear_error() -> None:
    board = GpioBoard("hat", GpioSettings(chip="/dev/gpiochip99", outputs=[26]))
    with pytest.raises(GpioMissing, match=r"/dev/gpiochip99 not found.*chips seen"):
        await board.start()


async def test_gpio_without_gpiod_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod now raises ImportError
    board = GpioBoard("hat", GpioSettings(outputs=[26]))
    with pytest.raises(GpioMissing, match=r"accessgw\[gpio\]"):
        await board.start()


def test_a_gpio_line_used_twice_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="both an output and an input"):
        GpioSettings(outputs=[26], inputs=[26])
