"""A gateway in its own network namespace, cut off and restored (issue 9, chaos suite).

The daemon runs as its own process inside a namespace the test creates, joined to the
host by a veth pair; Mosquitto listens on the host end (and on loopback for the central
simulator). Codes are presented on the scanner's pty before, during and after the cut.

Two cuts: ``tc qdisc ... netem loss 100%`` on both ends of the veth (``pfifo limit 0``
where the kernel has no netem: it drops every packet the same way), a half-open link: no
RST, no FIN, the TCP connection just goes silent; and the veth taken down and up again. Each is
held for longer than the MQTT keepalive. Shown: the door goes on deciding (every code
decided, those in the cut ``offline: true``, journalled); the link is reported offline
during the cut (the metric ``accessgw_mqtt_link_up`` 0, the broker's retained will
``{"state": "offline"}`` on the status topic, a warning in the log); after the restore
every check-in reaches the central simulator once per seq (no seq with two ids, no gap),
first arrivals in seq order, nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.central import CentralSimulator
from simulators.scanner import ScannerSimulator
from tests.chaos.harness import (
    GW,
    LONG,
    Daemon,
    chaos_rules,
    code_member,
    daemon_config,
    last_seq,
    started,
    until,
    until_granted,
)
from tests.chaos.netns import NetNs, why_not_allowed
from tests.support.broker import Broker, Watcher
from tests.trust.helpers import gateway_key

KEEPALIVE = 5  # the gateway's MQTT keepalive (s): the least the config allows
CUT_S = float(os.environ.get("ACCESSGW_CHAOS_CUT", 60 if LONG else 10))
CUTS = int(os.environ.get("ACCESSGW_CHAOS_CUTS", 3 if LONG else 1))
TAP_EVERY = 0.4  # s between codes presented, all through the test
METRICS_PORT = 9464  # inside the namespace: its own loopback, nothing else listens there
MEMBERS = 20
STATUS = f"acs/v1/oslo-sentrum/gw/{GW}/status"


@pytest.fixture
def netns() -> Iterator[NetNs]:
    """A fresh namespace with a veth pair, removed afterwards even if the test fails."""
    reason = why_not_allowed()
    if reason is not None:
        pytest.skip(reason)
    ns = NetNs.create()
    try:
        yield ns
    finally:
        ns.remove()


@pytest.fixture
def veth_broker(tmp_path: Path, netns: NetNs) -> Iterator[Broker]:
    """Mosquitto on the host end of the veth (for the gateway) and on loopback (the
    central simulator), one port."""
    b = Broker(tmp_path / "broker")
    b.extra = (
        f"listener {b.port} 127.0.0.1\nlistener {b.port} {netns.host_ip}\nallow_anonymous true\n"
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def _link_up(ns: NetNs) -> float | None:
    """``accessgw_mqtt_link_up`` scraped inside the namespace; None if no answer."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    got = await asyncio.to_thread(ns.exec_, "curl", "-s", "-m", "2", url, check=False)
    found = re.search(r"^accessgw_mqtt_link_up\s+(\S+)$", got.stdout, re.M)
    return float(found.group(1)) if found else None


class Traffic:
    """Presents MC-1..MC-n on the scanner every ``TAP_EVERY`` s until stopped."""

    def __init__(self, scanner: ScannerSimulator) -> None:
        self.scanner = scanner
        self.taps = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.scanner.scan(f"MC-{self.taps % MEMBERS + 1}")
            self.taps += 1
            await asyncio.sleep(TAP_EVERY)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize("how", ["tc-drop-all", "link-down"])
async def test_gateway_cut_off_in_its_namespace_and_restored_loses_nothing(
    tmp_path: Path, netns: NetNs, veth_broker: Broker, how: str
) -> None:
    state = tmp_path / "state"
    keys = {GW: gateway_key(state, GW)}
    async with (
        CentralSimulator(
            "127.0.0.1",
            veth_broker.port,
            "oslo-sentrum",
            records=[code_member(n) for n in range(1, MEMBERS + 1)],
            rules=chaos_rules(),
            time_interval=None,
            gateways=keys,
        ) as central,
        Watcher(veth_broker.port, [STATUS], identifier="status-watch") as watcher,
    ):
        with ScannerSimulator() as scanner:
            cfg = tmp_path / "accessgw.toml"
            cfg.write_text(
                daemon_config(
                    state,
                    veth_broker.port,
                    central.public_key_b64,
                    scanner.path,
                    sensor=False,
                    host=netns.host_ip,
                    mqtt=f"keepalive = {KEEPALIVE}\nreconnect_max = 2\nallow_insecure = true",
                    tail=f"[metrics]\nenabled = true\nport = {METRICS_PORT}\n",
                )
            )
            log = tmp_path / "daemon.log"
            daemon = Daemon(cfg, log, prefix=netns.prefix).start()
            traffic = Traffic(scanner)
            cuts: list[dict[str, float]] = []
            cut_with = ""
            try:
                await until(lambda: started(central) == 1, 60, "started")
                taps = await until_granted(central, scanner)
                await until(lambda: _online(watcher), 30, "status online")
                traffic.start()
                for _ in range(CUTS):
                    await asyncio.sleep(3.0)  # online traffic
                    log_mark = log.stat().st_size
                    watcher.seen.clear()
                    cut_with = _cut(netns, how, cut=True)
                    try:
                        down_after = await _until_metric(netns, 0.0, CUT_S + 10)
                        await until(lambda: _offline(watcher), CUT_S + 10, "offline will")
                        held = max(0.0, CUT_S - down_after)
                        await asyncio.sleep(held)
                    finally:
                        _cut(netns, how, cut=False)
                    up_after = await _until_metric(netns, 1.0, 90)
                    await until(lambda: _online(watcher), 30, "status online again")
                    said = log.read_bytes()[log_mark:].decode(errors="replace")
                    assert "MQTT" in said and "WARNING" in said.upper(), said[-2000:]
                    cuts.append({"down_after": down_after, "up_after": up_after})
                await asyncio.sleep(3.0)  # traffic after the (last) restore
                await traffic.stop()
                taps += traffic.taps
                got = central.received
                await until(lambda: len(got[GW].checkins) >= taps, 60, f"{taps} check-ins")
                last = last_seq(state)
                await until(lambda: got[GW].upto >= last, 60, f"drain to seq {last}")
            finally:
                if traffic._task is not None:
                    await traffic.stop()
                code = daemon.stop()
            assert code == 0, log.read_text()[-3000:]
    received = got[GW]
    assert len(received.checkins) == taps  # every code presented was decided and delivered
    in_seq = sorted(received.checkins, key=lambda c: c["seq"])
    first_grant = next(i for i, c in enumerate(in_seq) if c["decision"] == "granted")
    assert [c["reason"] for c in in_seq[first_grant:] if c["decision"] != "granted"] == []
    offline = [c for c in received.checkins if c["offline"]]
    assert offline, "no decision was made while the link was cut"
    seqs = Counter(r["seq"] for r in received.checkins + received.events)
    assert [s for s, n in seqs.items() if n > 1] == []  # one id per seq
    assert sorted(seqs) == list(range(1, max(seqs) + 1))  # nothing lost
    first_arrivals = [s for s in received.arrivals if s > 0]
    assert first_arrivals == sorted(first_arrivals)  # in order
    print(
        json.dumps(
            {
                "netns": how,
                "cut_with": cut_with,
                "cuts": CUTS,
                "held_s": CUT_S,
                "keepalive_s": KEEPALIVE,
                "taps": taps,
                "checkins": len(received.checkins),
                "offline_checkins": len(offline),
                "link_down_reported_after_s": [round(c["down_after"], 1) for c in cuts],
                "link_up_after_restore_s": [round(c["up_after"], 1) for c in cuts],
                "lost": 0,
                "duplicates_dropped": received.duplicates,
            }
        )
    )


def _cut(ns: NetNs, how: str, *, cut: bool) -> str:
    """Cut or restore the veth; what was done, for the report."""
    if how == "tc-drop-all":
        if cut:
            return f"tc qdisc {ns.cut()}"
        ns.restore()
        return "tc qdisc del"
    ns.link(up=not cut)
    return f"ip link set {'down' if cut else 'up'}"


def _statuses(watcher: Watcher) -> list[dict[str, object]]:
    out = []
    for m in watcher.on(STATUS):
        try:
            out.append(json.loads(m.payload))
        except ValueError:
            continue
    return out


def _offline(watcher: Watcher) -> bool:
    return any(s.get("state") == "offline" for s in _statuses(watcher))


def _online(watcher: Watcher) -> bool:
    got = _statuses(watcher)
    return bool(got) and got[-1].get("state") == "online"


async def _until_metric(ns: NetNs, value: float, within: float) -> float:
    """Seconds until the link metric reads ``value`` (scraped every 0.5 s)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while await _link_up(ns) != value:
        if loop.time() - began > within:
            raise AssertionError(f"accessgw_mqtt_link_up did not become {value} in {within} s")
        await asyncio.sleep(0.5)
    return loop.time() - began
