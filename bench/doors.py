"""Door latency, by hand (not in CI): ``python -m bench.doors [--grants 1000]``.

The time from a decision being handed to the door (``Door.release()`` called) to the
relay's coil being set on the Modbus relay board simulator (pymodbus's server, which
stamps each coil change as it applies it), over Modbus TCP on loopback and Modbus RTU on
a pty pair. p50/p99/max in milliseconds; the target is p99 <= 10 ms. The board polls its
8 discrete inputs every 50 ms meanwhile, as in the shipped profiles, so a grant sometimes
waits behind a poll, as it would on a real bus.

A pty ignores the baud rate, so the RTU figure has no wire time in it. Printed beside it:
the wire time a real RS-485 line adds at 9600 and 115200 baud (8N1, 10 bits a character;
Modbus RTU ends a frame with 3.5 characters of silence, 1.75 ms above 19200 baud).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import latency_line
from drivers.modbus import ModbusBoard, ModbusSettings
from gateway.config import BoardConfig, DoorConfig, Point
from gateway.doors import Door
from gateway.profiles import board_address
from simulators.relay_board import RelayBoardSim

TARGET_P99_MS = 10.0
COIL = 3
WRITE_COIL_REQUEST = 8  # unit, fc 05, address(2), value(2), crc(2)
WRITE_COIL_REPLY = 8  # an echo of the request
READ_COIL_REQUEST = 8  # unit, fc 01, address(2), count(2), crc(2)
READ_COIL_REPLY = 6  # unit, fc 01, byte count, 1 data byte, crc(2)
READ_INPUTS_REQUEST, READ_INPUTS_REPLY = 8, 6  # fc 02, 8 inputs: the same sizes


def summary(name: str, samples: list[float]) -> str:
    """p50 / p99 / max of ``samples`` (seconds) in milliseconds, against the target."""
    return latency_line(
        name, [s * 1000 for s in samples], unit="grants", target_p99_ms=TARGET_P99_MS
    )


def frame_seconds(chars: int, baud: int) -> float:
    """Wire time of one RTU frame of ``chars`` characters plus its end-of-frame silence."""
    char = 10 / baud
    silence = 3.5 * char if baud <= 19200 else 0.00175
    return chars * char + silence


def wire_times(baud: int) -> str:
    """What an RS-485 line adds at ``baud``: to the coil set, and for the whole write."""
    request = frame_seconds(WRITE_COIL_REQUEST, baud)
    write = request + frame_seconds(WRITE_COIL_REPLY, baud)
    read_back = frame_seconds(READ_COIL_REQUEST, baud) + frame_seconds(READ_COIL_REPLY, baud)
    poll = frame_seconds(READ_INPUTS_REQUEST, baud) + frame_seconds(READ_INPUTS_REPLY, baud)
    return (
        f"  RS-485 at {baud} baud adds: {request * 1000:.1f} ms until the coil is set "
        f"(write request), {write * 1000:.1f} ms write + reply, "
        f"{(write + read_back) * 1000:.1f} ms with the read-back; "
        f"up to {poll * 1000:.1f} ms more when the grant waits behind an input poll"
    )


async def latencies(sim: RelayBoardSim, transport: str, grants: int) -> list[float]:
    """Decision-to-coil latency of ``grants`` grants through a Door on the Modbus driver."""
    if transport == "tcp":
        config = BoardConfig(id="relays", profile="bench", host=sim.host, tcp_port=sim.port)
    else:
        config = BoardConfig(id="relays", profile="bench", port=sim.path)
    settings = {"transport": transport, "inputs": 8, "poll_interval": 0.05, "timeout": 0.5}
    board = ModbusBoard(config.id, board_address(config), ModbusSettings(**settings))
    await board.start()
    door = Door(
        DoorConfig(
            id="bench",
            zone="gym",
            direction="in",
            lock=Point(board="relays", index=COIL),
            unlock_seconds=0.002,
        ),
        {"relays": board},
    )
    await door.start()
    samples: list[float] = []
    try:
        for _ in range(grants):
            before = len(sim.history)
            asked = time.monotonic()
            await door.release()
            on = sim.history[before]
            assert on.index == COIL and on.value
            samples.append(on.at - asked)
            # the simulator runs on its own thread: poll it until relocked, then the next grant
            while sim.coil(COIL) or door.status()["lock"] != "locked":  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    finally:
        await door.stop()
        await board.close()
    return samples


async def run(grants: int) -> None:
    """Measure over TCP, then over RTU, and print the figures."""
    with RelayBoardSim() as sim:
        sim.start_tcp()
        print(summary("Modbus TCP (loopback)", await latencies(sim, "tcp", grants)), flush=True)
    with RelayBoardSim() as sim:
        sim.start_rtu()
        print(summary("Modbus RTU (pty pair) ", await latencies(sim, "rtu", grants)), flush=True)
    for baud in (9600, 115200):
        print(wire_times(baud))


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--grants N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=1000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.grants))


if __name__ == "__main__":
    main()
