"""Issue 11 point 1, the drivers' side: every board's and reader's settings are validated
by the driver's typed model and the registry, without starting anything, with the key by
its path (gateway.profiles.check_devices, which gateway/validation.py calls)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import BoardConfig, Config, DoorConfig, GatewaySection, Point, ReaderConfig
from gateway.profiles import check_devices


def config(boards: list[dict[str, Any]], **extra: Any) -> Config:
    return Config(
        gateway=GatewaySection(id="gw-1", site="club"),
        boards=[BoardConfig(**b) for b in boards],
        **extra,
    )


def problems(cfg: Config) -> list[str]:
    return [str(p) for p in check_devices(cfg)]


RTU = {"id": "relays", "profile": "waveshare-modbus-rtu-relay-8ch", "port": "/dev/ttyUSB0"}


@pytest.mark.parametrize(
    ("board", "expected"),
    [
        ({"id": "net", "profile": "modbus-tcp-relay"}, "boards[net].host: is required"),
        ({**RTU, "options": {"baudrat": 9600}}, "boards[relays].options.baudrat: unknown setting"),
        ({**RTU, "options": {"parity": "X"}}, "boards[relays].options.parity: Input should be"),
        (
            {**RTU, "options": {"poll_intreval": 0.1}},
            "boards[relays].options.poll_intreval: unknown setting",
        ),
        ({**RTU, "profile": "no-such-profile"}, "boards[relays].profile: no firmware profile"),
    ],
)
def test_a_bad_board_is_refused_with_its_key(board: dict[str, Any], expected: str) -> None:
    found = problems(config([board]))
    assert any(p.startswith(expected) for p in found), found


def test_an_output_index_beyond_the_board_is_refused() -> None:
    door = DoorConfig(id="main-in", zone="gym", direction="in", lock=Point(board="relays", index=8))
    found = problems(config([RTU], doors=[door]))
    assert found == ["doors[main-in].lock.index: board 'relays' has 8 outputs (index 0..7)"]


def test_a_reader_setting_typo_is_refused_with_its_key() -> None:
    reader = ReaderConfig(
        id="nfc",
        profile="pn532-hsu",
        door="main-in",
        port="/dev/ttyS0",
        options={"pol_interval": 1},
    )
    door = DoorConfig(id="main-in", zone="gym", direction="in")
    found = problems(config([], readers=[reader], doors=[door]))
    assert len(found) == 1 and found[0].startswith("readers[nfc].options.pol_interval: unknown")


def test_a_good_config_has_no_problems() -> None:
    door = DoorConfig(id="main-in", zone="gym", direction="in", lock=Point(board="relays", index=7))
    assert problems(config([RTU], doors=[door])) == []


def test_modbus_unit_0_the_broadcast_address_is_refused_by_the_driver_too() -> None:
    from drivers.modbus import ModbusSettings, check_address
    from gateway.profiles import DeviceAddress

    found = check_address(DeviceAddress(port="/dev/ttyUSB0", unit=0), ModbusSettings())
    assert found == [("unit", "0 is the broadcast address (no board answers it): use 1-247")]
