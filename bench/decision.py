"""Benchmark the store and the decision at 1,000,000 members (run by hand, not in CI).

    .venv/bin/python bench/decision.py [--members 1000000] [--decisions 100000] [--dir DIR]

Prints: time to load the set into the store (and the loading process's peak RSS), the
store's size on disk, start-up time of a fresh process opening the existing store and its
RSS after start-up, p50/p99/max of find()+member() and of ``gateway.decision.decide`` over
random decisions with known and unknown credentials, and the time of a 1,000-record delta.
Targets (2-core machine): start-up <= 3 s, RSS <= 300 MB, decision p99 <= 1 ms.
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Row, add_cpus_argument, emit, latency_line, percentile, pin_cpus  # noqa: E402
from gateway.decision import DoorContext, Presented, Request, decide  # noqa: E402
from gateway.entitlements import parse_record, parse_rules  # noqa: E402
from gateway.state import MAX_PEER_STEPS, LocalState  # noqa: E402
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


def proc_status(field: str) -> int:
    """A figure in KiB from /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def startup_probe(path: str) -> None:
    """Child mode: open the existing store, report seconds and RSS as JSON."""
    started = time.perf_counter()
    if not path:  # the floor: the same process with no store to open
        print(json.dumps({"seconds": 0.0, "rss_kib": proc_status("VmRSS"), "records": 0}))
        return
    store = EntitlementStore.open(path, KEY)
    store.find("nfc", "04000000000001")
    seconds = time.perf_counter() - started
    rss = proc_status("VmRSS")
    print(json.dumps({"seconds": seconds, "rss_kib": rss, "records": store.record_count}))


def probe_startup(path: Path | None) -> dict:
    """Start-up seconds and RSS of a fresh process opening the store (with no path: only
    importing what it imports, the floor)."""
    where = str(path) if path else ""
    probe = subprocess.run(
        [sys.executable, __file__, "--probe", where], capture_output=True, text=True, check=True
    )
    return dict(json.loads(probe.stdout))


def presented(rng: random.Random, members: int) -> Presented:
    """A random credential: 20% unknown, else one of a random member's three."""
    i = rng.randrange(members)
    roll = rng.random()
    if roll < 0.2:
        return Presented("nfc", f"04{rng.randrange(2**40):010X}FF")
    if roll < 0.6:
        return Presented("nfc", f"04{i:012X}")
    if roll < 0.8:
        return Presented("nfc", f"{i:08X}")
    return Presented("code", f"FLX-{i:09d}")


def lookups(store: EntitlementStore, members: int, count: int) -> list[float]:
    """Latencies (ms) of find() followed by member() for the record found."""
    rng = random.Random(3)
    out = []
    for _ in range(count):
        p = presented(rng, members)
        t0 = time.perf_counter_ns()
        record = store.find(p.kind, p.value)
        if record is not None:
            store.member(record.id)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def bare_reads(store: EntitlementStore, members: int, count: int) -> list[float]:
    """The floor of a decision (ms): the credential's HMAC, one row read by its rowid and
    the record decoded, with nothing else (a bare SQLite connection to the same file)."""
    import sqlite3

    from gateway.record_codec import RecordCodec, decode

    codec = RecordCodec(KEY)
    db = sqlite3.connect(store._path)  # the same file, read-only use
    rowids = [r for (r,) in db.execute("SELECT rowid FROM records LIMIT 10000")]
    rng = random.Random(5)
    out = []
    for _ in range(count):
        rowid = rowids[rng.randrange(len(rowids))]
        t0 = time.perf_counter_ns()
        codec.hash(f"nfc:04{rng.randrange(members):012X}")
        kind, body = db.execute(
            "SELECT kind, body FROM records WHERE rowid = ?", (rowid,)
        ).fetchone()
        decode(kind, body)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    db.close()
    return out


def decisions(
    store: EntitlementStore, members: int, count: int, state: LocalState | None = None
) -> tuple[list[float], dict]:
    """Latencies (ms) of ``decide`` and the count of each reason."""
    state = state or LocalState()
    rng = random.Random(7)
    door = DoorContext("main-in", "gym", "in")
    latencies = []
    outcomes: dict[str, int] = {}
    for _ in range(count):
        request = Request(presented(rng, members), door, AT)
        t0 = time.perf_counter_ns()
        decision = decide(request, store, state)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        outcomes[decision.reason] = outcomes.get(decision.reason, 0) + 1
    return latencies, dict(sorted(outcomes.items()))


def peers_pending() -> LocalState:
    """A state holding the most a peer's check-ins can pile up without its occupancy
    message (MAX_PEER_STEPS of them, at the capacity zone's door)."""
    state = LocalState()
    for seq in range(1, MAX_PEER_STEPS + 1):
        state.apply_checkin(
            {"gw": "door-2", "seq": seq, "zone": "gym", "direction": "in" if seq % 2 else "out",
             "decision": "granted", "passed": True, "at": "2026-11-25T09:00:00+00:00",
             "member": f"P{seq}"},
            own=False, count_inside=True,
        )  # fmt: skip
    state.passages.clear()  # only the steps: the members are not the bench's
    return state


def delta_seconds(store: EntitlementStore, members: int) -> float:
    """Time to apply a delta of 1,000 upserts (one moving a card) and 100 deletes."""
    version = store.version or 1
    upsert = [parse_record(member(i)) for i in range(10, 1009)]
    mover = {"member": "M-new", "credentials": [{"kind": "code", "value": f"FLX-{5:09d}"}]}
    upsert.append(parse_record(mover))  # takes member 5's code
    delete = [f"M{i}" for i in range(members - 100, members)]
    t0 = time.perf_counter()
    store.apply_delta(version + 1, version, upsert, delete, None, None, AT)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    add_cpus_argument(parser)
    args = parser.parse_args()
    if args.probe is not None:
        startup_probe(args.probe)
        return
    print(f"cores: {pin_cpus(args.cpus)}")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="accessgw-bench-"))
    if args.dir is None:  # a million members' store is most of a GiB: not left behind
        atexit.register(shutil.rmtree, workdir, True)
    path = workdir / "store.sqlite"
    rules = parse_rules(RULES)

    started = time.perf_counter()
    records = (parse_record(member(i)) for i in range(args.members))
    store = EntitlementStore.open(path, KEY)
    store.replace(1, rules, records, {}, AT)
    load_s = time.perf_counter() - started
    store.close()
    size = sum(p.stat().st_size for p in workdir.iterdir() if p.name.startswith("store.sqlite"))
    print(f"members: {args.members:,} (3 credentials, 2 contracts each)")
    print(f"load (validate + hash + write + index): {load_s:.1f} s")
    print(f"peak RSS of the loading process: {proc_status('VmHWM') / 1024:.0f} MiB")
    print(f"store on disk: {size / 2**20:.0f} MiB")

    child = probe_startup(path)
    print(f"start-up from the existing store: {child['seconds'] * 1000:.0f} ms (target <= 3000)")
    print(f"RSS after start-up: {child['rss_kib'] / 1024:.0f} MiB (target <= 300)")

    bare = probe_startup(None)
    store = EntitlementStore.open(path, KEY)
    bare_ms = bare_reads(store, args.members, args.decisions)
    found = lookups(store, args.members, args.decisions)
    print(latency_line("find()+member()", found, unit="look-ups", target_p99_ms=None))
    latencies, outcomes = decisions(store, args.members, args.decisions)
    print(f"decisions: {args.decisions:,} {outcomes}")
    print(latency_line("decision latency", latencies, unit="decisions", target_p99_ms=1.0))
    with_peers, _ = decisions(store, args.members, args.decisions, peers_pending())
    print(latency_line("decision latency, a peer's steps pending", with_peers,
                       unit="decisions", target_p99_ms=None))  # fmt: skip
    delta_ms = delta_seconds(store, args.members) * 1000
    print(f"delta of 1,000 upserts (one moving a code) and 100 deletes: {delta_ms:.0f} ms")
    store.close()
    again = probe_startup(path)
    print(f"start-up after that delta (blob + logged overlay): {again['seconds'] * 1000:.0f} ms")
    n = f"{args.members:,} members"
    ordered = sorted(latencies)
    emit(
        [
            Row(
                f"decision p99, {n}",
                percentile(ordered, 99),
                "ms",
                "value <= 1",
                percentile(sorted(bare_ms), 99),
                note="floor: HMAC + one row read + decode of the record",
            ),
            Row("decision max", ordered[-1], "ms", "", max(bare_ms)),
            Row(
                f"decision p99, a peer's {MAX_PEER_STEPS:,} check-ins not yet in its occupancy",
                percentile(sorted(with_peers), 99),
                "ms",
                "value <= 1",
                percentile(ordered, 99),
                note="floor: the decision p99 above (no peers)",
            ),
            Row(
                "start-up from the store",
                child["seconds"] * 1000,
                "ms",
                "value <= 3000",
                None,
                note=f"after a delta {again['seconds'] * 1000:.0f} ms",
            ),
            Row(
                "RSS after start-up",
                child["rss_kib"] / 1024,
                "MiB",
                "value <= 300",
                bare["rss_kib"] / 1024,
                note="floor: the same process, nothing opened",
            ),
        ],
        f"store and decision at {n}",
    )


if __name__ == "__main__":
    main()
