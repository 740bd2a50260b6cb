"""Is the clock known good? Phone passes are timed only when it is (PASSES.md, Clock).

A Raspberry Pi has no battery clock. The clock is trusted when NTP says it is synced
(systemd-timesyncd's flag file, or chrony's leap status), when the config says an RTC is
fitted (``clock = "trusted"``), or after a signed ``time`` envelope from the central
system set it (``ClockTrust.confirm``), as long as that envelope was fresh.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


def ntp_synchronised(flag: Path = TIMESYNCD_FLAG) -> bool:
    """True when systemd-timesyncd or chrony reports the clock synchronised."""
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


@dataclass
class ClockTrust:
    """Whether passes may be timed: by NTP, by configuration, or by the central's time."""

    mode: str = "ntp"  # ntp | central | trusted
    confirmed_by_central: bool = False

    def synced(self) -> bool:
        """The current verdict."""
        if self.mode == "trusted" or self.confirmed_by_central:
            return True
        return self.mode == "ntp" and ntp_synchronised()

    def confirm(self, central_now: datetime, local_now: datetime, window_s: int) -> bool:
        """A signed ``time`` envelope arrived: trust the clock if it agrees within the window.

        Returns False when the local clock is off by more than ``window_s``: the caller may
        step the system clock (where permitted) and confirm again.
        """
        agrees = abs((central_now - local_now).total_seconds()) <= window_s
        self.confirmed_by_central = self.confirmed_by_central or agrees
        return agrees
