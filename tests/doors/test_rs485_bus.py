"""HARDWARE.md, Door and reader practice: several devices on one RS-485 bus share one
port and one request lock; hardware-timed pulses end on the board's own clock.

Two Modbus boards (unit 1 and unit 2) behind one RTU pty are driven in one test through
one shared pymodbus client (pymodbus locks a serial port exclusively: a second client
could never open it). A Waveshare flash-on pulse ends on the simulator's own clock after
the gateway process is killed mid-grant.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import BoardConfig, Config, DoorConfig, GatewaySection
from gateway.profiles import build_board, check_devices
from simulators.relay_board import RelayBoardSim
from tests.doors.helpers import until

ROOT = Path(__file__).resolve().parents[2]
FAST = {"poll_interval": 0.02, "timeout": 0.3, "retries": 0, "reconnect_min": 0.05}


@pytest.fixture
def bus() -> Iterator[RelayBoardSim]:
    """Two Waveshare-like boards, unit 1 and unit 2, on one RS-485 line (one pty)."""
    sim = RelayBoardSim(units=(1, 2), flash=True).start_rtu()
    yield sim
    sim.close()


def board_on(sim: RelayBoardSim, board_id: str, unit: int, **options: object) -> BoardConfig:
    """A board entry for the Waveshare profile at ``unit`` on the simulator's port."""
    return BoardConfig(
        id=board_id,
        profile="waveshare-modbus-rtu-relay-8ch",
        port=sim.path,
        unit=unit,
        options={**FAST, **options},
    )


async def test_two_boards_on_one_rs485_port_both_work_through_one_shared_client(
    bus: RelayBoardSim,
) -> None:
    first = build_board(board_on(bus, "left", 1))
    second = build_board(board_on(bus, "right", 2))
    await first.start()
    await second.start()
    try:
        await until(lambda: first.health.online and second.health.online)
        assert first.line is second.line  # type: ignore[attr-defined]
        await first.set_output(0, True)
        await second.set_output(3, True)
        assert bus.coil(0, unit=1) and not bus.coil(3, unit=1)
        assert bus.coil(3, unit=2) and not bus.coil(0, unit=2)
        bus.set_input(1, True, unit=2)
        await until(lambda: second.input_state(1) is True)
        assert first.input_state(1) is False
        # both poll and write at once: one request on the wire at a time, none lost
        await asyncio.gather(*(first.set_output(i, True) for i in range(1, 4)))
        assert [bus.coil(i, unit=1) for i in range(4)] == [True] * 4
        assert bus.requests[1] > 0 and bus.requests[2] > 0
    finally:
        await first.close()
        await second.close()
    assert not any(bus.coil(i, unit=u) for u in (1, 2) for i in range(8))


def _config(*boards: BoardConfig, doors: list[DoorConfig] | None = None) -> Config:
    return Config(
        gateway=GatewaySection(id="gw-1", site="club"), boards=list(boards), doors=doors or []
    )


def test_one_port_with_two_line_settings_is_refused_by_validation() -> None:
    a = BoardConfig(id="a", profile="waveshare-modbus-rtu-relay-8ch", port="/dev/ttyUSB0", unit=1)
    b = a.model_copy(update={"id": "b", "unit": 2, "options": {"baudrate": 19200}})
    problems = [str(p) for p in check_devices(_config(a, b))]
    assert any(
        p.startswith("boards[b].port:") and "different line settings" in p for p in problems
    ), problems
    assert check_devices(_config(a, a.model_copy(update={"id": "c", "unit": 2}))) == []


def test_two_boards_at_one_unit_on_one_port_are_refused() -> None:
    a = BoardConfig(id="a", profile="waveshare-modbus-rtu-relay-8ch", port="/dev/ttyUSB0", unit=1)
    problems = [str(p) for p in check_devices(_config(a, a.model_copy(update={"id": "b"})))]
    assert any(p.startswith("boards[b].unit:") for p in problems), problems


GATEWAY = """
import asyncio, sys
from gateway.config import BoardConfig, DoorConfig, Point
from gateway.doors import Door
from gateway.profiles import build_board

async def main() -> None:
    board = build_board(BoardConfig(
        id="relays", profile="waveshare-modbus-rtu-relay-8ch", port=sys.argv[1], unit=1,
        options={"poll_interval": 0.02, "timeout": 0.3, "retries": 0},
    ))
    await board.start()
    lock = Point(board="relays", index=2)
    config = DoorConfig(id="d", zone="gym", direction="in", lock=lock, unlock_seconds=1.5)
    door = Door(config, {"relays": board})
    await door.start()
    asyncio.get_running_loop().create_task(door.release())
    await asyncio.sleep(0.3)
    print("released", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_flash_on_pulse_ends_on_the_board_clock_after_the_gateway_is_killed(
    bus: RelayBoardSim,
) -> None:
    gateway = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(GATEWAY), bus.path],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert gateway.stdout is not None
        assert gateway.stdout.readline().strip() == b"released"
        assert bus.coil(2), "the grant did not reach the relay"
        gateway.send_signal(signal.SIGKILL)  # the gateway dies mid-grant
        gateway.wait(5)
        deadline = time.monotonic() + 3
        while bus.coil(2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not bus.coil(2), "the door stayed released after the gateway died"
        on, off = bus.changes(2)[-2:]
        assert (on.value, off.value) == (True, False)
        assert 1.3 <= off.at - on.at <= 1.8  # unlock_seconds = 1.5, timed by the board
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(5)
