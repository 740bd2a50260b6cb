"""What every benchmark shares: one percentile rule, one latency line, the ``--cpus`` pin,
and the rows of the table ``python -m bench`` prints (figure, value, floor, ratio, target).

A figure means something on any machine only beside its floor: the least the same work
can cost, measured by the bench itself in the same run. Each bench prints its rows as a
table and, for the runner, as one ``BENCH-ROWS`` JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass

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


def pin_cpus(cpus: int | None) -> str:
    """Pin this process (and so every child started after) to ``cpus`` cores; the set used.

    The affinity mask is inherited across fork and exec, so brokers, simulators, the
    snapshot builder and worker processes all run on the same cores."""
    if cpus is not None:
        available = sorted(os.sched_getaffinity(0))
        if not 1 <= cpus <= len(available):
            raise SystemExit(f"--cpus {cpus}: this machine lets us use {len(available)} cores")
        os.sched_setaffinity(0, available[:cpus])
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))


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
