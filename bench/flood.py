"""Nothing at the edge slows the doors: ``python -m bench.flood [--taps N] [--rounds R]``.

Tap-to-relay latency of the daemon (see :mod:`bench.daemon_load`) idle, with 50 clients
polling the web UI as fast as it answers, and with a flood of unsigned MQTT messages on
every topic the gateway listens to: ``N`` taps each, 1,000 in the full run as in the
tap-to-relay bench (the p99 of 300 taps, 20 s each until 2026-12-03, is their third-worst,
and read 3.0 and 5.9 ms idle in two runs one after the other). The floor is the idle figure
of the same run; target: each flood's p99 within 2 ms of it.

The three are alternated, ``N / R`` taps at a time in ``R`` rounds (the order turned each
round), not run one after the other. Every tap waits for an fsync, and this machine's disk
stalls in some minutes and not in others (:mod:`bench.disk`): on 2026-12-03 the MQTT flood's
phase, run last, read p99 34 ms against an idle 10.9 while a bare fsync on the same disk
read p99 28 ms during it. Alternated, each figure has the disk's good and bad minutes alike.
A load runs 1 s before its taps (connected, at full rate), and the next block waits 1 s after
it stops, so that what it left queued is not counted to the block after it.

The target is on each tap less the time its decision waited for the journal's commit (timed
around the daemon's own call, :meth:`bench.daemon_load.Rig.tap_parts`): that is the part a
load at the edge could slow (the CPU, the event loop, the interpreter lock). The commit is the
disk's: neither load writes to the daemon's disk, and on 2026-12-03 the commit's p99 read
44.5 ms idle against 5.7 with the web UI flooded, as the disk's bad minutes fell. The whole
tap, commit included, is printed beside it (rows without a target).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon_load import Load, loaded, rig  # noqa: E402
from bench.disk import FsyncProbe, summary  # noqa: E402
from bench.drain import cpu_s  # noqa: E402
from bench.figures import Row, add_cpus_argument, emit, percentile, pin_cpus  # noqa: E402
from bench.host import Steal  # noqa: E402

PHASES = ("idle", "web", "mqtt")
SETTLE_S = 1.0  # after a load stops, before the next block's taps


def schedule(taps: int, rounds: int) -> list[tuple[str, int]]:
    """(phase, taps) blocks: every phase's ``taps`` in ``rounds`` blocks, the phases one
    after the other in each round, their order turned by one each round."""
    blocks = []
    for k in range(rounds):
        n = taps // rounds + (1 if k < taps % rounds else 0)
        turned = PHASES[k % len(PHASES) :] + PHASES[: k % len(PHASES)]
        blocks += [(phase, n) for phase in turned if n]
    return blocks


def p(ms: list[float], q: float) -> float:
    return percentile(sorted(x for x in ms if x == x), q)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        async with rig(Path(tmp), args.members, web=True) as r:
            web = r.gateway._web
            assert web is not None and web.process is not None
            loads = {
                "idle": None,
                "web": Load(r.port, web_port=r.web_port, web_clients=50),
                "mqtt": Load(r.port, flood_rate=args.flood_rate),
            }
            tapped: dict[str, list[float]] = {phase: [] for phase in PHASES}
            commits: dict[str, list[float]] = {phase: [] for phase in PHASES}
            fsyncs: dict[str, list[float]] = {phase: [] for phase in PHASES}
            steals = {phase: Steal() for phase in PHASES}
            ui_cpu = ui_s = 0.0
            i = 0
            for phase, n in schedule(args.taps, args.rounds):
                load = loads[phase]
                async with loaded(load) if load else contextlib.nullcontext():
                    cpu0, t0 = cpu_s(web.process.pid), time.monotonic()
                    with FsyncProbe(Path(tmp)) as probe, steals[phase]:
                        for _ in range(n):
                            relay_ms, commit_ms = await r.tap_parts(i * 7919)
                            tapped[phase].append(relay_ms)
                            commits[phase].append(commit_ms)
                            i += 1
                    if phase == "web":
                        ui_cpu += cpu_s(web.process.pid) - cpu0
                        ui_s += time.monotonic() - t0
                fsyncs[phase] += probe.ms
                if load is not None:
                    await asyncio.sleep(SETTLE_S)
    return {**tapped, "commit": commits,
            "disk": {phase: summary(ms) for phase, ms in fsyncs.items()},
            "steal": {phase: steal.share() for phase, steal in steals.items()},
            "ui_cpu_share": ui_cpu / ui_s if ui_s else float("nan")}  # fmt: skip


def less_commit(m: dict[str, Any], phase: str) -> list[float]:
    """Each tap of ``phase`` less its journal commit (nan where either is unknown)."""
    return [tap - commit for tap, commit in zip(m[phase], m["commit"][phase], strict=True)]


def rows(m: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    idle, whole_idle = p(less_commit(m, "idle"), 99), p(m["idle"], 99)
    loads = {"web": "50 clients polling the web UI",
             "mqtt": f"{args.flood_rate:g}/s unsigned MQTT messages on every topic"}  # fmt: skip
    out = []
    for phase, load in loads.items():
        seen = f"{len(m[phase])} taps, alternated with the others in {args.rounds} rounds"
        if phase == "web":
            seen += f"; the UI's process took {m['ui_cpu_share']:.0%} of a core"
        commit, commit_idle = p(m["commit"][phase], 99), p(m["commit"]["idle"], 99)
        stolen, stolen_idle = m["steal"][phase], m["steal"]["idle"]
        out.append(Row(f"tap to relay p99 less the journal's commit, {load}",
                       p(less_commit(m, phase), 99), "ms", "excess <= 2", idle,
                       note=f"floor: idle, the same; {seen}; the commit's p99 {commit:.1f} "
                       f"ms (idle {commit_idle:.1f}); the host took {stolen:.1%} of the "
                       f"cores' time (idle {stolen_idle:.1%})"))  # fmt: skip
    for phase, load in loads.items():
        out.append(Row(f"tap to relay p99, commit included, {load}", p(m[phase], 99), "ms",
                       "", whole_idle, note=f"floor: idle, the same; {m['disk'][phase]}; "
                       f"idle: {m['disk']['idle']}"))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1000, help="taps in each phase")
    parser.add_argument("--rounds", type=int, default=10, help="blocks each phase is cut in")
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--flood-rate", type=float, default=2000)
    add_cpus_argument(parser)
    args = parser.parse_args(argv)
    print(f"cores: {pin_cpus(args.cpus)}")
    with contextlib.suppress(KeyboardInterrupt):
        m = asyncio.run(measure(args))
        for k, v in m.items():
            if not isinstance(v, list):
                continue
            less = less_commit(m, k)
            print(
                f"  {k}: {len(v)} taps, p50 {p(v, 50):.2f} ms, p99 {p(v, 99):.2f} ms; "
                f"less the commit: p50 {p(less, 50):.2f} ms, p99 {p(less, 99):.2f} ms; "
                f"the host took {m['steal'][k]:.1%} of the cores' time"
            )
        emit(rows(m, args), "the doors under a flood at the edge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
