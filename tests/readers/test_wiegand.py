"""HARDWARE.md, Door and reader practice: Wiegand (D0/D1 on two GPIO inputs) is a reader
family: 26- and 34-bit formats with parity, bit timing checked. The driver's own code
reads the lines through the gpiod boundary (simulators/gpio_chip.py), driven by a
Wiegand reader simulator."""

from __future__ import annotations

import pytest

pytest.importorskip("gpiod", reason="the gpio extra (gpiod) is not installed")

from drivers.wiegand import WiegandReader, WiegandSettings, decode_frame
from gateway.config import ReaderConfig
from gateway.profiles import build_reader
from simulators.gpio_chip import FakeChip
from simulators.wiegand import WiegandSimulator, frame_bits
from tests.readers.helpers import HealthLog, running

D0, D1 = 5, 6


def reader_on(chip: FakeChip, health: HealthLog | None = None) -> WiegandReader:
    settings = WiegandSettings(chip=chip.path, d0=D0, d1=D1)
    return WiegandReader("door-w", settings, health, request_lines=chip.request_lines)


async def test_a_26_bit_card_is_read_with_its_facility_and_number() -> None:
    chip = FakeChip()
    sim = WiegandSimulator(chip, D0, D1)
    health = HealthLog()
    async with running(reader_on(chip, health)) as reads:
        await health.wait_online()
        number = 42 * 65536 + 1234
        sim.present(number)
        read = await reads.next(within=2)
    assert (read.kind, read.value, read.format) == ("nfc", str(number), "wiegand26")
    assert read.bits == frame_bits(number)


async def test_a_34_bit_card_is_read() -> None:
    chip = FakeChip()
    sim = WiegandSimulator(chip, D0, D1)
    health = HealthLog()
    async with running(reader_on(chip, health)) as reads:
        await health.wait_online()
        sim.present(3_000_000_000, length=34)
        read = await reads.next(within=2)
    assert (read.value, read.format) == ("3000000000", "wiegand34")


async def test_bad_parity_bad_length_and_bad_timing_are_refused_and_reading_goes_on() -> None:
    chip = FakeChip()
    sim = WiegandSimulator(chip, D0, D1)
    health = HealthLog()
    reader = reader_on(chip, health)
    async with running(reader) as reads:
        await health.wait_online()
        good = frame_bits(77)
        sim.send(good[:-1] + ("0" if good[-1] == "1" else "1"))  # parity broken
        await reads.none_within(0.1)
        sim.send(good[:20])  # a frame cut short
        await reads.none_within(0.1)
        sim.send(good, interval=0.00005)  # pulses 50 us apart: noise, not Wiegand
        assert await reads.none_within(0.1)
        sim.present(78)
        assert (await reads.next(within=2)).value == "78"
    assert reader.dropped == 3


def test_decode_refuses_other_lengths() -> None:
    with pytest.raises(ValueError, match="only 26- and 34-bit"):
        decode_frame("1" * 37)


def test_the_wiegand_profile_builds_a_reader(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = ReaderConfig(id="w1", profile="wiegand-gpio", door="front", options={"d0": 17})
    reader = build_reader(config, secrets=None, on_health=print)  # type: ignore[arg-type]
    assert isinstance(reader, WiegandReader) and reader.settings.d0 == 17
