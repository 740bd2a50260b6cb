"""Firmware profiles of the readers: each loads, names a driver, and builds a reader."""

from __future__ import annotations

import pytest

from drivers.libnfc import LibnfcMissing, LibnfcReader
from drivers.pn532 import Pn532Reader
from drivers.serial_scanner import SerialScanner
from gateway.config import ReaderConfig
from gateway.errors import ConfigError
from gateway.profiles import build_reader, find_profile, reader_driver
from gateway.readers import ReaderHealth
from gateway.state_dir import StateDir
from simulators.pn532 import Pn532Simulator
from tests.readers.helpers import running

PROFILES = {
    "pn532-hsu": ("pn532", Pn532Reader),
    "acr122u": ("libnfc", LibnfcReader),
    "newland-fm430": ("serial_scanner", SerialScanner),
    "honeywell-3310g": ("serial_scanner", SerialScanner),
}


def ignore(_: ReaderHealth) -> None:
    """A health listener that drops reports."""


def build(profile: str, tmp_path, **config):  # type: ignore[no-untyped-def]
    """The reader a profile's driver makes for a ReaderConfig."""
    cfg = ReaderConfig(id="r1", profile=profile, door="front", **config)
    return build_reader(cfg, StateDir(tmp_path), ignore)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_reader_profile_names_its_driver_and_is_a_reader(name: str) -> None:
    profile = find_profile(name)
    driver, _ = PROFILES[name]
    assert profile.role == "reader" and profile.driver == driver and profile.model
    assert reader_driver(profile).settings_model.model_validate(profile.settings)


@pytest.mark.parametrize("name", ["pn532-hsu", "newland-fm430", "honeywell-3310g"])
def test_each_serial_profile_builds_its_reader_with_the_profile_settings(
    name: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    reader = build(name, tmp_path, port="/dev/ttyUSB0")
    assert isinstance(reader, PROFILES[name][1])
    assert reader.port.baudrate == find_profile(name).settings["baudrate"]


def test_the_acr122u_profile_opens_the_first_acr122_through_libnfc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    try:
        reader = build("acr122u", tmp_path)
    except LibnfcMissing as exc:
        pytest.skip(f"libnfc extra not installed: {exc}")
    assert isinstance(reader, LibnfcReader) and reader.connstring == "acr122_usb"


def test_a_readers_options_override_its_profiles_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reader = build("pn532-hsu", tmp_path, port="/dev/ttyUSB0", options={"poll_interval": 0.5})
    assert isinstance(reader, Pn532Reader) and reader.settings.poll_interval == 0.5


def test_an_unknown_option_is_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="pol_interval: unknown setting"):
        build("pn532-hsu", tmp_path, port="/dev/ttyUSB0", options={"pol_interval": 0.5})


def test_a_bad_option_value_is_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="max_length"):
        build("newland-fm430", tmp_path, port="/dev/ttyUSB0", options={"max_length": 0})


def test_a_serial_reader_without_a_port_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"reader r1 \(profile pn532-hsu\): port: is required"):
        build("pn532-hsu", tmp_path)


async def test_a_reader_built_from_the_pn532_profile_reads_the_simulator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Pn532Simulator("04A1B2C3") as sim:
        reader = build("pn532-hsu", tmp_path, port=sim.path)
        async with running(reader) as reads:
            read = await reads.next()
    assert (read.reader, read.value) == ("r1", "04A1B2C3")
