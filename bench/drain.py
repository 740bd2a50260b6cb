"""Draining a day offline: ``python -m bench.drain [--checkins N]``.

N check-ins queued in the journal are drained by the outbox to a real mosquitto, with the
central simulator (a process of its own) counting and acking them; check-ins/s from the
outbox's first read of the journal (its first publish follows) to the last ack, pruned. The
outbox runs as in the gateway: in the wire process (:mod:`gateway.sync.wire`), asking this
process's journal for records and reporting acks over its channel, and the records are
signed as the gateway journals them (each when it became final); its CPU is this process's
plus the wire process's. The floor, in the same run, same broker, same (signed) payloads: a
bare aiomqtt QoS 1 publish loop with a sliding window of the outbox's in-flight limit (a new
publish as soon as one of the ``inflight`` outstanding ones has its PUBACK; not batches with
``gather``, not stop-and-wait), timed from its first publish to its last PUBACK, in a process
of its own at the wire process's priority (the wire runs behind the doors' process,
:mod:`gateway.niceness`; a floor at a higher priority than the work it is the floor of took
the core from the broker and central the drain has to wait for). Target: the outbox within
90% of it.

The central verifies the signature of every check-in, as a site's central system must
(PROTOCOL.md, "Trust between gateways"; ``verified_at_central`` says how many): the
gateway's key is registered with it first. Until 2026-12-02 19:30 UTC it was not, and the
bench's central took every check-in unchecked (an Ed25519 check costs 110-150 us of CPU on
this machine with cryptography, 60-75 with libsodium, beside the 140 us the whole central
then cost a check-in); and the floor published on a topic of its own (``gw/raw/...``),
which a verifying central refuses, logging each. The floor now publishes on the gateway's
topic, so that the central does the same work for the floor's messages as for the drain's
(checks, counts them as duplicates, acks them) on the cores both share; the floor still
waits only for its PUBACKs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from bench.figures import Row, add_cpus_argument, emit, pin_cpus  # noqa: E402
from bench.harness import AT, GW, SITE, CentralProcess, start_broker  # noqa: E402
from gateway import niceness  # noqa: E402
from gateway.sync.link import no_delay  # noqa: E402
from gateway.sync.topics import gw_topic  # noqa: E402

INFLIGHT = 100  # the outbox's and the link's default in-flight limit


def checkin(i: int) -> dict[str, Any]:
    """A typical check-in as the entry pipeline journals it."""
    return {"at": AT.isoformat(), "door": "main-in", "zone": "gym", "direction": "in",
            "credential": "nfc", "member": f"M{i:07d}", "ticket": None, "decision": "granted",
            "reason": "ok", "contract": "C-1", "charged": 0, "passed": True, "warnings": [],
            "offline": True, "entitlements_version": 1}  # fmt: skip


async def fill_journal(journal: Any, n: int) -> None:
    """Queue ``n`` final check-ins (one transaction per 1,000: the figure is the drain)."""
    for start in range(0, n, 1000):
        await journal.record_many([checkin(i) for i in range(start, min(n, start + 1000))])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drain(port: int, broker_pid: int, workdir: Path, n: int) -> dict[str, float]:
    from gateway.config import parse_config
    from gateway.identity import load_identity
    from gateway.journal import Journal
    from gateway.sync.wire import WireEnd

    out: dict[str, float] = {}
    async with CentralProcess(port) as central:
        identity = load_identity(GW, SITE, workdir / "state")
        # Registered, as at a site: the central verifies every check-in's signature
        # (PROTOCOL.md, "Trust between gateways"), the floor's included (see the docstring).
        await central.ask(("register", GW, identity.public_key_b64))
        # as the gateway journals them: each record signed as it became final
        journal = await Journal.open(workdir / "journal.sqlite", GW,
                                     signer=identity.record_signer())  # fmt: skip
        await fill_journal(journal, n)
        payloads = [r["body"].encode() for r in await journal.unacked(0, n, raw=True)]
        cfg = parse_config(f"""
[gateway]
id = "{GW}"
site = "{SITE}"
state_dir = "{workdir / "state"}"
[central]
public_key = "{central.public_key}"
[mqtt]
host = "127.0.0.1"
port = {port}
inflight = {INFLIGHT}
""", "bench")  # fmt: skip

        async def status() -> dict[str, Any]:
            return {"state": "online"}

        async def connected() -> None:
            return None

        # The drain is timed from the wire process's first read of the journal (it publishes
        # right after) to the journal's prune of the last ack, as the floor is timed from its
        # first publish to its last PUBACK: not the wire process's start, imports and connect
        # (0.4 s here: more than a tenth of a 30,000 drain at 10,000/s), nor the up to 0.1 s
        # until the wire process's next state report says the last ack came.
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            assert wire.process is not None
            now, doors, wire_cpu = time.perf_counter(), time.process_time(), cpu_s(wire.process.pid)
            marks.setdefault(name, now)
            marks.setdefault(f"{name}_cpu", doors + wire_cpu)
            # diagnostics: where the CPU went (the others share the machine with the gateway)
            for part, cpu in (("doors", doors), ("wire", wire_cpu)):
                marks.setdefault(f"{name}_{part}", cpu)
            for part, pid in (("central", central.proc.pid), ("broker", broker_pid)):
                marks.setdefault(f"{name}_{part}", cpu_s(pid))

        async def unacked(after: int, limit: int, raw: bool) -> list[dict[str, Any]]:
            mark("first_read")
            return await journal.unacked(after, limit, raw=raw)

        # Waited for, not polled: a poll every 5 ms in this process was counted as the
        # gateway's CPU (200 turns of its loop a second, 4-5 us a check-in at 2,000/s).
        drained = asyncio.Event()

        async def ack(upto: int) -> int:
            count = await journal.ack(upto)
            if upto >= n:
                mark("last_ack")
                drained.set()
            return count

        wire = WireEnd(
            cfg, identity,
            calls={"unacked": unacked, "ack": ack, "status": status, "on_connect": connected},
            notices={"message": lambda *a: None, "dropped": lambda *a: None,
                     "event": lambda *a: None},
        )  # fmt: skip
        running = asyncio.create_task(wire.run())
        async with asyncio.timeout(900):
            await drained.wait()  # all received, counted, acked, pruned
        out["drain_s"] = marks["last_ack"] - marks["first_read"]
        out["drain_cpu_s"] = marks["last_ack_cpu"] - marks["first_read_cpu"]
        for part in ("doors", "wire", "central", "broker"):
            out[f"drain_cpu_{part}_s"] = marks[f"last_ack_{part}"] - marks[f"first_read_{part}"]
        distinct, duplicates, _, verified = await central.ask("stats")
        out["distinct_at_central"], out["duplicates_at_central"] = distinct, duplicates
        out["verified_at_central"] = verified
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await journal.close()
        others = {part: cpu_s(pid) for part, pid in (("central", central.proc.pid),
                                                     ("broker", broker_pid))}  # fmt: skip
        out["floor_s"], out["floor_cpu_s"] = await floor_in_process(port, payloads)
        for part, pid in (("central", central.proc.pid), ("broker", broker_pid)):
            out[f"floor_cpu_{part}_s"] = cpu_s(pid) - others[part]
    return out


async def floor_in_process(port: int, payloads: list[bytes]) -> tuple[float, float]:
    """(seconds, CPU seconds) of :func:`sliding_window` in a process of its own at the wire
    process's priority: the floor of the wire's work runs where that work does, behind the
    doors' process (gateway/niceness.py), competing with the broker and central as it does."""
    ours, theirs = multiprocessing.Pipe()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=floor_process, args=(port, payloads, INFLIGHT, theirs), daemon=True)
    proc.start()
    try:
        result: tuple[float, float] = await asyncio.to_thread(ours.recv)
    finally:
        await asyncio.to_thread(proc.join, 30)
    return result


def floor_process(port: int, payloads: list[bytes], inflight: int, conn: Any) -> None:
    niceness.lower_own_priority("the drain's floor", niceness.WIRE)
    c0 = time.process_time()
    elapsed = asyncio.run(sliding_window(port, payloads, inflight))
    conn.send((elapsed, time.process_time() - c0))


async def sliding_window(port: int, payloads: list[bytes], inflight: int) -> float:
    """A bare QoS 1 publish loop, ``inflight`` publishes awaiting PUBACK at a time, on the
    gateway's check-in topic: the central does for these what it did for the drain's (checks
    each signature, counts them, as duplicates, and acks them), on the cores the floor uses."""
    name = gw_topic(SITE, GW, "checkin")
    quiet = logging.Logger("bench.raw", logging.WARNING)  # paho's per-packet lines not made
    quiet.propagate = False
    room = asyncio.Semaphore(inflight)
    pending: set[asyncio.Task[None]] = set()

    async def one(client: aiomqtt.Client, payload: bytes) -> None:
        try:
            await client.publish(name, payload, qos=1)
        finally:
            room.release()

    async with aiomqtt.Client("127.0.0.1", port, identifier="raw-window", logger=quiet,
                              protocol=aiomqtt.ProtocolVersion.V5,
                              max_inflight_messages=inflight) as client:  # fmt: skip
        no_delay(client)  # as the link does: small packets are not held back
        client.pending_calls_threshold = inflight + 10
        t0 = time.perf_counter()
        for payload in payloads:
            await room.acquire()
            task = asyncio.create_task(one(client, payload))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        return time.perf_counter() - t0


async def amain(args: argparse.Namespace) -> None:
    n = args.checkins
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        broker = start_broker(Path(tmp))
        try:
            assert broker.process is not None
            d = await drain(broker.port, broker.process.pid, Path(tmp), n)
        finally:
            broker.stop()
    for key, value in d.items():
        print(f"  {key:24s} {value:12.3f}")
    rate, floor = n / d["drain_s"], n / d["floor_s"]
    lost = n - d["distinct_at_central"]
    emit(
        [
            Row(
                f"outbox drain, {n:,} check-ins",
                rate,
                "/s",
                "ratio >= 0.9",
                floor,
                note=f"{lost:.0f} lost, {d['duplicates_at_central']:.0f} duplicates",
            ),
            Row(
                "outbox drain, CPU of the gateway's processes a check-in (floor: the bare loop's)",
                d["drain_cpu_s"] / n * 1e6,
                "us",
                "",
                d["floor_cpu_s"] / n * 1e6,
                note="less sensitive to other processes' load than the rate",
            ),
        ],
        f"drain of {n:,} check-ins (floor: bare QoS 1 loop, sliding window of {INFLIGHT})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkins", type=int, default=100_000)
    add_cpus_argument(parser)
    args = parser.parse_args(argv)
    print(f"cores: {pin_cpus(args.cpus)}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
