"""Nothing at the edge slows the doors: ``python -m bench.flood [--taps N]``.

Tap-to-relay latency of the daemon (see :mod:`bench.daemon_load`) idle, then with 50
clients polling the web UI as fast as it answers, then with a flood of unsigned MQTT
messages on every topic the gateway listens to: ``N`` taps each, 1,000 in the full run as
in the tap-to-relay bench (the p99 of 300 taps, 20 s each until 2026-12-03, is their
third-worst, and read 3.0 and 5.9 ms idle in two runs one after the other). The floor is
the idle figure of the same run; target: each flood's p99 within 2 ms of it.
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

from bench.daemon_load import Load, Rig, loaded, rig  # noqa: E402
from bench.disk import FsyncProbe  # noqa: E402
from bench.drain import cpu_s  # noqa: E402
from bench.figures import Row, add_cpus_argument, emit, percentile, pin_cpus  # noqa: E402


async def taps(r: Rig, n: int, disk: dict[str, str], phase: str, where: Path) -> list[float]:
    with FsyncProbe(where) as probe:
        tapped = [await r.tap(i * 7919) for i in range(n)]
    disk[phase] = probe.summary()
    return tapped


def p(ms: list[float], q: float) -> float:
    return percentile(sorted(x for x in ms if x == x), q)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        async with rig(Path(tmp), args.members, web=True) as r:
            disk: dict[str, str] = {}
            out: dict[str, Any] = {
                "idle": await taps(r, args.taps, disk, "idle", Path(tmp)),
                "disk": disk,
            }
            web = r.gateway._web
            assert web is not None and web.process is not None
            async with loaded(Load(r.port, web_port=r.web_port, web_clients=50)):
                cpu0, t0 = cpu_s(web.process.pid), time.monotonic()
                out["web"] = await taps(r, args.taps, disk, "web", Path(tmp))
                out["ui_cpu_share"] = (cpu_s(web.process.pid) - cpu0) / (time.monotonic() - t0)
            async with loaded(Load(r.port, flood_rate=args.flood_rate)):
                out["mqtt"] = await taps(r, args.taps, disk, "mqtt", Path(tmp))
    return out


def rows(m: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    idle = p(m["idle"], 99)
    return [
        Row("tap to relay p99, 50 clients polling the web UI", p(m["web"], 99), "ms",
            "excess <= 2", idle, note=f"floor: idle; {len(m['web'])} taps; the UI's process "
            f"took {m['ui_cpu_share']:.0%} of a core; {m['disk']['web']}; idle: "
            f"{m['disk']['idle']}"),
        Row(f"tap to relay p99, {args.flood_rate:g}/s unsigned MQTT messages on every topic",
            p(m["mqtt"], 99), "ms", "excess <= 2", idle,
            note=f"floor: idle; {len(m['mqtt'])} taps; {m['disk']['mqtt']}"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1000, help="taps in each phase")
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
            print(f"  {k}: {len(v)} taps, p50 {p(v, 50):.2f} ms, p99 {p(v, 99):.2f} ms")
        emit(rows(m, args), "the doors under a flood at the edge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
