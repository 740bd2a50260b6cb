"""Issue 12 point 18: several OSDP readers on one RS-485 bus (multi-drop).

Config validation (through the drivers' typed settings and the registry, as
gateway/validation.py runs it) accepts readers sharing a port at different addresses with
the same line settings, and refuses two at one address or two baud rates on one port,
with the key path.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config, GatewaySection, ReaderConfig
from gateway.validation import all_device_problems

PORT = "/dev/ttyUSB0"


def osdp_reader(reader_id: str, address: int | None, **options: Any) -> ReaderConfig:
    return ReaderConfig(
        id=reader_id,
        profile="osdp-generic-v2",
        door="front",
        port=PORT,
        address=address,
        options=options,
    )


def problems(*readers: ReaderConfig) -> list[str]:
    config = Config(gateway=GatewaySection(id="gw-1", site="club"), readers=list(readers))
    return [str(p) for p in all_device_problems(config)]


def test_readers_at_different_addresses_with_one_baud_rate_share_a_port() -> None:
    assert problems(osdp_reader("in", 1), osdp_reader("out", 2), osdp_reader("side", 3)) == []


def test_two_readers_at_one_address_on_a_port_are_refused_with_the_key() -> None:
    found = problems(osdp_reader("in", 1), osdp_reader("out", 1))
    assert len(found) == 1, found
    assert found[0].startswith("readers[out].address: address 1 on /dev/ttyUSB0 is already")


def test_two_readers_left_at_the_profiles_address_are_refused_too() -> None:
    """No ``address`` in the config means the profile's (0) for both: they collide."""
    found = problems(osdp_reader("in", None), osdp_reader("out", None))
    assert any(p.startswith("readers[out].address:") for p in found), found
    assert problems(osdp_reader("in", None), osdp_reader("out", 1)) == []


def test_two_baud_rates_on_one_port_are_refused_with_the_key() -> None:
    found = problems(osdp_reader("in", 1), osdp_reader("out", 2, baudrate=38400))
    assert any(
        p.startswith("readers[out].port:") and "different line settings" in p for p in found
    ), found
