"""Modbus relay boards, RTU over RS-485 or TCP, through pymodbus's async clients.

Outputs are coils (``write_coil``, then, with ``read_back``, ``read_coils``: that reads the
board's coil register, i.e. what the board was told, not the relay's contacts; a welded
relay is seen only through an auxiliary contact wired to an input). Inputs are discrete
inputs, polled every ``poll_interval`` and turned into de-bounced edges. The driver owns
its reconnect loop (pymodbus's own is switched off) with back-off from ``reconnect_min``
to ``reconnect_max``; after every reconnect it writes the outputs again, since a board
that lost power comes back with every relay off.

Boards on one RS-485 port (multi-drop, each with its own unit id) share one client and
one request lock (:class:`ModbusLine`): pymodbus locks a serial port exclusively, so a
second client on the same port could never open it. Boards behind one TCP address
(a Modbus gateway) share theirs the same way.

Hardware-timed pulses (``flash = true``, Waveshare's "flash on"): FC 0x05 to address
0x0200 + n with the time in 100 ms units; the board switches the relay off by itself,
so a gateway that dies mid-grant cannot leave a door released. The software timer still
runs as the fallback.

Settings: see :class:`ModbusSettings` (firmware profile ``[settings]``, overridden by the
board's ``options``).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from pydantic import Field, model_validator
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import WriteSingleCoilRequest

from gateway.errors import ConfigError
from gateway.outputs import Board, BoardOffline, RelayFault, check_cancelled, wait_event
from gateway.profiles import BoardDriverSpec, DeviceAddress, DriverSettings

log = logging.getLogger(__name__)
# pymodbus dumps every frame in hex at DEBUG: keep that out of the operator's log
logging.getLogger("pymodbus").setLevel(logging.INFO)

Client = AsyncModbusSerialClient | AsyncModbusTcpClient
FAILURES = (ModbusException, OSError, TimeoutError)
FLASH_ON_BASE = 0x0200  # Waveshare: FC05 to 0x0200+n, value = on time in 100 ms units
T = TypeVar("T")


class ModbusSettings(DriverSettings):
    """What a Modbus board profile may set (``[settings]``, overridden by ``options``)."""

    transport: Literal["rtu", "tcp"] = "rtu"
    framer: Literal["socket", "rtu"] = Field(
        "socket", description="tcp only: rtu for Ethernet boards that speak RTU framing"
    )
    baudrate: Literal[1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    coils: int = Field(8, ge=1, le=256)
    coil_base: int = Field(0, ge=0, le=65535)
    inputs: int = Field(0, ge=0, le=256)
    input_base: int = Field(0, ge=0, le=65535)
    poll_interval: float = Field(0.05, ge=0.005, le=60)
    debounce: float = Field(0.0, ge=0, le=5)
    heartbeat: float = Field(1.0, gt=0, le=60)
    timeout: float = Field(0.5, gt=0, le=10)
    retries: int = Field(1, ge=0, le=5)
    read_back: bool = True
    flash: bool = Field(False, description="the board has Waveshare flash-on (FC05 0x0200+n)")
    reconnect_min: float = Field(0.2, gt=0, le=60)
    reconnect_max: float = Field(10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not be above reconnect_max")
        if self.framer == "rtu" and self.transport != "tcp":
            raise ValueError('framer = "rtu" is for transport = "tcp" (RTU framing over TCP)')
        return self

    @property
    def output_count(self) -> int:
        """Coils a door may name: index 0..coils-1."""
        return self.coils

    @property
    def input_count(self) -> int:
        """Discrete inputs a door may name: index 0..inputs-1."""
        return self.inputs

    def line(self) -> str:
        """The serial line settings, as an installer writes them (9600 8N1)."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def check_address(address: DeviceAddress, settings: ModbusSettings) -> list[tuple[str, str]]:
    """Where a Modbus board is: a port for RTU, a host for TCP, a unit id 1-247."""
    problems = []
    if settings.transport == "rtu" and not address.port:
        problems.append(("port", "is required for a Modbus RTU board (e.g. /dev/ttyUSB0)"))
    if settings.transport == "tcp" and not address.host:
        problems.append(("host", "is required for a Modbus TCP board (and tcp_port, default 502)"))
    unit = 1 if address.unit is None else address.unit
    if unit == 0:
        problems.append(("unit", "0 is the broadcast address (no board answers it): use 1-247"))
    elif not 1 <= unit <= 247:
        problems.append(("unit", f"{unit} is outside 1-247"))
    return problems


def bus_of(address: DeviceAddress, settings: ModbusSettings) -> tuple[str, str] | None:
    """The serial bus an RTU board is on, with its line settings."""
    if settings.transport != "rtu" or not address.port:
        return None
    return (address.port, f"Modbus RTU {settings.line()}")


def _missing_port(port: str) -> str | None:
    """Why ``port`` cannot be the board's serial port (None: it exists)."""
    if os.path.exists(port):
        return None
    patterns = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/serial/by-id/*")
    ports = sorted(p for pattern in patterns for p in glob.glob(pattern))
    return (
        f"serial port {port} not found: is the RS-485 adapter plugged in? "
        f"ports seen: {', '.join(ports) or 'none'}"
    )


class FlashOnRequest(WriteSingleCoilRequest):
    """FC05 with a raw value: Waveshare's flash-on (``write_coil`` only sends 0xFF00/0)."""

    def __init__(self, address: int, value: int, dev_id: int) -> None:
        super().__init__(address=address, bits=[True], dev_id=dev_id)
        self.raw_value = value

    def encode(self) -> bytes:
        """Address and the raw 16-bit value."""
        return struct.pack(">HH", self.address, self.raw_value)


class ModbusLine:
    """One pymodbus client and one request lock, shared by every board on a port/host.

    Made and found through :func:`line_for`; closed when its last board closes.
    """

    def __init__(self, key: tuple[str, ...], make: Callable[[], Client], line: str) -> None:
        self.key = key
        self.line = line  # the line settings, to refuse a board that wants others
        self._make = make
        self.client: Client | None = None
        self.lock = asyncio.Lock()  # one request on the wire at a time, whoever asks
        self._connecting = asyncio.Lock()
        self.users = 0
        self.error = ""

    async def connect(self) -> bool:
        """Connected (now or already); on failure :attr:`error` says why."""
        async with self._connecting:
            if self.client is not None and self.client.connected:
                return True
            self.reset()
            client = self._make()
            try:
                connected = await client.connect()
            except FAILURES as exc:
                connected, self.error = False, str(exc)
            else:
                self.error = "" if connected else "connection refused or port busy"
            if not connected:
                client.close()
                return False
            self.client = client
            return True

    async def call(self, request: Callable[[Client], Awaitable[T]], board: str) -> T:
        """Run one request on the wire, under the line's lock."""
        async with self.lock:
            client = self.client
            if client is None or not client.connected:
                raise BoardOffline(board, self.error or "not connected")
            return await request(client)

    def reset(self) -> None:
        """Drop the client (the port or connection failed): every board reconnects."""
        client, self.client = self.client, None
        if client is not None:
            client.close()


_lines: dict[tuple[object, ...], ModbusLine] = {}


def line_for(board_id: str, address: DeviceAddress, settings: ModbusSettings) -> ModbusLine:
    """The shared line for a board; ConfigError if the port is in use with other settings."""
    loop = asyncio.get_running_loop()
    if settings.transport == "tcp":
        assert address.host is not None
        tcp_port = address.tcp_port or 502
        key: tuple[object, ...] = (id(loop), "tcp", address.host, tcp_port, settings.framer)
        line = f"TCP {settings.framer} framing"

        def make() -> Client:
            assert address.host is not None
            return AsyncModbusTcpClient(
                address.host,
                port=tcp_port,
                framer=FramerType.RTU if settings.framer == "rtu" else FramerType.SOCKET,
                timeout=settings.timeout,
                retries=settings.retries,
                reconnect_delay=0,  # our own loop reconnects, with back-off and health
            )
    else:
        assert address.port is not None
        key = (id(loop), "rtu", os.path.realpath(address.port))
        line = settings.line()

        def make() -> Client:
            assert address.port is not None
            return AsyncModbusSerialClient(
                address.port,
                baudrate=settings.baudrate,
                parity=settings.parity,
                bytesize=settings.bytesize,
                stopbits=settings.stopbits,
                timeout=settings.timeout,
                retries=settings.retries,
                reconnect_delay=0,
            )

    shared = _lines.get(key)
    if shared is None:
        shared = _lines[key] = ModbusLine(tuple(str(k) for k in key[1:]), make, line)
    elif shared.line != line:
        raise ConfigError(
            f"board {board_id}",
            [
                f"its port is already used by another board at {shared.line}, not {line}: "
                "boards on one RS-485 bus share its line settings"
            ],
        )
    shared.users += 1
    return shared


def release_line(line: ModbusLine) -> None:
    """A board is done with ``line``; the last one closes it."""
    line.users -= 1
    if line.users <= 0:
        line.reset()
        for key, value in list(_lines.items()):
            if value is line:
                del _lines[key]


class ModbusBoard(Board):
    """A Modbus relay board (coils) with optional discrete inputs."""

    def __init__(self, board_id: str, address: DeviceAddress, settings: ModbusSettings) -> None:
        super().__init__(board_id, settings.model_dump())
        problems = check_address(address, settings)
        if problems:
            raise ConfigError(f"board {board_id}", [f"{k}: {m}" for k, m in problems])
        self.config = settings
        self.address = address
        self.transport = settings.transport
        self.unit = 1 if address.unit is None else address.unit
        self.port, self.host = address.port, address.host
        self.tcp_port = address.tcp_port or 502
        self.coils, self.coil_base = settings.coils, settings.coil_base
        self.inputs, self.input_base = settings.inputs, settings.input_base
        self.poll_interval = settings.poll_interval
        self.heartbeat = settings.heartbeat
        self.timeout = settings.timeout
        self.retries = settings.retries
        self.read_back = settings.read_back
        self.reconnect_min = settings.reconnect_min
        self.reconnect_max = settings.reconnect_max
        self.line: ModbusLine | None = None
        self._ready = asyncio.Event()

    @property
    def output_count(self) -> int:
        """How many coils a door may name."""
        return self.coils

    @property
    def where(self) -> str:
        """The board's address, as an installer would write it."""
        if self.transport == "tcp":
            return f"{self.host}:{self.tcp_port} unit {self.unit}"
        return f"{self.port} unit {self.unit}"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connect/poll loop; wait briefly for a first answer so inputs are known."""
        if self.line is not None:
            return
        self.line = line_for(self.id, self.address, self.config)
        self._run_loop(self._run)  # supervised (gateway/outputs.py): never dies silently
        await wait_event(self._ready, 2 * self.timeout * (self.retries + 1))

    async def close(self) -> None:
        """Outputs to their safe level (if the board answers), stop polling, free the line."""
        await super().close()
        await self._stop_loop()
        line, self.line = self.line, None
        if line is not None:
            release_line(line)

    async def _run(self) -> None:
        self._ready.clear()  # (re)started: the first answer writes the outputs again
        delay = self.reconnect_min
        while True:
            check_cancelled()
            if await self._connect():
                delay = self.reconnect_min
                try:
                    await self._poll_forever()
                except FAILURES as exc:
                    self._lost(f"no answer from {self.where}: {exc}", exc)
                except BoardOffline as exc:  # the shared line was reset meanwhile
                    self._lost(f"no answer from {self.where}: {exc.reason}", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _connect(self) -> bool:
        assert self.line is not None
        missing = _missing_port(self.port) if self.transport == "rtu" and self.port else None
        if missing is not None:
            self._report(False, missing)
            return False
        if await self.line.connect():
            return True
        hint = "is the board powered and on the network?" if self.transport == "tcp" else ""
        self._report(False, f"cannot connect to {self.where}: {self.line.error} {hint}".strip())
        return False

    def _lost(self, reason: str, cause: BaseException | None = None) -> None:
        """The board stopped answering: inputs unknown; the line is reset only when the
        port or connection itself failed (another board on the bus may answer fine)."""
        self._forget_inputs()
        self._ready.clear()
        shared_failure = isinstance(cause, OSError | ConnectionException | BoardOffline)
        if self.line is not None and (self.transport == "tcp" or shared_failure):
            self.line.reset()
        self._report(False, reason)

    async def _poll_forever(self) -> None:
        first = True
        while True:
            at = time.monotonic()
            if self.inputs:
                levels = await self._read_inputs()
                for index in range(self.inputs):
                    self._sample(index, levels[index], at)
            else:
                await self._read_coil(self.coil_base)
            check_cancelled()
            if first:  # the board answers: it may have lost power, write the outputs again
                first = False
                await self._rewrite_outputs()
                self._report(True)
                self._ready.set()
            await asyncio.sleep(self.poll_interval if self.inputs else self.heartbeat)

    async def _rewrite_outputs(self) -> None:
        # at the first connect this puts each lock at its door's safe level at once
        for index, on in self.levels_to_restore().items():
            with contextlib.suppress(RelayFault):
                await self._switch(index, on)

    # --- the wire -----------------------------------------------------------------------

    async def _call(self, request: Callable[[Client], Awaitable[T]]) -> T:
        if self.line is None:
            raise BoardOffline(self.id, "not started")
        return await self.line.call(request, self.id)

    async def _read_inputs(self) -> list[bool]:
        reply = await self._call(
            lambda c: c.read_discrete_inputs(
                self.input_base, count=self.inputs, device_id=self.unit
            )
        )
        if reply.isError():
            raise ModbusException(
                f"discrete inputs {self.input_base}..{self.input_base + self.inputs - 1} "
                f"refused ({reply}): check inputs/input_base in the profile"
            )
        return [bool(b) for b in reply.bits[: self.inputs]]

    async def _read_coil(self, address: int) -> bool:
        reply = await self._call(lambda c: c.read_coils(address, count=1, device_id=self.unit))
        if reply.isError():
            raise ModbusException(f"coil {address} read refused ({reply})")
        return bool(reply.bits[0])

    async def _write(self, index: int, on: bool) -> None:
        if not 0 <= index < self.coils:
            raise self._fault(index, f"no such output: this board has {self.coils} coils")
        if not self.health.online or self.line is None:
            raise BoardOffline(self.id, self.health.reason or "not connected")
        try:
            await self._switch(index, on)
        except FAILURES as exc:
            self._lost(f"no answer from {self.where}: {exc}", exc)
            raise BoardOffline(self.id, self.health.reason) from exc

    async def _switch(self, index: int, on: bool) -> None:
        address = self.coil_base + index
        reply = await self._call(lambda c: c.write_coil(address, on, device_id=self.unit))
        if reply.isError():
            raise self._fault(
                index, f"the board refused coil {address} ({reply}): check coil_base in the profile"
            )
        await self._check_coil(index, on)

    async def _check_coil(self, index: int, on: bool) -> None:
        """With ``read_back``: the coil register says what was written (not the contacts)."""
        address = self.coil_base + index
        if self.read_back and await self._read_coil(address) != on:
            state = "on" if not on else "off"
            raise self._fault(
                index,
                f"coil did not switch: wrote {'on' if on else 'off'}, the board's coil reads "
                f"{state} (the board ignores writes, or coil_base is wrong)",
            )

    async def _write_timed(self, index: int, seconds: float) -> bool:
        """Flash-on: the board itself switches the relay off after ``seconds``."""
        if not self.config.flash:
            return False
        if not 0 <= index < self.coils:
            raise self._fault(index, f"no such output: this board has {self.coils} coils")
        if not self.health.online or self.line is None:
            raise BoardOffline(self.id, self.health.reason or "not connected")
        try:
            return await self._flash_on(index, seconds)
        except FAILURES as exc:
            self._lost(f"no answer from {self.where}: {exc}", exc)
            raise BoardOffline(self.id, self.health.reason) from exc

    async def _flash_on(self, index: int, seconds: float) -> bool:
        ticks = max(1, min(0xFFFF, round(seconds * 10)))
        request = FlashOnRequest(FLASH_ON_BASE + index, ticks, self.unit)
        reply: ModbusPDU = await self._call(lambda c: c.execute(False, request))
        if reply.isError():
            raise self._fault(index, f"the board refused flash-on ({reply}): is flash supported?")
        await self._check_coil(index, True)
        return True

    async def _read_output(self, index: int) -> bool:
        try:
            return await self._read_coil(self.coil_base + index)
        except FAILURES as exc:
            self._lost(f"no answer from {self.where}: {exc}", exc)
            raise BoardOffline(self.id, self.health.reason) from exc


def create_board(board_id: str, address: DeviceAddress, settings: ModbusSettings) -> ModbusBoard:
    """The driver factory (see gateway/profiles.py)."""
    return ModbusBoard(board_id, address, settings)


BOARD_DRIVER = BoardDriverSpec(ModbusSettings, create_board, check_address, bus_of)
