"""Every benchmark, one table: ``python -m bench [--full] [--cpus N] [--only NAME ...]``.

The short form (the default) runs each bench at a reduced size in under five minutes; the
full form runs them at their real sizes (1,000,000 members) on all cores and then again
pinned to one core (``--cpus 1``, the nearest stand-in for a Raspberry-Pi-class box).
Each bench is a module of its own and stays runnable alone (``python -m bench.snapshot``);
this runner starts each in a process of its own and gathers the rows it prints.

Every figure stands beside its floor, measured in the same run, so a ratio means
something on a busy or a slow machine; the targets are those of issue 14.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.figures import Row, rows_from, table

ROOT = Path(__file__).resolve().parents[1]

# name -> (arguments of the short form, arguments of the full form)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "snapshot": (["--members", "100000"], ["--members", "1000000"]),
    "tap_to_relay": (
        ["--taps", "300", "--members", "20000", "--backlog", "30000"],
        ["--taps", "1000"],
    ),
    "loop_lag": (["--seconds", "10", "--members", "20000"], ["--seconds", "30"]),
    "flood": (["--taps", "150", "--rounds", "3"], ["--taps", "1000"]),
    "drain": (["--checkins", "20000"], ["--checkins", "100000"]),
    "decide_set": (["--members", "200000"], ["--members", "1000000"]),
    "web": (["why", "--members", "100000"], ["why", "--members", "1000000"]),
    "decision": (
        ["--members", "100000", "--decisions", "20000"],
        ["--members", "1000000", "--decisions", "50000"],
    ),
}


def machine() -> str:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as info:
        mem_kib = int(info.readline().split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


SETTLE_S = 2.0  # after the sync, before a bench starts


def settle() -> float:
    """Let the disk finish what the bench before wrote (and deleted): seconds the sync took.

    A full run writes a million-member store and deletes it again, a drain's journal, a
    broker's persistence; the kernel writes that back (and, on a file system mounted with
    ``discard``, trims what was deleted) for seconds after the bench has exited, and every
    fsync of the next bench waits behind it. Each bench starts on a disk that is done."""
    started = time.monotonic()
    os.sync()
    synced = time.monotonic() - started
    time.sleep(SETTLE_S)
    return synced


def run(name: str, args: list[str], cpus: int | None, timeout: float) -> list[Row]:
    """One bench in a process of its own; its rows (a failed bench is a row that says so)."""
    command = [sys.executable, "-m", f"bench.{name}", *args]
    if cpus is not None:
        command += ["--cpus", str(cpus)]
    synced = settle()
    print(f"\n$ {' '.join(command[1:])}  (the disk synced in {synced:.1f} s)", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return [Row(name, float("nan"), "", "", note=f"did not finish within {timeout:.0f} s")]
    out = [line for line in done.stdout.splitlines() if not line.startswith("BENCH-ROWS")]
    print("\n".join(out[-40:]), flush=True)
    rows = rows_from(done.stdout)
    if done.returncode != 0 or not rows:
        print(done.stderr[-3000:], file=sys.stderr, flush=True)
        rows.append(Row(name, float("nan"), "", "", note=f"failed (exit {done.returncode})"))
    print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="real sizes, at all cores and 1")
    parser.add_argument("--cpus", type=int, default=None, help="pin every bench to N cores")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per bench")
    parser.add_argument("--save", default=None, help="append each bench's rows to this file")
    parser.add_argument(
        "--readme",
        default=None,
        metavar="PATH",
        help="also write the tables into PATH (README.md) between its bench-tables markers",
    )
    args = parser.parse_args(argv)
    names = args.only or list(BENCHES)
    runs: list[int | None] = [args.cpus]
    if args.full and args.cpus is None:
        runs = [None, 1]
    timeout = args.timeout or (1800.0 if args.full else 240.0)
    started = datetime.now(UTC)
    rows: dict[int | None, list[Row]] = {cpus: [] for cpus in runs}
    for name in names:  # each bench at every core count before the next bench
        short, full = BENCHES[name]
        for cpus in runs:
            rows[cpus] += run(name, full if args.full else short, cpus, timeout)
            if args.save:
                with open(args.save, "a", encoding="utf-8") as out:
                    out.write(json.dumps({"cpus": cpus, "rows": [asdict(r) for r in rows[cpus]]}))
                    out.write("\n")
    tables = []
    for cpus in runs:
        cores = f"{cpus} core" if cpus == 1 else f"{cpus or os.cpu_count()} cores"
        title = f"\n### {'full' if args.full else 'short'} run, {cores}\n"
        tables.append(table(rows[cpus], title))
    head = f"From `python -m bench{' --full' if args.full else ''}`, {started:%Y-%m-%d %H:%M} UTC"
    head += f" to {datetime.now(UTC):%H:%M} UTC. Machine: {machine()}; load average at the "
    head += f"end {os.getloadavg()[0]:.2f}."
    print(f"\n## {head}")
    for text in tables:
        print(text)
    if args.readme:
        write_tables(Path(args.readme), "\n".join([head, *tables]))
        print(f"\n(the tables are written into {args.readme})")
    return 0


TABLES_START, TABLES_END = "<!-- bench-tables -->", "<!-- /bench-tables -->"


def write_tables(readme: Path, text: str) -> None:
    """Put ``text`` between the README's bench-tables markers, in place of what was there
    (the prose around them, the conditions and the why, stays as written)."""
    old = readme.read_text(encoding="utf-8")
    start, end = old.find(TABLES_START), old.find(TABLES_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {TABLES_START} ... {TABLES_END} block to write into")
    new = old[: start + len(TABLES_START)] + "\n" + text.strip() + "\n" + old[end:]
    readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
