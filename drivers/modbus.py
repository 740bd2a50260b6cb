"""Modbus relay boards, RTU over RS-485 or TCP, through pymodbus's async clients.

Outputs are coils (``write_coil`` then ``read_coils`` to check the relay really switched:
a disagreement is a ``relay_fault``). Inputs are discrete inputs, polled every
``poll_interval`` and turned into de-bounced edges. The driver owns its reconnect loop
(pymodbus's own is switched off) with back-off from ``reconnect_min`` to ``reconnect_max``;
after every reconnect it writes the outputs again, since a board that lost power comes
back with every relay off.

Settings (firmware profile ``[settings]``, overridden by the board's ``options``)::

    transport = "rtu"        # rtu | tcp
    baudrate = 9600          # rtu: line settings
    parity = "N"
    bytesize = 8
    stopbits = 1
    coils = 8                # outputs 0..coils-1 are coils coil_base..
    coil_base = 0
    inputs = 8               # inputs 0..inputs-1 are discrete inputs input_base..
    input_base = 0
    poll_interval = 0.05     # seconds between input polls
    debounce = 0.0           # an input level must hold this long to count
    heartbeat = 1.0          # seconds between liveness reads when there are no inputs
    timeout = 0.5            # seconds to wait for an answer
    retries = 1              # pymodbus re-sends after a timeout
    read_back = true         # read the coil back after each write
    reconnect_min = 0.2
    reconnect_max = 10.0
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.config import BoardConfig
from gateway.errors import ConfigError
from gateway.outputs import Board, BoardOffline, RelayFault, check_cancelled, wait_event
from gateway.profiles import Profile

log = logging.getLogger(__name__)

Client = AsyncModbusSerialClient | AsyncModbusTcpClient
FAILURES = (ModbusException, OSError, TimeoutError)


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


class ModbusBoard(Board):
    """A Modbus relay board (coils) with optional discrete inputs."""

    def __init__(self, config: BoardConfig, settings: dict[str, Any]) -> None:
        super().__init__(config.id, settings)
        s = self.settings
        self.transport = str(s.get("transport", "rtu"))
        self.unit = config.unit
        self.port, self.host, self.tcp_port = config.port, config.host, config.tcp_port or 502
        self.coils, self.coil_base = int(s.get("coils", 8)), int(s.get("coil_base", 0))
        self.inputs, self.input_base = int(s.get("inputs", 0)), int(s.get("input_base", 0))
        self.poll_interval = float(s.get("poll_interval", 0.05))
        self.heartbeat = float(s.get("heartbeat", 1.0))
        self.timeout = float(s.get("timeout", 0.5))
        self.retries = int(s.get("retries", 1))
        self.read_back = bool(s.get("read_back", True))
        self.reconnect_min = float(s.get("reconnect_min", 0.2))
        self.reconnect_max = float(s.get("reconnect_max", 10.0))
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._check_config()

    def _check_config(self) -> None:
        problems = []
        if self.transport == "rtu" and not self.port:
            problems.append("port is required for a Modbus RTU board (e.g. /dev/ttyUSB0)")
        elif self.transport == "tcp" and not self.host:
            problems.append("host is required for a Modbus TCP board (and tcp_port, default 502)")
        elif self.transport not in ("rtu", "tcp"):
            problems.append(f"transport must be rtu or tcp, not {self.transport!r}")
        if problems:
            raise ConfigError(f"board {self.id}", problems)

    @property
    def where(self) -> str:
        """The board's address, as an installer would write it."""
        if self.transport == "tcp":
            return f"{self.host}:{self.tcp_port} unit {self.unit}"
        return f"{self.port} unit {self.unit}"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connect/poll loop; wait briefly for a first answer so inputs are known."""
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"modbus {self.id}")
        await wait_event(self._ready, 2 * self.timeout * (self.retries + 1))

    async def close(self) -> None:
        """De-energise the outputs (if the board answers), stop polling, close the port."""
        await super().close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop_client()

    async def _run(self) -> None:
        delay = self.reconnect_min
        try:
            while True:
                check_cancelled()
                if await self._connect():
                    delay = self.reconnect_min
                    try:
                        await self._poll_forever()
                    except FAILURES as exc:
                        self._lost(f"no answer from {self.where}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)
        finally:
            self._drop_client()

    async def _connect(self) -> bool:
        self._drop_client()
        missing = _missing_port(self.port) if self.transport == "rtu" and self.port else None
        if missing is not None:
            self._report(False, missing)
            return False
        client = self._make_client()
        try:
            connected = await client.connect()
        except FAILURES as exc:
            connected, why = False, str(exc)
        else:
            why = "connection refused or port busy"
        if not connected:
            client.close()
            hint = "is the board powered and on the network?" if self.transport == "tcp" else ""
            self._report(False, f"cannot connect to {self.where}: {why} {hint}".strip())
            return False
        self._client = client
        return True

    def _make_client(self) -> Client:
        if self.transport == "tcp":
            assert self.host is not None
            return AsyncModbusTcpClient(
                self.host,
                port=self.tcp_port,
                timeout=self.timeout,
                retries=self.retries,
                reconnect_delay=0,  # our own loop reconnects, with back-off and health
            )
        assert self.port is not None
        s = self.settings
        return AsyncModbusSerialClient(
            self.port,
            baudrate=int(s.get("baudrate", 9600)),
            parity=str(s.get("parity", "N")),
            bytesize=int(s.get("bytesize", 8)),
            stopbits=int(s.get("stopbits", 1)),
            timeout=self.timeout,
            retries=self.retries,
            reconnect_delay=0,
        )

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lost(self, reason: str) -> None:
        """The board stopped answering: inputs unknown, reconnect from scratch."""
        self._forget_inputs()
        self._ready.clear()
        self._drop_client()
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
        for index, on in list(self._wanted.items()):
            with contextlib.suppress(RelayFault):
                await self._switch(index, on)

    # --- the wire -----------------------------------------------------------------------

    def _live_client(self) -> Client:
        if self._client is None:
            raise BoardOffline(self.id, self.health.reason or "not connected")
        return self._client

    async def _read_inputs(self) -> list[bool]:
        reply = await self._live_client().read_discrete_inputs(
            self.input_base, count=self.inputs, device_id=self.unit
        )
        if reply.isError():
            raise ModbusException(
                f"discrete inputs {self.input_base}..{self.input_base + self.inputs - 1} "
                f"refused ({reply}): check inputs/input_base in the profile"
            )
        return [bool(b) for b in reply.bits[: self.inputs]]

    async def _read_coil(self, address: int) -> bool:
        reply = await self._live_client().read_coils(address, count=1, device_id=self.unit)
        if reply.isError():
            raise ModbusException(f"coil {address} read refused ({reply})")
        return bool(reply.bits[0])

    async def _write(self, index: int, on: bool) -> None:
        if not 0 <= index < self.coils:
            raise self._fault(index, f"no such output: this board has {self.coils} coils")
        if not self.health.online or self._client is None:
            raise BoardOffline(self.id, self.health.reason or "not connected")
        try:
            await self._switch(index, on)
        except FAILURES as exc:
            self._lost(f"no answer from {self.where}: {exc}")
            raise BoardOffline(self.id, self.health.reason) from exc

    async def _switch(self, index: int, on: bool) -> None:
        address = self.coil_base + index
        reply = await self._live_client().write_coil(address, on, device_id=self.unit)
        if reply.isError():
            raise self._fault(
                index, f"the board refused coil {address} ({reply}): check coil_base in the profile"
            )
        if self.read_back and await self._read_coil(address) != on:
            state = "on" if not on else "off"
            raise self._fault(
                index,
                f"relay did not switch: wrote {'on' if on else 'off'}, reads back {state} "
                "(stuck relay or the board ignores writes)",
            )

    async def _read_output(self, index: int) -> bool:
        try:
            return await self._read_coil(self.coil_base + index)
        except FAILURES as exc:
            self._lost(f"no answer from {self.where}: {exc}")
            raise BoardOffline(self.id, self.health.reason) from exc


def create_board(config: BoardConfig, profile: Profile) -> ModbusBoard:
    """The driver factory (see gateway/profiles.py)."""
    return ModbusBoard(config, profile.merged(config.options))
