"""A Modbus relay board: pymodbus's own server with 8 coils and 8 discrete inputs.

It speaks real Modbus, over TCP on loopback or RTU on a pty pair (two ptys joined by a
small relay thread: a null-modem cable). The server runs in a thread with its own event
loop, so a test's event loop and the board never wait on each other, as with a real board.

For tests: :attr:`RelayBoardSim.history` (every coil change with its time.monotonic()),
:meth:`set_input`, :meth:`stick` (a relay takes the write but does not move: read-back
disagrees), :meth:`unplug` / :meth:`plug` (server stopped, then started again; a board
that lost power comes back with every relay off).

Several boards on one RS-485 bus: ``RelayBoardSim(units=(1, 2))`` answers as unit 1 and
unit 2 on the same pty, each with its own relays and inputs (``unit=`` on the methods).

Waveshare's flash-on (``flash=True``): FC 0x05 to address 0x0200 + n with the on time in
100 ms units switches relay n on, and the board's own clock switches it off. pymodbus's
server keeps only "on/off" of an FC05 value, so the simulator reads the time from the raw
request frame itself (its own RTU parsing and CRC check, not the driver's codec).

Run by hand: ``python -m simulators.relay_board --tcp 5020`` or ``--rtu``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.pty import Pty

FC_READ_COILS, FC_READ_INPUTS, FC_WRITE_COIL, FC_WRITE_COILS = 1, 2, 5, 15
FLASH_ON, FLASH_OFF = 0x0200, 0x0400  # Waveshare: relay n flashes at 0x0200+n / 0x0400+n

CoilListener = Callable[[int, bool, float], None]


@dataclass(frozen=True, slots=True)
class CoilChange:
    """One relay change on the simulated board (time.monotonic() when it was written)."""

    index: int
    value: bool
    at: float


class NullModem:
    """Two ptys cross-connected by a thread: what one side writes, the other reads.

    ``connected = False`` pulls the cable: bytes are dropped, as on a dead RS-485 line.
    """

    def __init__(self) -> None:
        self.a, self.b = Pty(), Pty()
        self.connected = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="null-modem", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        ends = {self.a.master: self.b, self.b.master: self.a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(ends), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os_read(fd)
                except OSError:
                    continue
                if data and self.connected:
                    ends[fd].write(data)

    def close(self) -> None:
        """Stop the relay thread and hang up both ptys."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.a.close()
        self.b.close()


def os_read(fd: int) -> bytes:
    """Read what is waiting on a non-blocking fd (b"" if nothing)."""
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def crc16_modbus(frame: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), as the board computes it."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@dataclass
class _Unit:
    """One board on the bus: its relays, inputs and what happened to them."""

    coils: list[bool]
    inputs: list[bool]
    history: list[CoilChange] = field(default_factory=list)
    writes: list[CoilChange] = field(default_factory=list)  # every coil write, also no-ops
    stuck: set[int] = field(default_factory=set)
    listeners: list[CoilListener] = field(default_factory=list)
    flashes: dict[int, asyncio.TimerHandle] = field(default_factory=dict)


class RelayBoardSim:
    """A simulated Modbus relay board (pymodbus server) on TCP or RTU."""

    def __init__(
        self,
        *,
        coils: int = 8,
        inputs: int = 8,
        unit: int = 1,
        units: tuple[int, ...] | None = None,
        baudrate: int = 9600,
        flash: bool = False,
    ) -> None:
        if not (0 < coils <= 64 and 0 < inputs <= 64):
            raise ValueError("coils and inputs: 1..64")
        self.n_coils, self.n_inputs, self.baudrate = coils, inputs, baudrate
        ids = units or (unit,)
        self.unit = ids[0]
        self.units = {u: _Unit([False] * coils, [False] * inputs) for u in ids}
        self.flash = flash
        self.requests: dict[int, int] = {u: 0 for u in ids}  # frames addressed to each unit
        self.transport: str | None = None
        self.tcp_framer = FramerType.SOCKET
        self.host, self.port = "127.0.0.1", 0
        self.modem: NullModem | None = None
        self._lock = threading.Lock()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="relay-board", daemon=True
        )
        self._thread.start()

    # --- lifecycle -----------------------------------------------------------------------

    def start_tcp(
        self, port: int = 0, host: str = "127.0.0.1", *, rtu_framing: bool = False
    ) -> RelayBoardSim:
        """Serve Modbus TCP on ``host:port`` (0: a free port, see :attr:`port`);
        ``rtu_framing``: RTU frames (unit, PDU, CRC) over the TCP stream, as Ethernet
        boards built around an RS-485 bridge speak, instead of the MBAP header."""
        self.transport, self.host = "tcp", host
        self.tcp_framer = FramerType.RTU if rtu_framing else FramerType.SOCKET
        self.port = port or _free_port(host)
        self._call(self._serve())
        return self

    def start_rtu(self) -> RelayBoardSim:
        """Serve Modbus RTU on one end of a pty pair; the driver opens :attr:`path`."""
        self.transport = "rtu"
        self.modem = NullModem()
        self._call(self._serve())
        return self

    @property
    def path(self) -> str:
        """The serial port a driver opens (RTU)."""
        assert self.modem is not None, "start_rtu() first"
        return self.modem.b.path

    def unplug(self, power_loss: bool = True) -> None:
        """Stop answering (server stopped, RS-485 cable pulled); relays drop on power loss."""
        if self.modem is not None:
            self.modem.connected = False
        self._call(self._shutdown())
        if power_loss:
            with self._lock:
                for unit in self.units:
                    for index in range(self.n_coils):
                        self._change(unit, index, False, time.monotonic())

    def plug(self) -> None:
        """Answer again, on the same port."""
        self._call(self._serve())
        if self.modem is not None:
            self.modem.connected = True

    def close(self) -> None:
        """Stop the server, the thread and the ptys."""
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        if self.modem is not None:
            self.modem.close()

    def __enter__(self) -> RelayBoardSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what tests look at and do -------------------------------------------------------

    @property
    def coils(self) -> list[bool]:
        """The first unit's relays."""
        return self.units[self.unit].coils

    @property
    def inputs(self) -> list[bool]:
        """The first unit's inputs."""
        return self.units[self.unit].inputs

    @property
    def history(self) -> list[CoilChange]:
        """The first unit's relay changes."""
        return self.units[self.unit].history

    @property
    def listeners(self) -> list[CoilListener]:
        """Told of the first unit's relay changes (on the board's thread)."""
        return self.units[self.unit].listeners

    def coil(self, index: int, unit: int | None = None) -> bool:
        """The relay's state now."""
        with self._lock:
            return self.units[unit or self.unit].coils[index]

    def writes(self, index: int, unit: int | None = None) -> list[CoilChange]:
        """Every write the board took for relay ``index`` (also one that changed nothing)."""
        with self._lock:
            return [c for c in self.units[unit or self.unit].writes if c.index == index]

    def changes(self, index: int, unit: int | None = None) -> list[CoilChange]:
        """Every recorded change of relay ``index``."""
        with self._lock:
            return [c for c in self.units[unit or self.unit].history if c.index == index]

    def set_input(self, index: int, value: bool, unit: int | None = None) -> None:
        """Put a level on discrete input ``index`` (thread-safe, callable from anywhere)."""
        with self._lock:
            self.units[unit or self.unit].inputs[index] = value

    def stick(self, index: int, stuck: bool = True, unit: int | None = None) -> None:
        """Make relay ``index`` ignore writes (the reply still says OK)."""
        with self._lock:
            board = self.units[unit or self.unit]
            (board.stuck.add if stuck else board.stuck.discard)(index)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the board's own thread after ``delay`` seconds."""
        self._loop.call_soon_threadsafe(self._loop.call_later, delay, callback)

    # --- inside the board's thread -------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _devices(self) -> list[SimDevice]:
        def bits(n: int) -> list[SimData]:
            return [SimData(0, count=n, values=False, datatype=DataType.BITS)]

        coils = bits(self.n_coils)
        if self.flash:  # the flash registers answer like coils (the echo of an FC05)
            for base in (FLASH_ON, FLASH_OFF):
                coils.append(
                    SimData(base, count=self.n_coils, values=False, datatype=DataType.BITS)
                )
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        return [
            SimDevice(
                id=unit,
                simdata=(list(coils), bits(self.n_inputs), regs, list(regs)),
                action=self._action_of(unit),
            )
            for unit in self.units
        ]

    async def _serve(self) -> None:
        if self._server is not None:
            return
        devices = self._devices()
        if self.transport == "tcp":
            self._server = ModbusTcpServer(
                devices, address=(self.host, self.port), framer=self.tcp_framer
            )
        else:
            assert self.modem is not None
            self._server = ModbusSerialServer(
                devices,
                port=self.modem.a.path,
                baudrate=self.baudrate,
                trace_packet=self._raw_frame,
            )
        await self._server.serve_forever(background=True)

    def _raw_frame(self, sending: bool, data: bytes) -> bytes:
        """Every raw RTU frame the server gets or sends (the board's own view of the wire)."""
        if (
            sending
            or len(data) < 4
            or crc16_modbus(data[:-2]) != int.from_bytes(data[-2:], "little")
        ):
            return data
        unit, function = data[0], data[1]
        if unit in self.units:
            self.requests[unit] += 1
        if self.flash and unit in self.units and function == FC_WRITE_COIL and len(data) == 8:
            address, value = int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:6], "big")
            if FLASH_ON <= address < FLASH_ON + self.n_coils:
                self._flash(unit, address - FLASH_ON, on_first=True, seconds=value / 10)
            elif FLASH_OFF <= address < FLASH_OFF + self.n_coils:
                self._flash(unit, address - FLASH_OFF, on_first=False, seconds=value / 10)
        return data

    def _flash(self, unit: int, index: int, *, on_first: bool, seconds: float) -> None:
        """Switch relay ``index`` now and back after ``seconds``, on the board's own clock."""
        board = self.units[unit]
        with self._lock:
            old = board.flashes.pop(index, None)
            if old is not None:
                old.cancel()
            self._change(unit, index, on_first, time.monotonic())

        def back() -> None:
            with self._lock:
                board.flashes.pop(index, None)
                self._change(unit, index, not on_first, time.monotonic())

        board.flashes[index] = self._loop.call_later(seconds, back)

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    def _action_of(self, unit: int) -> Callable[..., Coroutine[Any, Any, None]]:
        async def action(*args: Any) -> None:
            await self._action(unit, *args)

        return action

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus calls this on every access: keep the board's own state authoritative."""
        now = time.monotonic()
        board = self.units[unit]
        with self._lock:
            if address >= FLASH_ON:
                return  # a flash register: done from the raw frame (see _raw_frame)
            if function_code in (FC_WRITE_COIL, FC_WRITE_COILS) and values is not None:
                for offset in range(len(values)):
                    index = address + offset
                    board.writes.append(CoilChange(index, bool(values[offset]), now))
                    if index in board.stuck:
                        values[offset] = board.coils[index]  # the write is "taken", not done
                    else:
                        flash = board.flashes.pop(index, None)
                        if flash is not None:  # a plain write ends a running flash
                            flash.cancel()
                        self._change(unit, index, bool(values[offset]), now)
            elif function_code == FC_READ_COILS:
                _pack(board.coils, registers)
            elif function_code == FC_READ_INPUTS and values is None:
                _pack(board.inputs, registers)

    def _change(self, unit: int, index: int, value: bool, at: float) -> None:
        board = self.units[unit]
        if index >= self.n_coils or board.coils[index] == value:
            return
        board.coils[index] = value
        board.history.append(CoilChange(index, value, at))
        for listener in list(board.listeners):
            listener(index, value, at)


def _pack(levels: list[bool], registers: list[int]) -> None:
    """Levels into pymodbus's bit registers (16 per register, bit 0 first)."""
    for reg in range((len(levels) + 15) // 16):
        chunk = levels[reg * 16 : reg * 16 + 16]
        registers[reg] = sum(1 << i for i, level in enumerate(chunk) if level)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate relay-board``: serve a board until Ctrl-C, print relay changes."""
    parser = argparse.ArgumentParser(prog="accessgw simulate relay-board", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tcp", type=int, metavar="PORT", help="Modbus TCP on 127.0.0.1:PORT")
    where.add_argument("--rtu", action="store_true", help="Modbus RTU on a new pty pair")
    parser.add_argument("--unit", type=int, default=1)
    args = parser.parse_args(argv)
    stop = threading.Event()  # set up before the first line: a supervisor may stop us at once
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim = RelayBoardSim(unit=args.unit)
    sim.listeners.append(
        lambda i, v, at: print(f"{at:.3f} relay {i} {'ON' if v else 'off'}", flush=True)
    )
    if args.rtu:
        sim.start_rtu()
        print(f"Modbus RTU relay board, unit {args.unit}, on {sim.path}", flush=True)
    else:
        sim.start_tcp(args.tcp or 5020)
        print(f"Modbus TCP relay board, unit {args.unit}, on {sim.host}:{sim.port}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
