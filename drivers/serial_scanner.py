"""QR / barcode scanners in serial mode (Newland, Honeywell, Zebra...): one code per line.

A line ends with CR, LF or CR LF (the ``terminators`` setting). Only printable ASCII
goes on to a decision, at most ``max_length`` characters: a line with control
characters, with bytes outside ASCII (binary garbage, a scanner at the wrong baud rate)
or longer than the limit is dropped whole and counted (``reader.lines.counters``:
``dropped_control``, ``dropped_binary``, ``dropped_overlong``), never passed on. A code
starting ``AGP1.`` is a phone pass.

Scanners set up without a suffix end a code with silence: a line that stays quiet for
``idle_gap`` seconds (about 50 ms; a scanner sends a code in one burst) ends the code.
An STX (0x02) prefix is dropped, and so is an AIM symbology identifier (``]Q1``: a ``]``,
a code letter and a modifier) when ``aim_ids`` is on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from drivers.serial_port import (
    Backoff,
    SerialPort,
)
from gateway.errors import HardwareError
from gateway.profiles import (
    DeviceAddress,
    DriverSettings,
    ReaderDriverSpec,
    ReaderSecrets,
    needs_port,
)
from gateway.readers import CredentialRead, HealthCallback, Reader, classify_code, utc_now

log = logging.getLogger(__name__)

TERMINATORS = {"CR": 0x0D, "LF": 0x0A, "TAB": 0x09, "ETX": 0x03}
STX = 0x02
AIM_ID = re.compile(rb"^\][A-Za-z][0-9A-Za-z]")  # ]Q1 QR, ]d2 DataMatrix, ]C0 Code 128


Terminator = Literal["CR", "LF", "TAB", "ETX"]


def _cr_and_lf() -> list[Terminator]:
    return ["CR", "LF"]


class ScannerSettings(DriverSettings):
    """What a scanner profile may set (``[settings]``, overridden by ``options``)."""

    baudrate: int = Field(default=9600, gt=0)
    max_length: int = Field(default=1024, ge=1, le=65536)
    # bytes that end a code; CR LF is a CR then an (ignored) empty line
    terminators: list[Terminator] = Field(default_factory=_cr_and_lf, min_length=1)
    strip: bool = True  # drop spaces around a code (some scanners pad)
    reopen_max: float = Field(default=5.0, gt=0, le=300)
    idle_gap: float | None = Field(
        default=0.05, gt=0, le=5, description="silence that ends a code (None: suffix only)"
    )
    aim_ids: bool = True  # drop an AIM symbology identifier (]Q1) in front of a code


@dataclass
class LineCounters:
    """What the line reader passed on and what it dropped."""

    codes: int = 0
    dropped_control: int = 0
    dropped_binary: int = 0
    dropped_overlong: int = 0
    empty: int = 0


class LineReader:
    """Splits a byte stream into codes; holds at most ``max_length`` bytes of a line."""

    def __init__(
        self,
        max_length: int = 1024,
        strip: bool = True,
        terminators: bytes = b"\r\n",
        aim_ids: bool = True,
    ) -> None:
        self.max_length = max_length
        self.strip = strip
        self.aim_ids = aim_ids
        self.terminators = frozenset(terminators)
        self.counters = LineCounters()
        self._line = bytearray()
        self._overlong = False

    @property
    def buffered(self) -> int:
        """Bytes of the line being read."""
        return len(self._line)

    def reset(self) -> None:
        """Forget a partial line (the port was reopened)."""
        self._line.clear()
        self._overlong = False

    def feed(self, data: bytes) -> list[str]:
        """Take bytes; return the complete, valid codes they finish."""
        codes: list[str] = []
        for byte in data:
            if byte in self.terminators:
                code = self._end_line()
                if code is not None:
                    codes.append(code)
            elif self._overlong:
                continue  # throw the rest of an over-long line away, up to its end
            elif len(self._line) >= self.max_length:
                self._overlong = True
                self._line.clear()
            else:
                self._line.append(byte)
        return codes

    def end(self) -> list[str]:
        """The line went quiet (``idle_gap``): what was read is a whole code."""
        if not self._line and not self._overlong:
            return []
        code = self._end_line()
        return [] if code is None else [code]

    def _end_line(self) -> str | None:
        line, overlong = bytes(self._line), self._overlong
        self.reset()
        if line[:1] == bytes((STX,)):
            line = line[1:]  # scanners framing codes as STX ... ETX/CR
        if self.aim_ids:
            line = AIM_ID.sub(b"", line, count=1)
        if overlong:
            self.counters.dropped_overlong += 1
            return None
        if not line:
            return None  # the LF of a CR LF, or a blank line
        if any(b >= 0x80 for b in line):
            self.counters.dropped_binary += 1
            return None
        if any(b < 0x20 or b == 0x7F for b in line):
            self.counters.dropped_control += 1
            return None
        text = line.decode("ascii")
        text = text.strip(" ") if self.strip else text
        if not text:
            self.counters.empty += 1
            return None
        self.counters.codes += 1
        return text


class SerialScanner(Reader):
    """A serial QR/barcode scanner: reads lines, yields codes and phone passes."""

    def __init__(
        self,
        reader_id: str,
        port: str,
        settings: ScannerSettings | None = None,
        on_health: HealthCallback | None = None,
    ) -> None:
        super().__init__(reader_id, on_health)
        self.settings = settings or ScannerSettings()
        self.port = SerialPort(port, self.settings.baudrate, what="scanner")
        ends = bytes(TERMINATORS[name] for name in self.settings.terminators)
        self.lines = LineReader(
            self.settings.max_length, self.settings.strip, ends, self.settings.aim_ids
        )
        self._closed = False

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Open the port, yield a read per valid line; reopen with back-off on loss."""
        backoff = Backoff(0.1, self.settings.reopen_max)
        while not self._closed:
            try:
                await self.port.open()
                self.lines.reset()
                backoff.reset()
                self.report(True, f"scanner on {self.port.path}")
                while True:
                    gap = self.settings.idle_gap if self.lines.buffered else None
                    try:
                        async with asyncio.timeout(gap):
                            data = await self.port.read()
                    except TimeoutError:  # quiet after some bytes: the code is complete
                        for code in self.lines.end():
                            yield classify_code(self.id, code, utc_now())
                        continue
                    at = utc_now()
                    for code in self.lines.feed(data):
                        yield classify_code(self.id, code, at)
            except HardwareError as exc:
                if not self._closed:
                    self.report(False, str(exc))
            finally:
                await self.port.close()
            if not self._closed:
                await backoff.sleep()

    async def close(self) -> None:
        """Stop reading and release the port."""
        self._closed = True
        await self.port.close()


def create_reader(
    reader_id: str,
    address: DeviceAddress,
    settings: ScannerSettings,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
) -> Reader:
    """The driver factory named by ``driver = "serial_scanner"`` profiles."""
    assert address.port is not None  # checked by needs_port
    return SerialScanner(reader_id, address.port, settings, on_health)


READER_DRIVER = ReaderDriverSpec(ScannerSettings, create_reader, needs_port)
