"""Benchmark the store and the decision at 1,000,000 members (run by hand, not in CI).

    .venv/bin/python bench/decision.py [--members 1000000] [--decisions 100000] [--dir DIR]

Prints: time to load the set into the store, start-up time of a fresh process opening the
existing store and its RSS after start-up, and p50/p99/max decision latency over random
decisions with known and unknown credentials. Targets (2-core machine): start-up <= 3 s,
RSS <= 300 MB, decision p99 <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.decision import DoorContext, Presented, Request, decide  # noqa: E402
from gateway.entitlements import parse_record, parse_rules  # noqa: E402
from gateway.state import LocalState  # noqa: E402
from gateway.store import EntitlementStore  # noqa: E402

KEY = b"bench-key-0123456789abcdef012345"
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
RULES = {
    "site": "oslo-sentrum", "timezone": "Europe/Oslo",
    "schedules": {"open": [{"days": "mon-sun", "from": "05:00", "to": "23:00"}]},
    "opening_schedule": "open", "zones": {"gym": {"capacity": 10_000, "anti_passback": "hard"}},
    "unpaid": "warn", "reentry_free_minutes": 240,
}  # fmt: skip


def member(i: int) -> dict:
    """Member i: 3 credentials (two cards, one code), 2 contracts."""
    return {
        "member": f"M{i}", "display": f"Member {i}",
        "credentials": [{"kind": "nfc", "uid": f"04{i:012X}"}, {"kind": "nfc", "uid": f"{i:08X}"},
                        {"kind": "code", "value": f"FLX-{i:09d}"}],
        "contracts": [{"id": f"C{i}a", "type": "recurring", "start": "2026-01-01", "end": None,
                       "zones": ["gym"], "freezes": []},
                      {"id": f"C{i}b", "type": "clipcard", "start": "2026-01-01",
                       "end": "2027-12-31", "credits": 10}],
        "unpaid": i % 50 == 0,
    }  # fmt: skip


def startup_probe(path: str) -> None:
    """Child mode: open the existing store, report seconds and RSS as JSON."""
    started = time.perf_counter()
    store = EntitlementStore.open(path, KEY)
    store.find("nfc", "04000000000001")
    seconds = time.perf_counter() - started
    rss = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    print(json.dumps({"seconds": seconds, "rss_kib": rss, "records": store.record_count}))


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile of sorted ``values``."""
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        startup_probe(args.probe)
        return
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="accessgw-bench-"))
    path = workdir / "store.sqlite"
    rules = parse_rules(RULES)

    started = time.perf_counter()
    records = (parse_record(member(i)) for i in range(args.members))
    store = EntitlementStore.open(path, KEY)
    store.replace(1, rules, records, {}, AT)
    load_s = time.perf_counter() - started
    store.close()
    print(f"members: {args.members:,} (3 credentials, 2 contracts each)")
    print(f"load (validate + hash + write + index): {load_s:.1f} s")

    probe = subprocess.run(
        [sys.executable, __file__, "--probe", str(path)], capture_output=True, text=True, check=True
    )
    child = json.loads(probe.stdout)
    print(f"start-up from the existing store: {child['seconds'] * 1000:.0f} ms (target <= 3000)")
    print(f"RSS after start-up: {child['rss_kib'] / 1024:.0f} MiB (target <= 300)")

    store = EntitlementStore.open(path, KEY)
    state = LocalState()
    rng = random.Random(7)
    door = DoorContext("main-in", "gym", "in")
    latencies = []
    outcomes: dict[str, int] = {}
    for _ in range(args.decisions):
        i = rng.randrange(args.members)
        roll = rng.random()
        if roll < 0.2:
            presented = Presented("nfc", f"04{rng.randrange(2**40):010X}FF")  # unknown
        elif roll < 0.6:
            presented = Presented("nfc", f"04{i:012X}")
        elif roll < 0.8:
            presented = Presented("nfc", f"{i:08X}")
        else:
            presented = Presented("code", f"FLX-{i:09d}")
        t0 = time.perf_counter_ns()
        decision = decide(Request(presented, door, AT), store, state)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        outcomes[decision.reason] = outcomes.get(decision.reason, 0) + 1
    latencies.sort()
    print(f"decisions: {args.decisions:,} {dict(sorted(outcomes.items()))}")
    print(
        f"decision latency: p50 {percentile(latencies, 50):.3f} ms, "
        f"p99 {percentile(latencies, 99):.3f} ms (target <= 1), max {latencies[-1]:.3f} ms"
    )
    store.close()


if __name__ == "__main__":
    main()
