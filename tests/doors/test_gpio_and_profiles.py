"""HARDWARE.md, Outputs and inputs: the GPIO driver fails clearly where there is no GPIO
(gpiod itself cannot run here), and every board profile loads and names its driver."""

from __future__ import annotations

import sys

import pytest

from drivers.gpio import GpioBoard, GpioMissing
from gateway.config import BoardConfig
from gateway.errors import ConfigError
from gateway.profiles import find_profile

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
    board = profile.driver_module().create_board(config, profile)
    assert board.id == "b" and board.settings == profile.settings


def test_the_turnstile_profile_gives_the_controller_pulse_length() -> None:
    assert 0.1 <= find_profile("generic-turnstile").settings["pulse_seconds"] <= 1.0


async def test_a_missing_gpio_chip_is_a_clear_error() -> None:
    board = GpioBoard("hat", {"chip": "/dev/gpiochip99", "outputs": [26]})
    with pytest.raises(GpioMissing, match=r"/dev/gpiochip99 not found.*chips seen"):
        await board.start()


async def test_gpio_without_gpiod_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod now raises ImportError
    board = GpioBoard("hat", {"outputs": [26]})
    with pytest.raises(GpioMissing, match=r"accessgw\[gpio\]"):
        await board.start()


def test_a_gpio_line_used_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both an output and an input"):
        GpioBoard("hat", {"outputs": [26], "inputs": [26]})
