"""Is the clock known good? Phone passes are timed only when it is (PASSES.md, Clock, and
PROTOCOL.md, Clarifications: Time).

A Raspberry Pi has no battery clock. The clock is trusted:

- ``clock = "ntp"``: while NTP says it is synced (systemd-timesyncd's flag file, or chrony's
  leap status). ``chronyc`` is a subprocess: it runs in a worker thread every
  :data:`NTP_EVERY_S`, never on the event loop; :meth:`ClockTrust.synced` reads the last
  answer. A ``time`` from the central system never overrides a lost NTP sync.
- ``clock = "trusted"``: always (the config says an RTC is fitted).
- ``clock = "central"``: while the central system's signed ``time`` envelopes agree with the
  gateway's clock within ``pass_window_s``. A ``time`` that disagrees withdraws the trust at
  once; so does no ``time`` for :data:`LAPSE_S` (3 x 60 s), and so does a step of the wall
  clock against the monotonic clock (someone or something set the clock): the central's
  word was about the clock as it was then.

Every change of the verdict goes to ``on_change(synced, reason)``: the gateway sets its
state (passes refused), records ``clock_unsynced`` and publishes its status.

:func:`wall_clock` is the gateway's wall clock: the system's, except in tests that run days
in minutes (test-only, see there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
LAPSE_S = 3 * 60.0  # central trust lapses after three missed `time` envelopes
STEP_TOLERANCE_S = 2.0  # wall clock moved against the monotonic one by more: a step
NTP_EVERY_S = 10.0
WATCH_EVERY_S = 0.25

ChangeSink = Callable[[bool, str], None]

# TEST ONLY, never reachable from the config file: with both set in the daemon's
# environment, its wall clock runs SPEED times as fast as the system's from the moment it
# starts (tests/chaos/test_offline.py runs 72 h offline in minutes). Timers (unlock,
# pass_timeout, back-off) stay on the monotonic clock; use it with clock = "trusted".
TEST_HOOKS_ENV = "ACCESSGW_TEST_HOOKS"
TEST_CLOCK_SPEED_ENV = "ACCESSGW_TEST_CLOCK_SPEED"


def system_now() -> datetime:
    """The system's clock (UTC)."""
    return datetime.now(UTC)


def wall_clock(environ: Mapping[str, str] = os.environ) -> Callable[[], datetime]:
    """The gateway's wall clock: :func:`system_now`, or the test-only fast clock when
    ``ACCESSGW_TEST_HOOKS=1`` and ``ACCESSGW_TEST_CLOCK_SPEED`` (a factor >= 1) are set."""
    if environ.get(TEST_HOOKS_ENV) != "1" or TEST_CLOCK_SPEED_ENV not in environ:
        return system_now
    speed = float(environ[TEST_CLOCK_SPEED_ENV])
    if not 1.0 <= speed <= 1e6:
        raise ValueError(f"{TEST_CLOCK_SPEED_ENV} must be between 1 and 1e6, not {speed}")
    log.warning("TEST CLOCK: the wall clock runs %g times as fast (never in production)", speed)
    began, began_at = time.monotonic(), system_now()

    def fast_now() -> datetime:
        return began_at + timedelta(seconds=(time.monotonic() - began) * speed)

    return fast_now


def ntp_synchronised(flag: Path = TIMESYNCD_FLAG) -> bool:
    """True when systemd-timesyncd or chrony reports the clock synchronised (blocking: call
    it in a worker thread)."""
    if flag.exists():
        return True
    chronyc = shutil.which("chronyc")
    if chronyc is None:
        return False
    try:
        out = subprocess.run(
            [chronyc, "-n", "tracking"], capture_output=True, text=True, timeout=2
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(
        line.startswith("Leap status") and line.rstrip().endswith("Normal")
        for line in out.splitlines()
    )


class ClockTrust:
    """Whether passes may be timed: by NTP, by configuration, or by the central's time."""

    def __init__(
        self,
        mode: str = "ntp",
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        ntp_check: Callable[[], bool] = ntp_synchronised,
        lapse_s: float = LAPSE_S,
    ) -> None:
        self.mode = mode  # ntp | central | trusted
        self.wall = wall
        self.monotonic = monotonic
        self.ntp_check = ntp_check
        self.lapse_s = lapse_s
        self.on_change: ChangeSink | None = None
        self.reason = "not yet confirmed"
        self._ntp = False
        self._central_until: float | None = None  # monotonic instant the trust lapses
        self._offset = 0.0  # wall - monotonic when the central's time last agreed
        self._last: bool | None = None

    @property
    def confirmed_by_central(self) -> bool:
        """Whether the central system's time currently vouches for the clock."""
        return self._central_until is not None

    def synced(self) -> bool:
        """The current verdict (no I/O: cheap enough for every decision)."""
        if self.mode == "trusted":
            return True
        if self.mode == "ntp":
            return self._ntp
        until = self._central_until
        if until is None:
            return False
        if self.monotonic() > until:
            self._withdraw(f"no time from the central system for {self.lapse_s:.0f} s")
            return False
        stepped = (self.wall() - self.monotonic()) - self._offset
        if abs(stepped) > STEP_TOLERANCE_S:
            self._withdraw(f"the wall clock was stepped by {stepped:+.0f} s")
            return False
        return True

    def confirm(self, central_now: datetime, window_s: int) -> bool:
        """A signed, newer ``time`` envelope arrived: whether it agrees with our clock within
        ``window_s``. With ``clock = "central"`` agreeing gives (or renews) the trust and
        disagreeing withdraws it at once; other modes take no trust from it."""
        local = self.wall()
        off_by = central_now.timestamp() - local
        agrees = abs(off_by) <= window_s
        if self.mode == "central":
            if agrees:
                self._central_until = self.monotonic() + self.lapse_s
                self._offset = local - self.monotonic()
            else:
                self._withdraw(f"the central system's time is {off_by:+.0f} s from ours")
        self.check()
        return agrees

    def _withdraw(self, reason: str) -> None:
        if self._central_until is not None:
            log.warning("clock: trust withdrawn: %s (phone passes refused)", reason)
        self._central_until = None
        self.reason = reason

    def check(self) -> bool:
        """Evaluate the verdict; tell ``on_change`` when it changed. The verdict."""
        now = self.synced()
        if now != self._last:
            self._last = now
            if self.on_change is not None:
                self.on_change(now, "synced" if now else self.reason)
        return now

    async def refresh(self) -> None:
        """Ask NTP again, in a worker thread (``chronyc`` is a subprocess)."""
        if self.mode == "ntp":
            self._ntp = await asyncio.to_thread(self.ntp_check)
            self.reason = "synced" if self._ntp else "NTP does not report the clock synchronised"

    async def watch(self) -> None:
        """Until cancelled: notice lapses and steps within a fraction of a second, and ask NTP
        every :data:`NTP_EVERY_S`."""
        next_ntp = 0.0
        while True:
            if self.mode == "ntp" and self.monotonic() >= next_ntp:
                await self.refresh()
                next_ntp = self.monotonic() + NTP_EVERY_S
            self.check()
            await asyncio.sleep(WATCH_EVERY_S)


def load_newest_time(path: Path) -> datetime | None:
    """The newest ``time`` ``issued_at`` used before (kept across restarts), or None."""
    try:
        at = datetime.fromisoformat(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return at if at.utcoffset() is not None else None


def store_newest_time(path: Path, at: datetime) -> None:
    """Keep ``at`` durably (blocking: written and fsynced, then renamed into place)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # state stays private
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(at.isoformat())
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
