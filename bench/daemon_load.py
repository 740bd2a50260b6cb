"""The daemon as it runs, for the benches of the whole path: store, journal, a door on the
Modbus TCP relay board simulator, a PN532 simulator on a pty, the link to a real mosquitto
and the central simulator (a process of its own), and the load around it in another
process: peers' check-ins (signed by a registered peer), a flood of unsigned messages on
every topic, web clients polling the UI.

A tap is timed from the PN532 simulator writing its InListPassiveTarget answer (a card on
the reader) to the relay board simulator setting the door's coil. Both simulators run in a
process of their own (:class:`Devices`), as real devices are: in the daemon's process
their threads would take the daemon's interpreter lock at every frame, which no reader or
relay board does. Both stamp with CLOCK_MONOTONIC (``time.perf_counter``/``monotonic`` on
Linux), so their times compare across the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import SITE, CentralProcess, start_broker, until
from gateway import niceness
from simulators.central import default_rules
from tests.support.ports import free_port

GW, PEER = "door-1", "door-2"
COIL = 0


def card(i: int) -> str:
    """The card of member ``i`` of the central simulator's generated set."""
    return f"04{i:012X}"


def daemon_config(state: Path, port: int, key: str, relay_port: int, reader: str,
                  web_port: int | None) -> str:  # fmt: skip
    web = f"enabled = true\nport = {web_port}" if web_port else "enabled = false"
    return f"""
[gateway]
id = "{GW}"
site = "{SITE}"
state_dir = "{state}"
clock = "trusted"
[central]
public_key = "{key}"
[mqtt]
host = "127.0.0.1"
port = {port}
[web]
{web}
[[boards]]
id = "relays"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {relay_port}
[[doors]]
id = "main-in"
zone = "gym"
direction = "in"
lock = {{ board = "relays", index = {COIL} }}
unlock_seconds = 0.05
[[readers]]
id = "main-in-nfc"
profile = "pn532-hsu"
door = "main-in"
port = "{reader}"
repeat_guard = 0.5
options = {{ poll_interval = 0.02 }}
"""


# --- the load, in a process of its own ---------------------------------------------------


@dataclass
class Load:
    """What the load process does (any part may be off)."""

    port: int
    peer_state: str | None = None  # a registered peer's state dir: its check-ins are sent
    peer_rate: float = 200.0
    flood_rate: float = 0.0  # unsigned messages a second, spread over every topic
    web_port: int | None = None
    web_clients: int = 0


# The load stands in for the world outside the box (phones polling the UI, other gateways,
# a hostile publisher): none of it runs on a gateway's CPU. Pinned to the daemon's cores
# (``--cpus``), it still runs, but at the lowest priority, so that at one core it does not
# take the very core it is supposed to be outside of.
LOAD_NICE = 19


def outside_the_box(pid: int) -> None:
    """Put a process standing in for the world outside the box at the load's priority: the
    broker and the central simulator too (a site's broker and central system run on other
    machines). At their default priority they took cores from the doors' process: the
    central verifies every drained check-in, about a core's worth at the drain's rate, and
    most late wakes of the doors' loop under load were waits for a core (2026-12-02). Nor
    do they keep the short time slices they inherited from the bench's process, which runs
    the daemon (gateway.niceness)."""
    os.setpriority(os.PRIO_PROCESS, pid, LOAD_NICE)
    niceness.give_back_slice("a process outside the box", pid)


def load_process(load: Load, stop: Any) -> None:
    logging.disable(logging.CRITICAL)
    with contextlib.suppress(OSError):
        os.nice(LOAD_NICE)
    niceness.give_back_slice("the load")  # inherited from the bench's process, as above
    asyncio.run(_load(load, stop))


async def _load(load: Load, stop: Any) -> None:
    import aiomqtt

    from gateway.identity import load_identity, sign_message
    from gateway.sync.envelopes import canonical

    quiet = logging.Logger("bench.load", logging.WARNING)
    quiet.propagate = False
    done = asyncio.Event()
    asyncio.get_running_loop().add_reader(stop.fileno(), done.set)
    tasks = []
    async with aiomqtt.Client("127.0.0.1", load.port, identifier="bench-load", logger=quiet,
                              max_inflight_messages=1000) as client:  # fmt: skip
        client.pending_calls_threshold = 10_000

        async def peers() -> None:
            assert load.peer_state is not None
            identity = load_identity(PEER, SITE, Path(load.peer_state))
            seq = 0
            topic = f"acs/v1/{SITE}/gw/{PEER}/checkin"
            while not done.is_set():
                seq += 1
                message = {"id": str(uuid.uuid4()), "seq": seq,
                           "at": datetime.now(UTC).isoformat(), "door": "side-in",
                           "zone": "gym", "direction": "in", "credential": "nfc",
                           "member": f"M{seq % 1000 + 1:07d}", "ticket": None,
                           "decision": "granted", "reason": "ok", "contract": "C-1",
                           "charged": 0, "passed": True, "warnings": []}  # fmt: skip
                signed = sign_message(message, PEER, identity.private_key)
                await client.publish(topic, canonical(signed), qos=1)
                await asyncio.sleep(1 / load.peer_rate)

        async def flood() -> None:
            # every topic the gateway subscribes to (gateway.sync.link.subscriptions)
            topics = [f"acs/v1/{SITE}/{t}" for t in (
                "time", "entitlements/delta", f"gw/{GW}/delta", f"gw/{GW}/snapshot",
                f"gw/{GW}/cmd", f"gw/{GW}/checkin/ack", f"gw/{PEER}/checkin",
                f"gw/{PEER}/occupancy", "gw/door-9/checkin")]  # fmt: skip
            junk = json.dumps({"type": "delta", "site": SITE, "body": {"version": 1}}).encode()
            i = 0
            while not done.is_set():
                for _ in range(10):
                    i += 1
                    await client.publish(topics[i % len(topics)], junk, qos=0)
                await asyncio.sleep(10 / load.flood_rate)

        async def web_client() -> None:
            assert load.web_port is not None
            import httpx

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{load.web_port}") as http:
                while not done.is_set():
                    for path in ("/", "/api/status", "/login"):
                        with contextlib.suppress(httpx.HTTPError):
                            await http.get(path)

        if load.peer_state:
            tasks.append(asyncio.create_task(peers()))
        if load.flood_rate:
            tasks.append(asyncio.create_task(flood()))
        tasks += [asyncio.create_task(web_client()) for _ in range(load.web_clients)]
        await done.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def loaded(load: Load) -> AsyncIterator[None]:
    """Run the load process for the duration of the block."""
    ctx = multiprocessing.get_context("spawn")
    stop_r, stop_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=load_process, args=(load, stop_r), daemon=True)
    proc.start()
    try:
        await asyncio.sleep(1.0)  # connected and running
        yield
    finally:
        stop_w.send(b"stop")
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()


# --- the devices, in a process of their own -----------------------------------------------

DEVICES_NICE = -10  # ahead of the daemon (0), the load (19); needs CAP_SYS_NICE (root)


def devices_process(conn: Any) -> None:
    """The relay board (Modbus TCP) and the PN532 (a pty): run until told to stop."""
    import threading

    from simulators.pn532 import Pn532Simulator
    from simulators.relay_board import RelayBoardSim

    logging.disable(logging.CRITICAL)
    # Real readers and relay boards have a CPU of their own: they answer in a millisecond
    # whatever the box is doing. Here they share the bench's cores, so they run ahead of
    # everything else where the system allows it; otherwise a busy machine delays their
    # answers (the PN532 driver gives up after 100 ms without an ACK) and their time stamps,
    # which would be counted against the gateway.
    with contextlib.suppress(OSError):
        os.nice(DEVICES_NICE)
    niceness.give_back_slice("the devices")  # as the load
    send = threading.Lock()
    with RelayBoardSim() as relay, Pn532Simulator(None) as pn532:
        relay.start_tcp()

        def changed(index: int, value: bool, at: float) -> None:  # on the board's thread
            with send:
                conn.send(("coil", index, value, at, pn532.answered_at))

        relay.listeners.append(changed)
        with send:
            conn.send(("ready", relay.port, pn532.path))
        while True:
            what, *args = conn.recv()
            if what == "place":
                pn532.place(args[0])
            elif what == "remove":
                pn532.remove()
            elif what == "stop":
                return


class Devices:
    """The bench's side of the devices process: a card on the reader, the coil's changes."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=devices_process, args=(theirs,), daemon=True)
        self.relay_port = 0
        self.reader_path = ""
        self.answered_at = 0.0  # the PN532's last target answer (perf_counter)
        self.coil_on = False
        self.listeners: list[Any] = []  # called with (index, value, at) on the bench's loop

    async def __aenter__(self) -> Devices:
        self._proc.start()
        what, self.relay_port, self.reader_path = await asyncio.to_thread(self._conn.recv)
        assert what == "ready", what
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._read)
        return self

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        await asyncio.to_thread(self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()

    def _read(self) -> None:
        while self._conn.poll():
            _, index, value, at, answered_at = self._conn.recv()
            if index == COIL:
                self.coil_on = value
            self.answered_at = answered_at
            for listener in list(self.listeners):
                listener(index, value, at)

    def place(self, card: str) -> None:
        self._conn.send(("place", card))

    def remove(self) -> None:
        self._conn.send(("remove",))


# --- the daemon ---------------------------------------------------------------------------


@dataclass
class Rig:
    gateway: Any
    devices: Devices
    central: CentralProcess
    port: int
    peer_state: Path
    web_port: int | None
    members: int

    # The door's coil changes reach the bench as the board's notices, not by polling: a tap
    # waiting in a 0.5 ms loop on the daemon's own event loop would be load of the bench's
    # making on the very loop it measures.
    _waiting: dict[bool, asyncio.Future[float]] = field(default_factory=dict)
    # How long each decision waited for the journal's commit (ms), in the order decided
    commits_ms: list[float] = field(default_factory=list)

    def time_the_commits(self) -> None:
        """Time the daemon's own durable write of each decision (PROTOCOL.md: an fsync
        before the lock moves), around the very call its doors make: the part of a tap that
        is the disk's, to be told apart from the part a load could slow (the CPU, the loop)."""
        journal = self.gateway.journal
        record = journal.record_decision

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await record(*args, **kwargs)
            finally:
                self.commits_ms.append((time.perf_counter() - started) * 1000)

        journal.record_decision = timed

    def watch_coil(self) -> None:
        def changed(index: int, value: bool, at: float) -> None:
            if index == COIL:
                self._coil_set(value, at)

        self.devices.listeners.append(changed)

    def _coil_set(self, value: bool, at: float) -> None:
        waiter = self._waiting.pop(value, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    async def tap(self, i: int, within: float = 5.0) -> float:
        """Member ``i``'s card on the reader until the door's coil is set; ms from the
        reader's answer to the coil, or nan if the door did not open."""
        return (await self.tap_parts(i, within))[0]

    async def tap_parts(self, i: int, within: float = 5.0) -> tuple[float, float]:
        """:meth:`tap`, and how long of it the decision waited for the journal's commit
        (ms; nan if the door did not open or nothing was journalled)."""
        decided = len(self.commits_ms)
        relay_ms = await self._tap(i, within)
        commit_ms = self.commits_ms[decided] if len(self.commits_ms) > decided else float("nan")
        return relay_ms, (commit_ms if relay_ms == relay_ms else float("nan"))

    async def _tap(self, i: int, within: float) -> float:
        loop = asyncio.get_running_loop()
        opened = self._waiting[True] = loop.create_future()
        self.devices.place(card(1 + i % self.members))
        try:
            async with asyncio.timeout(within):
                at = await opened
            return (at - self.devices.answered_at) * 1000
        except TimeoutError:
            return float("nan")
        finally:
            self._waiting.pop(True, None)
            relocked = self._waiting[False] = loop.create_future()
            self.devices.remove()
            if self.devices.coil_on:  # relocked before the next tap
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(within):
                        await relocked
            self._waiting.pop(False, None)


@contextlib.asynccontextmanager
async def rig(workdir: Path, members: int, *, web: bool = False,
              backlog: int = 0) -> AsyncIterator[Rig]:  # fmt: skip
    """The daemon with its set loaded (and ``backlog`` check-ins queued in its journal)."""
    from gateway.config import parse_config
    from gateway.daemon import Gateway
    from gateway.identity import load_identity
    from gateway.journal import Journal

    rules = default_rules(SITE)
    rules["zones"]["gym"]["capacity"] = 10_000_000  # a thousand taps fill no gym
    broker = start_broker(workdir)
    web_port = free_port() if web else None
    state, peer_state = workdir / "state", workdir / "peer"
    try:
        async with CentralProcess(broker.port, members, rules=rules) as central:
            assert broker.process is not None and central.proc.pid is not None
            outside_the_box(broker.process.pid)
            outside_the_box(central.proc.pid)
            async with Devices() as devices:
                text = daemon_config(state, broker.port, central.public_key,
                                     devices.relay_port, devices.reader_path,
                                     web_port)  # fmt: skip
                cfg = parse_config(text, "bench config")
                for gw, where in ((GW, state), (PEER, peer_state)):
                    key = load_identity(gw, SITE, where).public_key_b64
                    await central.ask(("register", gw, key))
                if backlog:  # signed as the gateway journals them (when final)
                    signer = load_identity(GW, SITE, state).record_signer()
                    journal = await Journal.open(state / "journal.sqlite", GW, signer=signer)
                    from bench.drain import fill_journal

                    await fill_journal(journal, backlog)
                    await journal.close()
                gateway = Gateway(cfg)
                await gateway.start()
                niceness.doors_loop_first("the daemon's loop")  # as gateway.daemon.run_gateway
                try:
                    await until(lambda: gateway.store.version is not None, 1800)
                    rules_ok = lambda: PEER in (gateway.store.rules.gateways or {})  # noqa: E731
                    await until(rules_ok, 60)
                    r = Rig(gateway, devices, central, broker.port, peer_state,
                            web_port, members)  # fmt: skip
                    r.watch_coil()
                    r.time_the_commits()
                    yield r
                finally:
                    await gateway.stop()
    finally:
        broker.stop()
