"""Wiegand readers (D0/D1 on two GPIO inputs), through gpiod (libgpiod v2).

Most existing doors have Wiegand readers: two open-collector lines, idle high; a bit is a
short low pulse on D0 (a 0) or on D1 (a 1), a few hundred microseconds to 20 ms apart,
and a frame ends with silence. The kernel timestamps each falling edge (gpiod edge
events, read on the event loop through the request's file descriptor), so the timing is
checked on the kernel's clock, not on when Python got round to it:

- edges closer than ``min_bit_interval`` are noise (or both lines pulled at once): the
  frame is refused;
- ``frame_gap`` of silence ends a frame;
- 26-bit (H10301: even parity over bits 1-13, odd over 14-26) and 34-bit (even over
  1-17, odd over 18-34) frames are decoded; a frame with bad parity or another length is
  refused and counted, never guessed at.

Settings: ``chip``, ``d0``, ``d1`` (line offsets), ``bias``, ``frame_gap``,
``min_bit_interval``, ``reopen_max``. Extra ``gpio`` (gpiod).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from drivers.serial_port import Backoff
from gateway.errors import HardwareError
from gateway.profiles import DeviceAddress, DriverSettings, ReaderDriverSpec, ReaderSecrets
from gateway.readers import CredentialRead, HealthCallback, Reader, utc_now

log = logging.getLogger(__name__)
QUEUE_SIZE = 16
RequestLines = Callable[..., Any]


class WiegandSettings(DriverSettings):
    """What a Wiegand profile may set (``[settings]``, overridden by a reader's options)."""

    chip: str = "/dev/gpiochip0"
    d0: int = Field(ge=0, le=1023)
    d1: int = Field(ge=0, le=1023)
    bias: Literal["pull-up", "disabled", "as-is"] = "pull-up"  # lines idle high
    frame_gap: float = Field(default=0.025, gt=0.002, le=1)
    min_bit_interval: float = Field(default=0.0002, gt=0, le=0.01)
    reopen_max: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _two_lines(self) -> WiegandSettings:
        if self.d0 == self.d1:
            raise ValueError("d0 and d1 must be two different GPIO lines")
        return self


class BadFrame(ValueError):
    """A Wiegand frame that is not a card (the reason is safe to log)."""


def decode_frame(bits: str) -> tuple[str, str]:
    """(value, format) of a Wiegand frame of "0"/"1"; BadFrame if it is none we know."""
    if len(bits) == 26:
        head, tail, name = bits[:13], bits[13:], "wiegand26"
    elif len(bits) == 34:
        head, tail, name = bits[:17], bits[17:], "wiegand34"
    else:
        raise BadFrame(f"{len(bits)}-bit frame: only 26- and 34-bit formats are read")
    if head.count("1") % 2 != 0 or tail.count("1") % 2 != 1:
        raise BadFrame(f"{len(bits)}-bit frame with wrong parity (a misread?)")
    return str(int(bits[1:-1], 2)), name


@dataclass
class FrameAssembler:
    """Falling edges (line, kernel time in ns) in; frames of bits out."""

    min_bit_interval_ns: int
    bits: list[str] = field(default_factory=list)
    last_ns: int | None = None
    noisy: bool = False

    def edge(self, bit: str, at_ns: int) -> None:
        """One falling edge: a ``bit`` pulse started at ``at_ns``."""
        if self.last_ns is not None and at_ns - self.last_ns < self.min_bit_interval_ns:
            self.noisy = True  # too fast for Wiegand: noise, or both lines at once
        self.last_ns = at_ns
        self.bits.append(bit)

    def finish(self) -> str:
        """The frame so far (the line went quiet); BadFrame if its timing was wrong."""
        bits, noisy = "".join(self.bits), self.noisy
        self.bits, self.last_ns, self.noisy = [], None, False
        if noisy:
            raise BadFrame(f"{len(bits)}-bit frame with pulses closer than the bit timing")
        return bits


class WiegandReader(Reader):
    """A Wiegand reader on two GPIO lines of one chip."""

    def __init__(
        self,
        reader_id: str,
        settings: WiegandSettings,
        on_health: HealthCallback | None = None,
        *,
        request_lines: RequestLines | None = None,
    ) -> None:
        super().__init__(reader_id, on_health)
        self.settings = settings
        self.dropped = 0  # frames refused (timing, parity, length)
        self._request_lines = request_lines
        self._closed = False
        self._assembler = FrameAssembler(round(settings.min_bit_interval * 1e9))
        self._queue: asyncio.Queue[CredentialRead] = asyncio.Queue(QUEUE_SIZE)
        self._end: asyncio.TimerHandle | None = None

    @property
    def where(self) -> str:
        """How an installer finds this reader."""
        s = self.settings
        return f"Wiegand reader on {s.chip} lines D0={s.d0} D1={s.d1}"

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Request the lines, then yield a read per valid frame; retry with back-off."""
        backoff = Backoff(0.2, self.settings.reopen_max)
        while not self._closed:
            try:
                request = await self._open()
            except (HardwareError, OSError) as exc:
                self.report(False, f"{self.where}: {exc}")
                await backoff.sleep()
                continue
            loop = asyncio.get_running_loop()
            loop.add_reader(request.fd, self._on_edges, request)
            self.report(True, self.where)
            try:
                while not self._closed:
                    read = await self._queue.get()
                    if self._closed:
                        break  # the wake-up that close() queued
                    yield read
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_reader(request.fd)
                request.release()

    async def _open(self) -> Any:
        from drivers.gpio import _check_chip, _import_gpiod

        gpiod = _import_gpiod()
        from gpiod.line import Bias, Direction, Edge

        request_lines = self._request_lines
        if request_lines is None:
            _check_chip(self.settings.chip)
            request_lines = gpiod.request_lines
        bias = {"pull-up": Bias.PULL_UP, "disabled": Bias.DISABLED, "as-is": Bias.AS_IS}
        line = gpiod.LineSettings(
            direction=Direction.INPUT,
            edge_detection=Edge.FALLING,  # a bit is a low pulse: its start is the edge
            bias=bias[self.settings.bias],
        )
        lines = (self.settings.d0, self.settings.d1)
        return await asyncio.to_thread(
            request_lines, self.settings.chip, consumer="accessgw-wiegand", config={lines: line}
        )

    def _on_edges(self, request: Any) -> None:
        """The loop says edge events wait: take them (never blocks)."""
        for event in request.read_edge_events():
            bit = "0" if event.line_offset == self.settings.d0 else "1"
            self._assembler.edge(bit, event.timestamp_ns)
        if self._end is not None:
            self._end.cancel()
        self._end = asyncio.get_running_loop().call_later(self.settings.frame_gap, self._frame)

    def _frame(self) -> None:
        """The lines went quiet: one frame is complete."""
        self._end = None
        try:
            bits = self._assembler.finish()
            value, name = decode_frame(bits)
        except BadFrame as exc:
            self.dropped += 1
            log.warning("reader %s: frame dropped: %s", self.id, exc)
            return
        read = CredentialRead(self.id, "nfc", value, utc_now(), format=name, bits=bits)
        try:
            self._queue.put_nowait(read)
        except asyncio.QueueFull:
            self.dropped += 1

    async def close(self) -> None:
        """Stop reading; the lines are released when the read loop ends."""
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):  # wake the read loop so it ends
            self._queue.put_nowait(CredentialRead(self.id, "code", "", utc_now()))


def create_reader(
    reader_id: str,
    address: DeviceAddress,
    settings: WiegandSettings,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
) -> Reader:
    """The driver factory named by ``driver = "wiegand"`` profiles."""
    return WiegandReader(reader_id, settings, on_health)


def _no_port(address: DeviceAddress, settings: WiegandSettings) -> list[tuple[str, str]]:
    return []  # the lines are in the settings (d0, d1)


READER_DRIVER = ReaderDriverSpec(WiegandSettings, create_reader, _no_port)
