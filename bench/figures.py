"""What every benchmark shares: one percentile rule, one latency line, the ``--cpus`` pin,
and the rows of the table ``python -m bench`` prints (figure, value, floor, ratio, target).

A figure means something on any machine only beside its floor: the least the same work
can cost, measured by the bench itself in the same run. Each bench prints its rows as a
table and, for the runner, as one ``BENCH-ROWS`` JSON line.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROWS_TAG = "BENCH-ROWS "


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``ordered``, which is sorted; nan when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency_line(label: str, ms: list[float], *, unit: str, target_p99_ms: float | None) -> str:
    """``label: N unit, p50 .. ms, p99 .. ms, max .. ms`` and the verdict against the target."""
    ordered = sorted(ms)
    p99 = percentile(ordered, 99)
    line = (
        f"{label}: {len(ordered):,} {unit}, p50 {percentile(ordered, 50):.3f} ms, "
        f"p99 {p99:.3f} ms, max {ordered[-1] if ordered else float('nan'):.3f} ms"
    )
    if target_p99_ms is None:
        return line
    verdict = "ok" if p99 <= target_p99_ms else "OVER TARGET"
    return f"{line} (target p99 <= {target_p99_ms} ms: {verdict})"


def add_cpus_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpus N``: run on N cores (this process and every child it starts)."""
    parser.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="pin to the first N cores (os.sched_setaffinity; children inherit it)",
    )


# The kernel's unbound workers (a workqueue's kworkers) run on the cores of this mask. Among
# them is the one that hands a serial port's bytes to the reading process (the tty layer's
# flip buffer): a card's answer crosses it on the way to the doors' loop.
UNBOUND_WORKERS = Path("/sys/devices/virtual/workqueue/cpumask")


def pin_cpus(cpus: int | None, workers: Path = UNBOUND_WORKERS) -> str:
    """Pin this process (and so every child started after) to ``cpus`` cores; the set used,
    and where the kernel's unbound workers run.

    The affinity mask is inherited across fork and exec, so brokers, simulators, the
    snapshot builder and worker processes all run on the same cores. The kernel's unbound
    workers are moved onto them too where the system lets us (root), and back when the
    process exits: on a box of one core they share it with the gateway. Left on the other
    cores, a card's bytes crossed to another core and back, faster or slower with what the
    machine's other cores were doing. On 2026-12-03 at one core, the hop from the reader
    simulator's answer to the doors' loop read p99 0.75 to 4.33 ms with the web UI flooded
    and 0.34 to 1.94 ms idle (five runs of 400 taps each) with them on every core; 0.21 and
    0.26 ms flooded, 0.25 and 0.24 ms idle (two runs) with them on the bench's core."""
    if cpus is None:
        return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= cpus <= len(available):
        raise SystemExit(f"--cpus {cpus}: this machine lets us use {len(available)} cores")
    chosen = available[:cpus]
    os.sched_setaffinity(0, chosen)
    cores = ",".join(str(c) for c in chosen)
    return f"{cores} (the kernel's unbound workers: {_pin_workers(chosen, workers)})"


def _pin_workers(cores: list[int], workers: Path) -> str:
    """Move the kernel's unbound workers onto ``cores`` until this process exits; what was
    done, for the bench's first line."""
    mask = f"{sum(1 << c for c in cores):x}"
    try:
        before = workers.read_text().strip()
    except OSError as exc:
        return f"where the kernel puts them ({exc.strerror or exc})"
    if before.replace(",", "").lstrip("0") == mask:
        return "there already"
    try:
        workers.write_text(mask)
    except OSError as exc:
        return f"left on mask {before} ({exc.strerror or exc})"
    atexit.register(_restore_workers, workers, before)
    return f"moved there from mask {before} until the bench ends"


def _restore_workers(workers: Path, before: str) -> None:
    try:
        workers.write_text(before)
    except OSError as exc:
        print(f"the kernel's unbound workers were not given their cores back ({exc}): "
              f"write {before} to {workers}", file=sys.stderr)  # fmt: skip


@dataclass
class Row:
    """One line of the table. ``target`` is a rule on ``value`` (``value <= 15``), on the
    ratio value/floor (``ratio <= 1.5``, ``ratio >= 0.9``) or on value - floor (``excess <=
    2``); ``unit`` is the value's and the floor's."""

    figure: str
    value: float
    unit: str
    target: str
    floor: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0 or math.isnan(self.floor):
            return None
        return self.value / self.floor

    @property
    def excess(self) -> float | None:
        """How much the value is above its floor."""
        return None if self.floor is None else self.value - self.floor

    @property
    def holds(self) -> bool | None:
        """Whether the target holds (None when there is no target)."""
        if not self.target:
            return None
        subject, op, bound = self.target.split()
        x = {"ratio": self.ratio, "value": self.value, "excess": self.excess}[subject]
        if x is None or math.isnan(x):
            return False
        return x <= float(bound) if op == "<=" else x >= float(bound)


def _num(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def table(rows: list[Row], title: str = "") -> str:
    """The rows as a Markdown table."""
    lines = [title] if title else []
    lines += [
        "| figure | value | floor (same run) | ratio | target | holds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        target = r.target.replace("value ", "")
        target += f" {r.unit}" if "value" in r.target or "excess" in r.target else ""
        target = (
            target.replace("excess", "floor +")
            .replace("+ <=", "+")
            .replace("floor + ", "<= floor + ")
        )
        holds = {True: "yes", False: "**no**", None: "-"}[r.holds]
        name = r.figure + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {name} | {_num(r.value)} {r.unit} | {_num(r.floor)} | {ratio} | {target} | "
            f"{holds} |"
        )
    return "\n".join(lines)


def emit(rows: list[Row], title: str = "") -> None:
    """Print the rows as a table, and as one JSON line for ``python -m bench``."""
    print(table(rows, title))
    print(ROWS_TAG + json.dumps([asdict(r) for r in rows]))
    sys.stdout.flush()


def rows_from(output: str) -> list[Row]:
    """The rows a bench printed (see :func:`emit`)."""
    rows: list[Row] = []
    for line in output.splitlines():
        if line.startswith(ROWS_TAG):
            rows += [Row(**r) for r in json.loads(line[len(ROWS_TAG) :])]
    return rows
