"""Serial QR/barcode scanners: one code per line, only clean lines go on (HARDWARE.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.serial_scanner import LineReader, ScannerSettings, SerialScanner
from simulators.scanner import ScannerSimulator
from tests.readers.helpers import HealthLog, running

PASS = "AGP1.eyJkIjoicGhvbmUtMSIsIm0iOiJtLTEiLCJuIjoiYWJjIiwidCI6MTcwMDAwMDAwMH0.c2ln"
FAST = ScannerSettings(reopen_max=0.3)


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"])
def test_a_line_ends_at_cr_lf_or_crlf(ending: bytes) -> None:
    lines = LineReader()
    assert lines.feed(b"ABC123" + ending + b"XYZ" + ending) == ["ABC123", "XYZ"]


def test_a_code_split_across_reads_is_joined() -> None:
    lines = LineReader()
    assert lines.feed(b"AB") == []
    assert lines.feed(b"C\r") == ["ABC"]
    assert lines.feed(b"\n") == []  # the LF of CR LF is no empty code


def test_control_characters_drop_the_whole_line_and_are_counted() -> None:
    lines = LineReader()
    assert lines.feed(b"AB\x1bC\r\nGOOD\r\nX\x00Y\n\x7f\n") == ["GOOD"]
    assert lines.counters.dropped_control == 3 and lines.counters.codes == 1


def test_binary_garbage_is_dropped_and_counted() -> None:
    lines = LineReader()
    assert lines.feed(bytes(range(0x80, 0x100)) + b"\r\nOK\r\n") == ["OK"]
    assert lines.counters.dropped_binary == 1


def test_an_over_long_line_is_dropped_whole_and_counted() -> None:
    lines = LineReader(max_length=8)
    assert lines.feed(b"123456789ABCDEF\r\n12345678\r\n") == ["12345678"]
    assert lines.counters.dropped_overlong == 1
    assert lines.buffered == 0


def test_the_buffer_never_holds_more_than_the_longest_code() -> None:
    lines = LineReader(max_length=16)
    lines.feed(b"A" * 10_000)
    assert lines.buffered <= 16
    assert lines.feed(b"\rNEXT\r") == ["NEXT"]
    assert lines.counters.dropped_overlong == 1


def test_spaces_around_a_code_are_stripped_and_blank_lines_ignored() -> None:
    lines = LineReader()
    assert lines.feed(b"  CODE 1  \r\n   \r\n\r\n") == ["CODE 1"]


def test_other_terminators_can_be_chosen() -> None:
    lines = LineReader(terminators=b"\t")
    assert lines.feed(b"ONE\tTWO\t") == ["ONE", "TWO"]


@pytest.fixture
def scanner() -> Iterator[ScannerSimulator]:
    """A scanner simulator on a pty."""
    with ScannerSimulator() as sim:
        yield sim


async def test_a_scanned_pass_is_a_pass_and_other_codes_are_codes(
    scanner: ScannerSimulator,
) -> None:
    health = HealthLog()
    async with running(SerialScanner("s1", scanner.path, FAST, health)) as reads:
        await health.wait_online()
        scanner.scan(PASS)
        scanner.scan("TICKET-42", ending=b"\r")
        first, second = await reads.next(), await reads.next()
    assert (first.reader, first.kind, first.value) == ("s1", "pass", PASS)
    assert (second.kind, second.value) == ("code", "TICKET-42")


async def test_garbage_from_the_scanner_never_becomes_a_read(scanner: ScannerSimulator) -> None:
    health = HealthLog()
    reader = SerialScanner("s1", scanner.path, FAST, health)
    async with running(reader) as reads:
        await health.wait_online()
        scanner.garbage()
        scanner.scan("A" * 2000)
        scanner.scan("AFTER")
        read = await reads.next()
    assert read.value == "AFTER"
    counters = reader.lines.counters
    assert counters.dropped_binary == 1 and counters.dropped_overlong == 1
    assert counters.codes == 1


async def test_an_unplugged_scanner_is_reported_and_reopened(tmp_path: Path) -> None:
    link = tmp_path / "ttyQR0"
    health = HealthLog()
    with ScannerSimulator(link=link) as sim:
        async with running(SerialScanner("s1", str(link), FAST, health)) as reads:
            await health.wait_online()
            sim.scan("ONE")
            assert (await reads.next()).value == "ONE"
            sim.unplug()
            missing = await health.wait_for(lambda h: "not found" in h.reason)
            assert f"serial port {link} not found: is the scanner plugged in?" in missing.reason
            assert "ports seen:" in missing.reason
            sim.plug()
            await health.wait_online()
            sim.scan("TWO")
            assert (await reads.next()).value == "TWO"


# --- issue 12: scanners set up without a suffix, STX framing, AIM identifiers -----------


async def test_a_scanner_without_a_suffix_ends_its_code_with_silence(
    scanner: ScannerSimulator,
) -> None:
    reader = SerialScanner("qr", scanner.path, ScannerSettings(idle_gap=0.05))
    async with running(reader) as reads:
        await asyncio.sleep(0.1)
        scanner.scan("MEMBER-42", ending=b"")  # no CR, no LF: just the code, then quiet
        read = await reads.next(within=2)
    assert (read.kind, read.value) == ("code", "MEMBER-42")


def test_an_stx_prefix_and_an_aim_identifier_are_not_part_of_the_code() -> None:
    lines = LineReader()
    assert lines.feed(b"\x02]Q1AGP1.abc\r\n") == ["AGP1.abc"]
    assert lines.feed(b"]C0123456\r") == ["123456"]
    assert LineReader(aim_ids=False).feed(b"]Q1abc\r") == ["]Q1abc"]
