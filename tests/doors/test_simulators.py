"""The relay board and turnstile simulators speak real Modbus and can be run by hand."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from simulators.relay_board import RelayBoardSim
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_a_stuck_relay_answers_ok_but_does_not_move() -> None:
    with RelayBoardSim() as sim:
        sim.start_tcp()
        client = AsyncModbusTcpClient(sim.host, port=sim.port, reconnect_delay=0)
        assert await client.connect()
        try:
            sim.stick(4)
            reply = await client.write_coil(4, True, device_id=1)
            assert not reply.isError()
            assert (await client.read_coils(4, count=1, device_id=1)).bits[0] is False
            assert sim.changes(4) == []
            sim.set_input(6, True)
            inputs = await client.read_discrete_inputs(0, count=8, device_id=1)
            assert inputs.bits[:8] == [False] * 6 + [True, False]
        finally:
            client.close()


def test_relay_board_main_serves_until_terminated() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.relay_board", "--tcp", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()

        async def switch() -> None:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0)
            assert await client.connect()
            assert not (await client.write_coil(1, True, device_id=1)).isError()
            client.close()

        asyncio.run(switch())
        assert "relay 1 ON" in proc.stdout.readline()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0
