"""The reader simulators behave as the hardware does on the wire, and run from a shell."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import pn532_frames as pf
from drivers.pn532 import Pn532Reader, Pn532Settings
from drivers.serial_scanner import SerialScanner
from simulators.pn532 import Pn532Simulator
from tests.readers.helpers import HealthLog, running

ROOT = Path(__file__).resolve().parents[2]
SAM = pf.command(pf.SAM_CONFIGURATION, b"\x01\x14\x01")


class Host:
    """A bare host on the simulator's port: raw bytes out, frames back."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.parser = pf.FrameParser()

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def items(self, seconds: float = 0.3, count: int = 2) -> list[pf.Item]:
        """What the chip sends within ``seconds`` (stop early after ``count`` items)."""
        items: list[pf.Item] = []
        deadline = seconds
        while len(items) < count:
            ready, _, _ = select.select([self.fd], [], [], deadline)
            if not ready:
                break
            items += self.parser.feed(os.read(self.fd, 4096))
        return items

    def awake(self) -> None:
        """Wake the chip and leave low-battery mode."""
        self.send(pf.WAKE_UP + SAM)
        assert self.items() == [pf.Ack(), pf.Frame(pf.CHIP_TFI, b"\x15")]

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def sim() -> Iterator[Pn532Simulator]:
    """A PN532 simulator with no card."""
    with Pn532Simulator() as simulator:
        yield simulator


@pytest.fixture
def host(sim: Pn532Simulator) -> Iterator[Host]:
    """A raw host connected to ``sim``."""
    h = Host(sim.path)
    yield h
    h.close()


def test_a_sleeping_chip_ignores_a_command_sent_without_the_wake_up(host: Host) -> None:
    host.send(pf.command(pf.GET_FIRMWARE_VERSION))
    assert host.items() == []


def test_commands_before_sam_configuration_are_ignored_in_low_battery_mode(host: Host) -> None:
    host.send(pf.WAKE_UP + pf.command(pf.GET_FIRMWARE_VERSION))
    assert host.items() == []
    host.send(SAM)
    assert host.items() == [pf.Ack(), pf.Frame(pf.CHIP_TFI, b"\x15")]


def test_the_chip_takes_libnfcs_262_byte_extended_line_test(host: Host) -> None:
    host.awake()
    payload = b"\x00" + bytes(range(256)) + b"libnfc"[:5]  # Diagnose NumTst 0: 262 bytes
    frame = pf.command(pf.DIAGNOSE, payload)
    assert frame[3:5] == b"\xff\xff"  # an extended frame
    host.send(frame)
    assert host.items() == [pf.Ack(), pf.Frame(pf.CHIP_TFI, b"\x01" + payload)]


def test_a_nack_gets_the_last_answer_again(host: Host) -> None:
    host.awake()
    host.send(pf.command(pf.GET_FIRMWARE_VERSION))
    answer = pf.Frame(pf.CHIP_TFI, bytes.fromhex("0332010607"))
    assert host.items() == [pf.Ack(), answer]
    host.send(pf.NACK)
    assert host.items(count=1) == [answer]


def test_a_waiting_poll_is_answered_when_a_card_arrives(sim: Pn532Simulator, host: Host) -> None:
    host.awake()  # MxRtyPassiveActivation is still FF: wait for a card forever
    host.send(pf.command(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00"))
    assert host.items() == [pf.Ack()]
    sim.place("04A1B2C3")
    [answer] = host.items(count=1)
    assert isinstance(answer, pf.Frame)
    assert pf.parse_targets(answer.data[1:])[0].uid_hex == "04A1B2C3"


def test_a_host_ack_aborts_the_waiting_poll(sim: Pn532Simulator, host: Host) -> None:
    host.awake()
    host.send(pf.command(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00"))
    assert host.items() == [pf.Ack()]
    host.send(pf.ACK)
    host.items(0.1)
    sim.place("04A1B2C3")
    assert host.items(0.3) == []


def test_an_unknown_command_gets_the_error_frame(host: Host) -> None:
    host.awake()
    host.send(pf.command(0x7A))
    assert host.items() == [pf.Ack(), pf.ErrorFrame()]


def spawn(module: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m module`` and read the pty path it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, first.split(" on ", 1)[1].split(" ", 1)[0]


def finish(proc: subprocess.Popen[str]) -> None:
    """Send quit, wait for the simulator to end, close its pipes."""
    try:
        proc.communicate("quit\n", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_the_pn532_simulator_runs_from_the_command_line() -> None:
    proc, path = spawn("simulators.pn532", "--uid", "04A1B2C3")
    try:
        reader = Pn532Reader("r1", path, Pn532Settings(poll_interval=0.02))
        async with running(reader) as reads:
            assert (await reads.next()).value == "04A1B2C3"
            assert proc.stdin is not None
            proc.stdin.write("place 04DDEEFF\n")
            proc.stdin.flush()
            assert (await reads.next_where(lambda r: r.value != "04A1B2C3")).value == "04DDEEFF"
    finally:
        finish(proc)
    assert proc.returncode == 0


async def test_the_scanner_simulator_runs_from_the_command_line() -> None:
    proc, path = spawn("simulators.scanner")
    try:
        health = HealthLog()
        async with running(SerialScanner("s1", path, on_health=health)) as reads:
            assert proc.stdin is not None
            await health.wait_online()
            proc.stdin.write("scan HELLO-1\n")
            proc.stdin.flush()
            assert (await reads.next()).value == "HELLO-1"
    finally:
        finish(proc)
    assert proc.returncode == 0


# --- the simulator is as strict as the chip (issue 12) -----------------------------------


def test_a_slow_breakout_loses_a_command_sent_with_the_wake_up() -> None:
    with Pn532Simulator(wake_delay=0.02) as slow:
        host = Host(slow.path)
        try:
            host.send(pf.WAKE_UP + SAM)
            assert host.items(0.2) == []  # lost: the chip was still coming up
            host.send(SAM)
            assert host.items() == [pf.Ack(), pf.Frame(pf.CHIP_TFI, b"\x15")]
        finally:
            host.close()


def test_a_card_left_on_the_field_is_found_again_only_after_a_release(
    sim: Pn532Simulator,
) -> None:
    host = Host(sim.path)
    try:
        host.awake()
        sim.place("04A1B2C3")
        listing = pf.command(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00")
        host.send(pf.command(pf.RF_CONFIGURATION, b"\x05\xff\x01\x00"))
        host.items()
        host.send(listing)
        assert host.items()[1].data[1] == 1  # one target
        host.send(listing)
        assert host.items()[1].data[1] == 0  # still selected: it does not answer REQA
        host.send(pf.command(pf.IN_RELEASE, b"\x00"))
        host.items()
        host.send(listing)
        assert host.items()[1].data[1] == 1
    finally:
        host.close()


def test_a_phone_has_no_ats_until_set_parameters_turns_auto_rats_on(sim: Pn532Simulator) -> None:
    from simulators.pn532 import phone

    host = Host(sim.path)
    try:
        host.awake()
        sim.place(phone("AGP1.x"))
        listing = pf.command(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00")
        host.send(listing)
        [target] = pf.parse_targets(host.items()[1].data[1:])
        assert not target.iso_dep  # no RATS was sent: no ATS
        host.send(pf.command(pf.IN_RELEASE, b"\x00"))
        host.items()
        host.send(pf.command(pf.SET_PARAMETERS, b"\x14"))
        host.items()
        host.send(listing)
        [target] = pf.parse_targets(host.items()[1].data[1:])
        assert target.iso_dep and target.ats
    finally:
        host.close()
