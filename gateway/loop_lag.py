"""Event-loop lag: a timer that measures its own lateness.

Anything that blocks the event loop (a synchronous fsync, a big JSON parse, a long GIL
hold by a worker thread) delays every door's decision by as much. The probe asks to wake
up every ``interval`` and records how late it woke; the status shows the recent p50/p99
and the worst, so an installer or the central sees a blocking bug as a number, not as a
slow door. Cheap: one timer and a bounded ring of floats.

The timer is the kernel's (a ``timerfd`` the loop watches like any reader's port) where
there is one, Linux. An asyncio timer would measure asyncio as much as the load: its
selector rounds every timeout up to the next whole millisecond, so an idle loop reads
0.5-1 ms late on every sample, while a card's bytes on a port (what a door waits for)
wake the loop at once. The kernel's timer fires on time and becomes readable like the
port does, so its lateness is the loop's alone. Elsewhere, the asyncio timer.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import math
import os
import struct
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopLagProbe:
    """Wakes every ``interval`` seconds and keeps the last ``keep`` lateness samples (ms)."""

    def __init__(
        self,
        interval: float = 0.01,
        keep: int = 6000,
        clock: Callable[[], float] = time.perf_counter,
        kernel_timer: bool = True,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._kernel_timer = kernel_timer
        self.recent: deque[float] = deque(maxlen=keep)  # a minute at 10 ms
        self.worst_ms = 0.0  # since start
        self.samples = 0
        self.timer = "none"  # which timer measures: "kernel" or "asyncio" once running

    def record(self, lag_ms: float) -> None:
        """Take one lateness sample (negative ones, an early wake, count as 0)."""
        lag_ms = max(0.0, lag_ms)
        self.recent.append(lag_ms)
        self.worst_ms = max(self.worst_ms, lag_ms)
        self.samples += 1

    async def run(self) -> None:
        """Measure until cancelled."""
        timer = _KernelTimer.start(self.interval) if self._kernel_timer else None
        if timer is None:
            self.timer = "asyncio"
            while True:
                due = self._clock() + self.interval
                await asyncio.sleep(self.interval)
                self.record((self._clock() - due) * 1000)
        self.timer = "kernel"
        try:
            await timer.measure(self.record)
        finally:
            timer.close()

    def summary(self) -> dict[str, float | int]:
        """``p50_ms``, ``p99_ms``, ``max_ms`` of the recent samples, the worst since start,
        and how many samples there are (the status shows this)."""
        ordered = sorted(self.recent)
        return {
            "p50_ms": round(_nearest_rank(ordered, 50), 3),
            "p99_ms": round(_nearest_rank(ordered, 99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else 0.0,
            "worst_ms": round(self.worst_ms, 3),
            "samples": self.samples,
        }


def _nearest_rank(ordered: list[float], p: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


# --- the kernel's timer (Linux timerfd) ---------------------------------------------------

_CLOCK_MONOTONIC = 1  # time.monotonic() reads the same clock on Linux
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(seconds: float) -> _Timespec:
    whole = math.floor(seconds)
    return _Timespec(whole, round((seconds - whole) * 1e9))


class _KernelTimer:
    """A periodic ``timerfd`` on CLOCK_MONOTONIC, first due at ``first``, then every
    ``interval``: each time it is readable, the lateness of the oldest expiry not yet
    measured is ``time.monotonic()`` minus its due time (expiries missed while the loop was
    blocked count once, as the asyncio timer's would)."""

    def __init__(self, fd: int, first: float, interval: float) -> None:
        self.fd, self.first, self.interval = fd, first, interval
        self.expiries = 0  # measured so far

    @classmethod
    def start(cls, interval: float) -> _KernelTimer | None:
        """The timer, or None where the system has none (then the asyncio timer is used)."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            create, settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None  # not Linux (or no libc to ask): nothing to report, the fallback
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            log.warning("loop lag: no kernel timer (%s); asyncio's timer measures",
                        os.strerror(ctypes.get_errno()))  # fmt: skip
            return None
        first = time.monotonic() + interval
        spec = _Itimerspec(_timespec(interval), _timespec(first))
        if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            log.warning("loop lag: the kernel timer was refused (%s); asyncio's timer measures",
                        os.strerror(ctypes.get_errno()))  # fmt: skip
            os.close(fd)
            return None
        return cls(fd, first, interval)

    async def measure(self, record: Callable[[float], None]) -> None:
        """Record each lateness (ms) until cancelled."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            now = time.monotonic()
            try:
                (count,) = struct.unpack("=Q", os.read(self.fd, 8))
            except BlockingIOError:
                return  # woken for nothing (another reader of the loop took it): not a sample
            except OSError as exc:
                if not ended.done():
                    ended.set_exception(exc)  # the supervisor reports it and starts again
                return
            record((now - (self.first + self.expiries * self.interval)) * 1000)
            self.expiries += count

        loop.add_reader(self.fd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)
