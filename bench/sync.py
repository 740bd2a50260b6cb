"""Sync figures, run by hand: ``.venv/bin/python bench/sync.py [drain|snapshot|all]``.

(a) drain: N check-ins queued in the journal (a day offline), drained by the outbox to a real
    mosquitto with the central simulator acking; check-ins/s, beside the raw rate of a bare
    aiomqtt QoS 1 publish loop of the same payloads in the same run (awaiting each PUBACK: the
    floor), and of the same loop pipelined 100 deep (the ceiling of the broker and client).
(b) snapshot: a gateway loads an M-member snapshot, then the central replaces every record
    (version 2) and the gateway applies the new snapshot while a task decides at the door
    every millisecond; apply times and the decision latency percentiles.

Figures only: nothing here is a pass/fail test (machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from bench.figures import percentile  # noqa: E402
from gateway.config import MqttSection  # noqa: E402
from gateway.sync.envelopes import load_public_key  # noqa: E402
from gateway.sync.link import Link  # noqa: E402
from simulators.central import CentralSimulator, generated_member  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

SITE, GW = "bench", "door-1"
AT = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def checkin(i: int) -> dict[str, Any]:
    """A typical check-in as the entry pipeline journals it."""
    return {"at": AT.isoformat(), "door": "main-in", "zone": "gym", "direction": "in",
            "credential": "nfc", "member": f"M{i:07d}", "ticket": None, "decision": "granted",
            "reason": "ok", "contract": "C-1", "charged": 0, "passed": True, "warnings": [],
            "offline": True, "entitlements_version": 1}  # fmt: skip


async def until(check: Callable[[], bool], within: float) -> None:
    """Wait until ``check()`` is true, polling every 5 ms."""
    for _ in range(int(within / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"not done within {within} s")


def make_link(port: int) -> Link:
    cfg = MqttSection(host="127.0.0.1", port=port, keepalive=30, reconnect_max=1)
    return Link(cfg, SITE, GW, status_payload=lambda: {"state": "online"}, retry_base=0.1)


# --- (a) draining the outbox ---------------------------------------------------------------------


async def fill_journal(journal: Any, n: int) -> float:
    """Queue ``n`` final check-ins; seconds it took (fsync per record: not the figure asked)."""
    t0 = time.perf_counter()
    if hasattr(journal, "record_many"):  # one transaction per 1000: the figure is the drain
        for start in range(0, n, 1000):
            await journal.record_many([checkin(i) for i in range(start, min(n, start + 1000))])
        return time.perf_counter() - t0
    batch = 100  # concurrent writers, as several doors would be
    for start in range(0, n, batch):

        async def one(i: int) -> None:
            entry = await journal.record_decision(checkin(i))
            await journal.finalise(entry.seq, passed=True, charged=0)

        await asyncio.gather(*(one(i) for i in range(start, min(n, start + batch))))
    return time.perf_counter() - t0


async def drain(port: int, workdir: Path, n: int, **outbox_kw: Any) -> dict[str, float]:
    from gateway.journal import Journal
    from gateway.sync.outbox import Outbox

    out: dict[str, float] = {}
    async with CentralProcess(port) as central:
        journal = await Journal.open(workdir / "journal.sqlite", GW)
        out["fill_s"] = await fill_journal(journal, n)
        messages = [r["message"] for r in await journal.unacked(0, n)]
        link = make_link(port)
        outbox = Outbox(journal, link, site=SITE, gw=GW, **outbox_kw,
                        public_key=load_public_key(central.public_key))  # fmt: skip
        link.on_message(lambda t, p: outbox.handle(t, p))  # type: ignore[arg-type, return-value]
        link.on_connect(outbox.on_connect)
        tasks = [asyncio.create_task(link.run()), asyncio.create_task(outbox.run())]
        t0 = time.perf_counter()
        await until(lambda: outbox.acked_upto >= n, 600)  # all received, counted and acked
        out["drain_s"] = time.perf_counter() - t0
        out["pending_after"] = float(await journal.pending_count())
        distinct, duplicates, _ = await central.ask("stats")
        out["distinct_at_central"], out["duplicates_at_central"] = distinct, duplicates
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await journal.close()
        payloads = [json.dumps(m, separators=(",", ":")).encode() for m in messages]
        out["raw_s"] = await raw_publish(port, payloads, window=1)
        out["raw_pipelined_s"] = await raw_publish(port, payloads, window=100)
    return out


async def raw_publish(port: int, payloads: list[bytes], *, window: int) -> float:
    """A bare aiomqtt QoS 1 publish loop; ``window`` publishes awaiting PUBACK at a time."""
    name = f"acs/v1/{SITE}/gw/raw/checkin"
    quiet = logging.getLogger("bench.raw")  # aiomqtt warns on every publish beyond 10 pending
    quiet.setLevel(logging.ERROR)
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"raw-{window}", logger=quiet,
                              max_inflight_messages=max(20, window)) as client:  # fmt: skip
        t0 = time.perf_counter()
        if window == 1:
            for p in payloads:
                await client.publish(name, p, qos=1)
        else:
            for start in range(0, len(payloads), window):
                part = payloads[start : start + window]
                await asyncio.gather(*(client.publish(name, p, qos=1) for p in part))
        return time.perf_counter() - t0


# --- (b) a big snapshot while the door decides --------------------------------------------------


class DoorProbe:
    """Decides (or looks up) a card every millisecond; records latencies in ms."""

    def __init__(self, store: Any, members: int) -> None:
        self.store = store
        self.members = members
        self.decide_ms: list[float] = []
        self.total_ms: list[float] = []  # including how late the event loop ran it
        self.uses_decide = True
        try:
            from gateway.decision import DoorContext, Presented, Request, decide
            from gateway.state import LocalState

            self._decide = decide
            self._state = LocalState()
            self._door = DoorContext("main-in", "gym", "in", SITE)
            self._request = lambda uid: Request(Presented("nfc", uid), self._door, AT)
        except ImportError:
            self.uses_decide = False

    def one(self, i: int) -> None:
        uid = f"04{1 + i % self.members:012X}"
        if self.uses_decide:
            self._decide(self._request(uid), self.store, self._state)
        else:
            self.store.find("nfc", uid)

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            t0 = time.perf_counter()
            self.one(i * 7919)
            t1 = time.perf_counter()
            self.decide_ms.append((t1 - t0) * 1000)
            self.total_ms.append((t1 - due) * 1000)
            i += 1


def central_process(port: int, members: int, conn: Any) -> None:
    """The central simulator in a process of its own, so that it takes no time from the
    gateway's event loop. Sends its public key, then answers: "bump" makes version 2 (every
    member gets contract C-2), "stats" sends (distinct, duplicates) of the gateway's
    messages, "stop" ends it."""

    async def serve() -> None:
        central = CentralSimulator(port=port, site=SITE, members=members, time_interval=None)
        async with central:
            conn.send(central.public_key_b64)
            while (command := await asyncio.to_thread(conn.recv)) != "stop":
                if command == "bump":
                    records = {f"M{i:07d}": generated_member(i, "2") for i in range(1, members + 1)}
                    central.set.records = records
                    central.set.version += 1
                    central.set.deltas.clear()  # no delta to offer: a sync gets a snapshot
                    conn.send("bumped")
                elif command == "stats":
                    got = central.received[GW]
                    conn.send((len(got.checkins) + len(got.events), got.duplicates, got.upto))

    asyncio.run(serve())


class CentralProcess:
    """Starts :func:`central_process` and talks to it."""

    def __init__(self, port: int, members: int = 0) -> None:
        self.conn, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=central_process, args=(port, members, child), daemon=True)

    async def __aenter__(self) -> CentralProcess:
        self.proc.start()
        self.public_key = await asyncio.to_thread(self.conn.recv)
        return self

    async def ask(self, command: str) -> Any:
        self.conn.send(command)
        return await asyncio.to_thread(self.conn.recv)

    async def __aexit__(self, *exc: object) -> None:
        self.conn.send("stop")
        await asyncio.to_thread(self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.kill()


async def snapshot(port: int, workdir: Path, members: int) -> dict[str, float]:
    from gateway.store import EntitlementStore
    from gateway.sync.entitlement_sync import EntitlementSync

    out: dict[str, float] = {}
    async with CentralProcess(port, members) as central:
        store = EntitlementStore.open(workdir / "store.sqlite", b"k" * 32)
        link = make_link(port)
        sync = EntitlementSync(store, link, site=SITE, gw=GW, on_event=lambda t, d: None,
                               public_key=load_public_key(central.public_key))  # fmt: skip
        link.on_message(lambda t, p: sync.handle(t, p))  # type: ignore[arg-type, return-value]
        link.on_connect(sync.on_connect)
        task = asyncio.create_task(link.run())
        t0 = time.perf_counter()
        await until(lambda: store.version == 1, 1200)
        out["first_load_s"] = time.perf_counter() - t0

        await central.ask("bump")
        probe, stop = DoorProbe(store, members), asyncio.Event()
        probing = asyncio.create_task(probe.run(stop))
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        await sync.request("installer")
        await until(lambda: store.version == 2, 1200)
        out["replace_s"] = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        stop.set()
        await probing
        out["decisions"] = len(probe.decide_ms)
        out["decide_p50_ms"] = percentile(sorted(probe.decide_ms), 50)
        out["decide_p99_ms"] = percentile(sorted(probe.decide_ms), 99)
        out["decide_max_ms"] = max(probe.decide_ms, default=float("nan"))
        out["door_p50_ms"] = percentile(sorted(probe.total_ms), 50)
        out["door_p99_ms"] = percentile(sorted(probe.total_ms), 99)
        out["door_max_ms"] = max(probe.total_ms, default=float("nan"))
        out["probe_used_decide"] = float(probe.uses_decide)
        figures = sync.last_snapshot or {}
        out["builder_peak_rss_mib"] = int(figures.get("rss_kib") or 0) / 1024
        out["gateway_peak_rss_mib"] = peak_rss_kib() / 1024
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.close()
        store.close()
    return out


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- main ---------------------------------------------------------------------------------------


def show(title: str, figures: dict[str, float]) -> None:
    print(title)
    for key, value in figures.items():
        print(f"  {key:22s} {value:12.3f}")


def start_broker(workdir: Path, nodelay: bool, more: str = "") -> Broker:
    """A fresh mosquitto (no sessions left over from an earlier run)."""
    port = free_port()
    # Mosquitto's set_tcp_nodelay: without it, Nagle holds back its small PUBACKs while
    # earlier ones wait for the client's delayed ACK, which throttles any pipelining.
    extra = f"listener {port} 127.0.0.1\nallow_anonymous true\n"
    extra += "set_tcp_nodelay true\n" if nodelay else ""
    extra += more.replace(";", "\n") + "\n"
    return Broker(workdir / "broker", port=port, extra=extra).start()


async def amain(args: argparse.Namespace) -> None:
    print(f"mosquitto with set_tcp_nodelay {'true' if args.nodelay else 'false'}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.what in ("drain", "all"):
            n = args.checkins
            workdir = Path(tmp) / "drain"
            broker = start_broker(workdir, args.nodelay, args.broker_conf)
            try:
                d = await drain(broker.port, workdir, n, window=args.window)
            finally:
                broker.stop()
            show(f"(a) drain {n} check-ins", d)
            rate, floor = n / d["drain_s"], n / d["raw_s"]
            print(f"  outbox {rate:,.0f}/s; bare QoS 1 loop {floor:,.0f}/s "
                  f"({100 * rate / floor:.0f}% of it); pipelined bare loop "
                  f"{n / d['raw_pipelined_s']:,.0f}/s")  # fmt: skip
        if args.what in ("snapshot", "all"):
            workdir = Path(tmp) / "snapshot"
            broker = start_broker(workdir, args.nodelay, args.broker_conf)
            try:
                s = await snapshot(broker.port, workdir, args.members)
            finally:
                broker.stop()
            show(f"(b) snapshot of {args.members} members", s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", nargs="?", default="all", choices=["drain", "snapshot", "all"])
    parser.add_argument("--checkins", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--broker-conf", default="",
                        help='more mosquitto config lines, ";"-separated, e.g. '
                        '"max_inflight_messages 100"')  # fmt: skip
    parser.add_argument("--window", type=int, default=500, help="outbox window (central acks)")
    parser.add_argument(
        "--no-nodelay",
        dest="nodelay",
        action="store_false",
        help="run mosquitto without set_tcp_nodelay (its default)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the gateway side (Python's default: 0.005)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
