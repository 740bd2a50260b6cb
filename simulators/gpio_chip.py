"""A GPIO chip as the kernel's character device shows it, for tests without gpio-sim.

It stands in for ``gpiod.request_lines`` (the gpiod boundary) and models what the kernel
does with a line request: physical line levels, the per-line ``active_low`` inversion,
the initial ``output_value`` of an output, pull-up/pull-down bias on an unconnected input,
and edge events (rising = the line became *active*, as the kernel reports them) that
arrive on a readable file descriptor. Levels here are physical, as a voltmeter would see
them on the header pin (True = high, 3.3 V), so a test can say "relay CH1's pin is LOW"
and the Waveshare relay HAT's rule (a relay is ON while its pin is LOW) can be checked.

It uses gpiod's own value types (``gpiod.line.Value``, ``gpiod.LineSettings``,
``gpiod.EdgeEvent``) and none of the driver's code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gpiod
from gpiod.edge_event import EdgeEvent
from gpiod.line import Bias, Direction, Edge, Value


@dataclass
class _Line:
    settings: Any = None  # the gpiod.LineSettings it was requested with
    high: bool = True  # the physical level on the pin
    driven: bool | None = None  # a level put on an input by the test (None: bias decides)


@dataclass
class FakeChip:
    """One GPIO chip with ``lines`` lines; :meth:`request_lines` is the gpiod boundary."""

    path: str = "/dev/gpiochip0"
    lines: int = 54
    requests: list[FakeLineRequest] = field(default_factory=list)
    # every level put on an output pin, from its request on: (offset, high), oldest first
    output_levels: list[tuple[int, bool]] = field(default_factory=list)
    _lines: dict[int, _Line] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request_lines(
        self,
        path: str,
        config: dict[Any, Any],
        consumer: str | None = None,
        **_: Any,
    ) -> FakeLineRequest:
        """What ``gpiod.request_lines`` does: claim lines, set them up, return the request."""
        if path != self.path:
            raise FileNotFoundError(2, "No such file or directory", path)
        request = FakeLineRequest(self)
        with self._lock:
            for key, settings in config.items():
                offsets = key if isinstance(key, Iterable) else (key,)
                for offset in offsets:
                    if not 0 <= offset < self.lines:
                        raise ValueError(f"line {offset} is not on {self.path}")
                    if offset in self._claimed():
                        raise OSError(16, "Device or resource busy", f"line {offset}")
                    line = self._lines.setdefault(offset, _Line())
                    line.settings = settings or gpiod.LineSettings()
                    self._settle(offset, line)
                    request.offsets.append(offset)
        self.requests.append(request)
        return request

    def _claimed(self) -> set[int]:
        return {o for r in self.requests if not r.released for o in r.offsets}

    def _settle(self, offset: int, line: _Line) -> None:
        """The level a freshly set-up line takes (must hold the chip lock)."""
        s = line.settings
        if s.direction == Direction.OUTPUT:
            line.high = (s.output_value == Value.ACTIVE) != s.active_low
            self.output_levels.append((offset, line.high))
        elif line.driven is not None:
            line.high = line.driven
        elif s.bias == Bias.PULL_DOWN:
            line.high = False
        else:
            line.high = True  # pull-up (and, on a Pi, the default of the header inputs)

    # --- what a test sees and does ---------------------------------------------------

    def pin_high(self, offset: int) -> bool:
        """The physical level on line ``offset`` (True = high)."""
        with self._lock:
            return self._lines.setdefault(offset, _Line()).high

    def drive(self, offset: int, high: bool, at_ns: int | None = None) -> None:
        """Put a physical level on an input (a contact closing to GND drives it low);
        ``at_ns``: the kernel timestamp of the edge (default: now, CLOCK_MONOTONIC)."""
        with self._lock:
            line = self._lines.setdefault(offset, _Line())
            line.driven = high
            if line.settings is not None and line.settings.direction == Direction.OUTPUT:
                raise ValueError(f"line {offset} is an output")
            was, line.high = line.high, high
            settings = line.settings
        if settings is None or was == high:
            return
        active = high != settings.active_low
        if settings.edge_detection == Edge.NONE:
            return
        if settings.edge_detection == Edge.RISING and not active:
            return
        if settings.edge_detection == Edge.FALLING and active:
            return
        for request in self.requests:
            if offset in request.offsets and not request.released:
                request.push(offset, active, at_ns)


class FakeLineRequest:
    """A ``gpiod.LineRequest``: values in logical terms, edges on a readable fd."""

    def __init__(self, chip: FakeChip) -> None:
        self.chip = chip
        self.offsets: list[int] = []
        self.released = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._events: list[EdgeEvent] = []
        self._seqno = 0

    @property
    def fd(self) -> int:
        """Readable when edge events wait."""
        return self._read_fd

    def _line(self, offset: int) -> _Line:
        if self.released:
            raise RuntimeError("the line request was released")
        if offset not in self.offsets:
            raise ValueError(f"line {offset} is not in this request")
        return self.chip._lines[offset]

    def get_value(self, offset: int) -> Value:
        """The logical value: active when the physical level differs from active_low."""
        with self.chip._lock:
            line = self._line(offset)
            return Value.ACTIVE if line.high != line.settings.active_low else Value.INACTIVE

    def set_value(self, offset: int, value: Value) -> None:
        """Drive an output to a logical value (the kernel applies active_low)."""
        with self.chip._lock:
            line = self._line(offset)
            if line.settings.direction != Direction.OUTPUT:
                raise PermissionError(1, "Operation not permitted: not an output")
            line.high = (value == Value.ACTIVE) != line.settings.active_low
            self.chip.output_levels.append((offset, line.high))

    def push(self, offset: int, active: bool, at_ns: int | None = None) -> None:
        """Queue an edge event (the chip calls this)."""
        self._seqno += 1
        kind = EdgeEvent.Type.RISING_EDGE if active else EdgeEvent.Type.FALLING_EDGE
        at = time.monotonic_ns() if at_ns is None else at_ns
        event = EdgeEvent(kind.value, at, offset, self._seqno, self._seqno)
        self._events.append(event)
        os.write(self._write_fd, b"e")

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        """The waiting events (blocks in the real library when there are none)."""
        try:
            os.read(self._read_fd, 4096)
        except BlockingIOError:
            pass
        events, self._events = self._events, []
        return events

    def release(self) -> None:
        """Give the lines back; an output keeps its last level (as the kernel leaves it)."""
        if not self.released:
            self.released = True
            os.close(self._read_fd)
            os.close(self._write_fd)
