"""Many gateways of one site as processes of their own, for the site chaos tests.

Each gateway is ``accessgw run`` with its own state directory and key pair (registered in
the site rules' ``gateways``, so peers accept each other's signed check-ins), one entry door
read by a scanner on its own pty. The central simulator serves the set and counts. Taps are
spread at random over the gateways and members at a fixed rate for a fixed time. Every
daemon's RSS is sampled through the run.

What is compared afterwards, per gateway: its passage history (``history.sqlite``: own and
peers' check-ins as applied, de-duplicated by ``(gw, id)``), counted per origin gateway,
and the clip-card charges in it, against what the central simulator counted from each
gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.central import CentralSimulator
from simulators.scanner import ScannerSimulator
from tests.chaos.harness import Daemon, chaos_rules, code_member, daemon_config, last_seq, until
from tests.support.broker import Broker
from tests.trust.helpers import gateway_key

SITE = "oslo-sentrum"
MEMBERS = 500
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "mosquitto.conf"


def shipped_queue_settings() -> str:
    """The queue limits of the shipped Mosquitto config (``max_inflight_messages``,
    ``max_queued_messages``). With Mosquitto's defaults (1,000 queued per client) a busy
    site's broker drops QoS 1 messages to a gateway that reads slowly ("Outgoing messages
    are being dropped"), and the peers then miss check-ins for good: the publisher had its
    PUBACK and its ack, nothing sends them again."""
    keep = ("max_inflight_messages ", "max_queued_messages ")
    lines = SHIPPED_CONF.read_text(encoding="utf-8").splitlines()
    return "".join(f"{line.strip()}\n" for line in lines if line.strip().startswith(keep))


class SiteBroker(Broker):
    """Mosquitto as a site runs it: the shipped queue limits; the log without a line per
    message (fifty gateways would write a gigabyte)."""

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = self.extra or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(
            f"persistence false\nuser root\nlog_dest file {self.log}\nlog_type error\n"
            f"log_type warning\nlog_type notice\n{shipped_queue_settings()}{base}",
            encoding="utf-8",
        )


@dataclass
class SiteRun:
    """What one run of the site produced, for the assertions and the report."""

    gateways: int
    seconds: float
    rate: float
    taps: int = 0
    central: dict[str, Counter[str]] = field(default_factory=dict)  # what -> gw -> count
    histories: dict[str, Counter[str]] = field(default_factory=dict)  # at gw -> origin -> n
    charged_at: dict[str, int] = field(default_factory=dict)  # at gw -> clip-card units
    central_charged: int = 0
    credits_used_at_central: int = 0
    rss_kib: dict[str, list[int]] = field(default_factory=dict)  # gw -> samples
    out_of_order: int = 0
    duplicates: int = 0
    lost: int = 0
    seq_reused: int = 0
    started_in: float = 0.0
    applied_in: float = 0.0

    def growth_kib(self) -> dict[str, int]:
        """RSS growth per gateway from the first sample under traffic to the last."""
        return {gw: s[-1] - s[0] for gw, s in self.rss_kib.items() if len(s) >= 2}

    def second_half_growth_kib(self) -> dict[str, int]:
        """RSS growth per gateway over the second half of the samples (a leak keeps
        growing; state settling in does not)."""
        out = {}
        for gw, s in self.rss_kib.items():
            if len(s) >= 4:
                out[gw] = s[-1] - s[len(s) // 2]
        return out

    def summary(self) -> dict[str, Any]:
        growth = sorted(self.growth_kib().values())
        late = sorted(self.second_half_growth_kib().values())
        start = sorted(s[0] for s in self.rss_kib.values() if s)
        return {
            "gateways": self.gateways,
            "seconds": self.seconds,
            "rate_per_s": self.rate,
            "taps": self.taps,
            "checkins_at_central": sum(self.central["checkins"].values()),
            "passages_at_central": sum(self.central["passed"].values()),
            "passages_at_each_gateway": sorted({sum(h.values()) for h in self.histories.values()}),
            "charged_at_central": self.central_charged,
            "lost": self.lost,
            "seq_reused": self.seq_reused,
            "out_of_order": self.out_of_order,
            "duplicates_dropped": self.duplicates,
            "started_in_s": round(self.started_in, 1),
            "all_applied_s_after_traffic": round(self.applied_in, 1),
            "rss_start_mib_median": round(statistics.median(start) / 1024, 1) if start else 0,
            "rss_growth_mib_median": round(statistics.median(growth) / 1024, 1) if growth else 0,
            "rss_growth_mib_max": round(max(growth) / 1024, 1) if growth else 0,
            "rss_growth_2nd_half_mib_max": round(max(late) / 1024, 1) if late else 0,
            "samples_per_gateway": min((len(s) for s in self.rss_kib.values()), default=0),
        }


def history_counts(state: Path) -> tuple[Counter[str], int]:
    """A gateway's passage history: rows per origin gateway, and clip-card units charged."""
    conn = sqlite3.connect(f"file:{state / 'history.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT gw, COUNT(*) FROM checkins GROUP BY gw").fetchall()
        charged = conn.execute(
            "SELECT COALESCE(SUM(json_extract(body, '$.charged')), 0) FROM checkins"
        ).fetchone()[0]
    finally:
        conn.close()
    return Counter({str(gw): int(n) for gw, n in rows}), int(charged or 0)


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run_site(
    tmp_path: Path,
    *,
    gateway_port: int,
    central_port: int,
    gateways: int,
    seconds: float,
    rate: float,
    sample_every: float,
    patience: float,
) -> SiteRun:
    """Start ``gateways`` daemons on ``gateway_port`` and the central simulator on
    ``central_port`` (the same broker, or two bridged), tap ``rate`` times a second for
    ``seconds``, wait (at most ``patience`` s each) until the central and every gateway have
    everything, stop, count."""
    run = SiteRun(gateways, seconds, rate)
    names = [f"gw-{i:02d}" for i in range(1, gateways + 1)]
    states = {gw: tmp_path / gw / "state" for gw in names}
    keys = {gw: gateway_key(states[gw], gw) for gw in names}
    rng = random.Random(20)
    async with CentralSimulator(
        "127.0.0.1",
        central_port,
        SITE,
        records=[code_member(n) for n in range(1, MEMBERS + 1)],
        rules=chaos_rules(),
        time_interval=None,
        count_interval=5.0,
        gateways=keys,
    ) as central:
        with contextlib.ExitStack() as stack:
            scanners = {gw: stack.enter_context(ScannerSimulator()) for gw in names}
            daemons: dict[str, Daemon] = {}
            for gw in names:
                cfg = tmp_path / gw / "accessgw.toml"
                cfg.write_text(
                    daemon_config(
                        states[gw],
                        gateway_port,
                        central.public_key_b64,
                        scanners[gw].path,
                        sensor=False,
                        gw=gw,
                    )
                )
                daemons[gw] = Daemon(cfg, tmp_path / gw / "daemon.log")
            began = time.monotonic()
            try:
                for daemon in daemons.values():
                    daemon.start()
                got = central.received
                await until(
                    lambda: all(_ready(d.log) for d in daemons.values()),
                    patience,
                    "every gateway's reader open and set in",
                )
                run.started_in = time.monotonic() - began
                sampler = asyncio.create_task(_sample(run, daemons, sample_every))
                try:
                    run.taps += await _traffic(rng, scanners, seconds, rate)
                    await _sample_once(run, daemons)
                finally:
                    sampler.cancel()
                    await asyncio.gather(sampler, return_exceptions=True)
                after = time.monotonic()
                await until(
                    lambda: sum(len(got[gw].checkins) for gw in names) >= run.taps,
                    patience,
                    f"{run.taps} check-ins at the central",
                )
                for gw in names:
                    last = last_seq(states[gw])
                    await until(lambda g=gw, n=last: got[g].upto >= n, patience, f"{gw} drained")
                expected = Counter(
                    {gw: sum(1 for c in got[gw].checkins if c["passed"]) for gw in names}
                )
                await until(
                    lambda: all(history_counts(states[gw])[0] == expected for gw in names),
                    patience,
                    "every gateway applied every passage of the site",
                )
                run.applied_in = time.monotonic() - after
            finally:
                codes = await asyncio.gather(*(asyncio.to_thread(d.stop) for d in daemons.values()))
            bad = [gw for gw, code in zip(daemons, codes, strict=True) if code != 0]
            assert bad == [], (tmp_path / bad[0] / "daemon.log").read_text()[-3000:] if bad else ""
        _count(run, central, names, states)
    return run


def _ready(log: Path) -> bool:
    """Whether a daemon's log says its reader is open and its first set is in (a code
    written to the pty before the reader opened it would never be read)."""
    said = log.read_text(errors="replace") if log.exists() else ""
    return '"event": "reader_online"' in said and "entitlements: now at version" in said


async def _traffic(
    rng: random.Random, scanners: dict[str, ScannerSimulator], seconds: float, rate: float
) -> int:
    """Taps at ``rate`` per second, each at a random gateway by a random member, paced
    against the clock (a slow loop catches up instead of tapping less)."""
    names = list(scanners)
    loop = asyncio.get_running_loop()
    began = loop.time()
    total = int(seconds * rate)
    for n in range(total):
        due = began + n / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        scanners[rng.choice(names)].scan(f"MC-{rng.randint(1, MEMBERS)}")
    return total


async def _sample(run: SiteRun, daemons: dict[str, Daemon], every: float) -> None:
    while True:
        await _sample_once(run, daemons)
        await asyncio.sleep(every)


async def _sample_once(run: SiteRun, daemons: dict[str, Daemon]) -> None:
    for gw, daemon in daemons.items():
        assert daemon.proc is not None
        rss = rss_kib(daemon.proc.pid)
        if rss:
            run.rss_kib.setdefault(gw, []).append(rss)


def _count(
    run: SiteRun, central: CentralSimulator, names: list[str], states: dict[str, Path]
) -> None:
    got = central.received
    run.central = {
        "checkins": Counter({gw: len(got[gw].checkins) for gw in names}),
        "passed": Counter({gw: sum(1 for c in got[gw].checkins if c["passed"]) for gw in names}),
    }
    run.central_charged = sum(int(c["charged"]) for gw in names for c in got[gw].checkins
                              if c["passed"])  # fmt: skip
    run.credits_used_at_central = sum(
        1_000_000 - int(r["contracts"][0]["credits"]) for r in central.set.records.values()
    )
    for gw in names:
        run.histories[gw], run.charged_at[gw] = history_counts(states[gw])
        received = got[gw]
        seqs = Counter(r["seq"] for r in received.checkins + received.events)
        run.seq_reused += sum(1 for n in seqs.values() if n > 1)
        run.lost += max(seqs) - len(seqs) if seqs else 0
        first = [s for s in received.arrivals if s > 0]
        run.out_of_order += sum(1 for a, b in itertools.pairwise(first) if b < a)
        run.duplicates += received.duplicates
