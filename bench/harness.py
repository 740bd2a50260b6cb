"""The parts the sync benchmarks share: a fresh broker, the central simulator in a process
of its own, a gateway link, and a door that decides a hundred times a second."""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import MqttSection
from gateway.sync.link import Link
from gateway.sync.topics import gw_topic
from simulators.central import CentralSimulator, generated_member
from tests.support.broker import Broker
from tests.support.ports import free_port

SITE, GW = "bench", "door-1"
AT = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


async def until(check: Callable[[], bool], within: float) -> None:
    """Wait until ``check()`` is true, polling every 5 ms."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {within} s")
        await asyncio.sleep(0.005)


def make_link(port: int, gw: str = GW) -> Link:
    cfg = MqttSection(host="127.0.0.1", port=port, keepalive=30, reconnect_max=1)
    return Link(cfg, SITE, gw, status_payload=lambda: {"state": "online"}, retry_base=0.1)


def start_broker(workdir: Path, more: str = "") -> Broker:
    """A fresh mosquitto (no sessions left over from an earlier run), with TCP_NODELAY:
    without it, Nagle holds back its small PUBACKs, which throttles any pipelining."""
    port = free_port()
    extra = f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    extra += more.replace(";", "\n") + "\n"
    return Broker(workdir / "broker", port=port, extra=extra).start()


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --- the central system, in a process of its own ----------------------------------------


def write_frame(out: Any, payload: bytes) -> None:
    out.write(struct.pack(">I", len(payload)) + payload)


def read_frames(path: Path) -> Iterator[bytes]:
    """The payloads :func:`write_frame` wrote to ``path``, one at a time."""
    with path.open("rb") as src:
        while head := src.read(4):
            yield src.read(struct.unpack(">I", head)[0])


def central_process(
    port: int, members: int, capture: str | None, rules: dict[str, Any] | None, conn: Any
) -> None:
    """The central simulator in a process of its own, so that it takes no time from the
    gateway's event loop. Sends its public key, then answers: "bump" makes the next version
    (every member gets contract C-<version>), "stats" sends (distinct, duplicates, upto) of
    the gateway's messages and how many signatures it verified (all gateways'), "stop" ends
    it. With ``capture``, every snapshot chunk it sends is also written to that file (the
    bench's floor works on the same chunks)."""

    class Capturing(CentralSimulator):
        """Seals the next snapshot ahead (at "bump"), so that the gateway's apply is timed
        without the central's own work; writes its chunks to ``capture``."""

        sealed: list[bytes] | None = None

        async def send_snapshot(self, gw: str, bodies: list[dict[str, Any]] | None = None) -> None:
            if self.sealed is None or bodies is not None:
                await super().send_snapshot(gw, bodies)
                return
            name = gw_topic(self.site, gw, "snapshot")
            for start in range(0, len(self.sealed), 8):
                part = self.sealed[start : start + 8]
                await asyncio.gather(*(self._publish(name, p) for p in part))

        def seal_ahead(self) -> None:
            bodies = self.set.snapshot_bodies(self.chunk_records)
            self.sealed = self._seal_all("snapshot", bodies, GW)
            if capture:
                with open(capture, "wb") as out:
                    for p in self.sealed:
                        write_frame(out, p)

    async def serve() -> None:
        central = Capturing(port=port, site=SITE, members=members, time_interval=None, rules=rules)
        async with central:
            conn.send(central.public_key_b64)
            while (command := await asyncio.to_thread(conn.recv)) != "stop":
                if command == "bump":
                    tag = str(central.set.version + 1)
                    central.set.records = {
                        f"M{i:07d}": generated_member(i, tag) for i in range(1, members + 1)
                    }
                    central.set.version += 1
                    central.set.deltas.clear()  # no delta to offer: a sync gets a snapshot
                    await asyncio.to_thread(central.seal_ahead)
                    conn.send("bumped")
                elif isinstance(command, tuple) and command[0] == "register":
                    conn.send(await central.register_gateway(command[1], command[2]))
                elif isinstance(command, tuple) and command[0] == "delta":  # n records changed
                    tag = f"D{central.set.version + 1}"
                    upsert = [generated_member(i, tag) for i in range(1, command[1] + 1)]
                    conn.send(await central.update(upsert))
                elif command == "stats":
                    got = central.received[GW]
                    conn.send((len(got.checkins) + len(got.events), got.duplicates, got.upto,
                               central.gateways.verified))  # fmt: skip

    asyncio.run(serve())


class CentralProcess:
    """Starts :func:`central_process` and talks to it."""

    def __init__(
        self,
        port: int,
        members: int = 0,
        capture: Path | None = None,
        rules: dict[str, Any] | None = None,
    ) -> None:
        self.conn, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("spawn")
        where = str(capture) if capture else None
        self.proc = ctx.Process(
            target=central_process, args=(port, members, where, rules, child), daemon=True
        )

    async def __aenter__(self) -> CentralProcess:
        self.proc.start()
        self.public_key = await asyncio.to_thread(self.conn.recv)
        return self

    async def ask(self, command: str | tuple[Any, ...]) -> Any:
        self.conn.send(command)
        return await asyncio.to_thread(self.conn.recv)

    async def __aexit__(self, *exc: object) -> None:
        self.conn.send("stop")
        await asyncio.to_thread(self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.kill()


# --- a door deciding a hundred times a second -------------------------------------------

# A badge every 10 ms: a hundred times what the busiest turnstile sees, so that any stall of
# the decision longer than that is met by one. Every millisecond (before 2026-12-02), the
# probe itself took a fifth of the one core in the one-core snapshot bench (11.8 of its
# 53 s), CPU that its floor does not spend, and it found nothing the 10 ms gap misses
# against a target of 50 ms.
PROBE_EVERY_S = 0.01


class DoorProbe:
    """Decides a card every ``every_s``; records latencies in ms (``decide_ms``: the call
    itself; ``total_ms``: including how late the event loop ran it)."""

    def __init__(self, store: Any, members: int, every_s: float = PROBE_EVERY_S) -> None:
        self.every_s = every_s
        from gateway.decision import DoorContext, Presented, Request, decide
        from gateway.state import LocalState

        self.store = store
        self.members = members
        self.decide_ms: list[float] = []
        self.total_ms: list[float] = []
        self._decide = decide
        self._state = LocalState()
        door = DoorContext("main-in", "gym", "in", SITE)
        self._request = lambda uid: Request(Presented("nfc", uid), door, AT)

    def one(self, i: int) -> None:
        uid = f"04{1 + i % self.members:012X}"
        self._decide(self._request(uid), self.store, self._state)

    def reset(self) -> None:
        self.decide_ms.clear()
        self.total_ms.clear()

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            due = time.perf_counter() + self.every_s
            await asyncio.sleep(self.every_s)
            t0 = time.perf_counter()
            self.one(i * 7919)
            t1 = time.perf_counter()
            self.decide_ms.append((t1 - t0) * 1000)
            self.total_ms.append((t1 - due) * 1000)
            i += 1
