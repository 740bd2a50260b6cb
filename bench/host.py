"""The CPU time the host took from this virtual machine while a bench ran (its *steal*).

This machine is a virtual one, and its host runs others beside it: in some hours it takes
a few percent of our cores' time, in others next to none (on 2026-12-03: 0.35% on average
over the 21 hours before 16:19 UTC, 3.7% in the half hour after). A core taken away in the
middle of a tap makes that tap late, whatever the gateway does, and a p99 of 1,000 taps is
their tenth-worst. :class:`Steal` counts it (``/proc/stat``, the kernel's own account, in
clock ticks) over the blocks of a phase, so a figure comes with what the host took meanwhile.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_STAT = Path("/proc/stat")
STEAL = 7  # /proc/stat's eighth column: user nice system idle iowait irq softirq steal


def ticks(cpus: set[int], stat: Path = PROC_STAT) -> tuple[int, int]:
    """(stolen, all) clock ticks of ``cpus`` so far; (0, 0) where the system does not say."""
    stolen = every = 0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        name, *fields = line.split()
        if name[:3] != "cpu" or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[: STEAL + 1]]
        stolen += values[STEAL] if len(values) > STEAL else 0
        every += sum(values)
    return stolen, every


class Steal:
    """``with steal:`` around each block of a phase; ``steal.share()`` of all of them."""

    def __init__(self, cpus: set[int] | None = None, stat: Path = PROC_STAT) -> None:
        self.cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        self._stat = stat
        self._at = (0, 0)
        self.stolen = self.every = 0

    def __enter__(self) -> Steal:
        self._at = ticks(self.cpus, self._stat)
        return self

    def __exit__(self, *exc: object) -> None:
        stolen, every = ticks(self.cpus, self._stat)
        self.stolen += stolen - self._at[0]
        self.every += every - self._at[1]

    def share(self) -> float:
        """The share of the cores' time the host took in the blocks so far (nan: none)."""
        return self.stolen / self.every if self.every else float("nan")
