"""A big snapshot while the door decides: ``python -m bench.snapshot [--members N]``.

A gateway (store, link, entitlement sync, snapshot builder) loads an N-member snapshot from
the central simulator over a real mosquitto; then the central replaces every record and the
gateway applies the new snapshot while a door decides every 10 ms. Printed:

- the apply (sync asked -> the new set live) beside its floor, computed in the same run on
  the very chunks the central sent: verify each chunk's signature and decode its JSON,
  encode each record once, HMAC every credential, insert the records into a bare SQLite
  table in one transaction, sort the credential index. Target: within 1.5x of the floor.
- the slowest decision during the apply beside the slowest one before it. Target <= 50 ms.
- the builder's peak memory beside its memory after its first chunk (bounded by a chunk):
  with two cores or more, the builder's and its writer process's, added (an upper bound:
  the pages the two share since the fork are counted twice).
- the same set loaded in-process (validate + ``replace``), beside the same floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Row, add_cpus_argument, emit, percentile, pin_cpus  # noqa: E402
from bench.harness import (  # noqa: E402
    AT,
    GW,
    SITE,
    CentralProcess,
    DoorProbe,
    make_link,
    read_frames,
    start_broker,
    until,
)
from gateway.credential_index import IndexBuilder  # noqa: E402
from gateway.sync.envelopes import load_public_key, open_envelope  # noqa: E402
from gateway.sync.topics import gw_topic  # noqa: E402

KEY = b"k" * 32


def floor_seconds(chunks: Path, public_key: str, workdir: Path) -> tuple[float, int]:
    """The least an apply of these chunks can cost (see the module's doc); (s, records)."""
    key = load_public_key(public_key)
    topic = gw_topic(SITE, GW, "snapshot")
    mac = hmac.new(KEY, digestmod=hashlib.sha256)
    path = workdir / "floor.sqlite"
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE records (rowid INTEGER PRIMARY KEY, rid TEXT, hashes BLOB, body TEXT)")
    started = time.perf_counter()
    index = IndexBuilder()
    rowid = 0
    db.execute("BEGIN")
    for payload in read_frames(chunks):
        body = open_envelope(payload, public_key=key, site=SITE, topic=topic).body
        rows = []
        for record in body["records"]:
            rowid += 1
            hashes = []
            for credential in record.get("credentials", ()):
                value = credential.get("uid") or credential.get("value") or ""
                m = mac.copy()
                m.update(f"{credential['kind']}:{value}".encode())
                digest = m.digest()
                hashes.append(digest)
                index.add(int.from_bytes(digest[:8], "big", signed=True), rowid)
            rid = record.get("member") or record.get("ticket")
            rows.append((rowid, rid, b"".join(hashes), json.dumps(record)))
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    index.build()
    seconds = time.perf_counter() - started
    db.close()
    path.unlink()
    return seconds, rowid


def in_process_seconds(members: int, workdir: Path) -> float:
    """Validate and ``replace`` the same set in this process, to a fresh store file."""
    from gateway.entitlements import parse_record, parse_rules
    from gateway.store import EntitlementStore
    from simulators.central import default_rules, generated_member

    path = workdir / "in-process.sqlite"
    store = EntitlementStore.open(path, KEY)
    started = time.perf_counter()
    records = (parse_record(generated_member(i, "3")) for i in range(1, members + 1))
    store.replace(3, parse_rules(default_rules(SITE)), records, {}, AT)
    seconds = time.perf_counter() - started
    store.close()
    return seconds


async def snapshot(port: int, workdir: Path, members: int) -> dict[str, float]:
    from gateway.store import EntitlementStore
    from gateway.sync.entitlement_sync import EntitlementSync

    out: dict[str, float] = {}
    capture = workdir / "chunks.bin"
    async with CentralProcess(port, members, capture) as central:
        store = EntitlementStore.open(workdir / "store.sqlite", KEY)
        link = make_link(port)
        sync = EntitlementSync(store, link, site=SITE, gw=GW, on_event=lambda t, d: None,
                               public_key=load_public_key(central.public_key))  # fmt: skip
        answers: list[dict[str, Any]] = []
        take = sync.builder.take

        async def noted(*args: Any, **kw: Any) -> dict[str, Any]:
            t = time.perf_counter()
            answer = await take(*args, **kw)
            answers.append({**answer, "sent_at": t, "answered_at": time.perf_counter()})
            return answer

        sync.builder.take = noted  # type: ignore[method-assign]
        link.on_message(lambda t, p: sync.handle(t, p))  # type: ignore[arg-type, return-value]
        link.on_connect(sync.on_connect)
        task = asyncio.create_task(link.run())
        t0 = time.perf_counter()
        await until(lambda: store.version == 1, 3600)
        out["first_load_s"] = time.perf_counter() - t0

        await central.ask("bump")
        answers.clear()
        probe, stop = DoorProbe(store, members), asyncio.Event()
        probing = asyncio.create_task(probe.run(stop))
        await asyncio.sleep(2)
        idle = sorted(probe.decide_ms)
        probe.reset()
        t0 = time.perf_counter()
        await sync.request("installer")
        await until(lambda: store.version == 2, 3600)
        live = time.perf_counter()
        out["apply_s"] = live - t0
        if answers:  # where the apply's time went
            out["until_first_chunk_s"] = answers[0]["sent_at"] - t0
            out["builder_busy_s"] = sum(a["answered_at"] - a["sent_at"] for a in answers)
            out["last_chunk_s"] = answers[-1]["answered_at"] - answers[-1]["sent_at"]
            out["adopt_s"] = live - answers[-1]["answered_at"]
        await asyncio.sleep(0.5)
        stop.set()
        await probing
        during = sorted(probe.decide_ms)
        out["decisions"] = len(during)
        out["idle_max_ms"] = idle[-1]
        out["idle_p99_ms"] = percentile(idle, 99)
        out["apply_p50_ms"] = percentile(during, 50)
        out["apply_p99_ms"] = percentile(during, 99)
        out["apply_max_ms"] = during[-1]
        out["door_p99_ms"] = percentile(sorted(probe.total_ms), 99)
        out["door_max_ms"] = max(probe.total_ms)
        rss = [int(a.get("rss_kib") or 0) for a in answers if a.get("rss_kib")]
        out["builder_first_chunk_mib"] = (rss[0] if rss else 0) / 1024
        out["builder_peak_mib"] = (max(rss) if rss else 0) / 1024
        out["builder_cpu_s"] = float(answers[-1].get("cpu_s") or 0) if answers else 0.0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()
        store.close()
        public_key = central.public_key
    out["floor_s"], out["floor_records"] = floor_seconds(capture, public_key, workdir)
    out["in_process_s"] = await asyncio.to_thread(in_process_seconds, members, workdir)
    return out


def rows(s: dict[str, float], members: int) -> list[Row]:
    n = f"{members:,} members"
    return [
        Row(f"snapshot apply, {n}", s["apply_s"], "s", "ratio <= 1.5", s["floor_s"]),
        Row(
            "slowest decision during the apply",
            s["apply_max_ms"],
            "ms",
            "value <= 50",
            s["idle_max_ms"],
            note=f"p99 {s['apply_p99_ms']:.2f} ms",
        ),
        Row(
            "snapshot builder peak memory",
            s["builder_peak_mib"],
            "MiB",
            "ratio <= 1.5",
            s["builder_first_chunk_mib"],
            note="floor: after its first chunk",
        ),
        Row(
            f"in-process load (validate + replace), {n}",
            s["in_process_s"],
            "s",
            "ratio <= 1.5",
            s["floor_s"],
        ),
    ]


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        workdir = Path(tmp)
        broker = start_broker(workdir)
        try:
            s = await snapshot(broker.port, workdir, args.members)
        finally:
            broker.stop()
    for key, value in s.items():
        print(f"  {key:26s} {value:12.3f}")
    emit(rows(s, args.members), f"snapshot of {args.members:,} members")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    add_cpus_argument(parser)
    args = parser.parse_args(argv)
    print(f"cores: {pin_cpus(args.cpus)}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
