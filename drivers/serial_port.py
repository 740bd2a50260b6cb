"""Serial ports for reader drivers: open, read, write, notice loss, reopen with back-off.

Built on ``pyserial-asyncio-fast``. Errors say what an installer can check: a port that
is missing names the ports that do exist ("serial port /dev/ttyUSB0 not found: is the
reader plugged in? ports seen: /dev/ttyAMA0"); a port that vanishes while open (USB
unplugged, a pty closed) surfaces as :class:`PortLost`, so the driver can report the
reader offline and reopen it once the path is back.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import os
from typing import Any

import serial
import serial_asyncio_fast
from serial.tools import list_ports

from gateway.errors import DeviceNotFound, HardwareError

READ_SIZE = 4096


class PortLost(HardwareError):
    """An open serial port stopped working (unplugged, or its device went away)."""


def ports_seen() -> list[str]:
    """The serial ports this machine has now (for error messages)."""
    found = {p.device for p in list_ports.comports()}
    found.update(glob.glob("/dev/serial/by-id/*"))
    return sorted(found)


def not_found(path: str, what: str = "reader") -> DeviceNotFound:
    """The error for a port path that does not exist, listing the ports that do."""
    seen = ", ".join(ports_seen()) or "none"
    return DeviceNotFound(
        f"serial port {path} not found: is the {what} plugged in? ports seen: {seen}"
    )


class Backoff:
    """Growing delays between reopen attempts: ``first``, doubling, capped at ``most``."""

    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self.first = first
        self.most = most
        self._next = first

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._next = self.first

    def next_delay(self) -> float:
        """The delay to wait now; the following one will be longer."""
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay

    async def sleep(self) -> None:
        """Wait the next delay."""
        await asyncio.sleep(self.next_delay())


class SerialPort:
    """One serial port, opened through pyserial-asyncio-fast (8N1, no flow control)."""

    def __init__(self, path: str, baudrate: int = 115200, *, what: str = "reader") -> None:
        self.path = path
        self.baudrate = baudrate
        self.what = what
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close` or loss."""
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        """Open the port; DeviceNotFound if the path is missing, HardwareError otherwise."""
        try:
            self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                url=self.path, baudrate=self.baudrate, exclusive=True
            )
        except serial.SerialException as exc:
            raise self._open_error(exc) from exc
        except OSError as exc:
            raise self._open_error(exc) from exc

    def _open_error(self, exc: Exception) -> HardwareError:
        code = getattr(exc, "errno", None)
        if code == errno.ENOENT or not os.path.exists(self.path):
            return not_found(self.path, self.what)
        if code in (errno.EACCES, errno.EPERM):
            return HardwareError(
                f"serial port {self.path}: permission denied; add the service user to the "
                "dialout group (usermod -aG dialout accessgw)"
            )
        return HardwareError(
            f"serial port {self.path} cannot be opened: {exc}. "
            "Is another program (ModemManager, a console on it) using it?"
        )

    async def read(self, size: int = READ_SIZE) -> bytes:
        """Some bytes (at least one); PortLost when the port is gone."""
        if self._reader is None:
            raise PortLost(f"serial port {self.path} is not open")
        try:
            data = await self._reader.read(size)
        except (serial.SerialException, OSError) as exc:
            raise self._lost(exc) from exc
        if not data:
            raise self._lost(None)
        return data

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending; PortLost when the port is gone."""
        if self._writer is None or self._writer.is_closing():
            raise self._lost(None)
        self._writer.write(data)

    def _lost(self, exc: BaseException | None) -> PortLost:
        why = f" ({exc})" if exc else ""
        return PortLost(
            f"serial port {self.path} stopped working{why}: was the {self.what} unplugged?"
        )

    async def close(self) -> None:
        """Close the port (safe to call twice, and after a loss)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        transport: Any = writer.transport
        if not transport.is_closing():  # a lost port is closing already
            # abort, not close: a flush on a port whose device vanished can block
            transport.abort()
        await asyncio.sleep(0)
