"""Mosquitto restarted during a drain and paused (SIGSTOP): all delivered, in order.

The daemon (its own process) decides offline while the broker is down, then drains its
journal while the broker is restarted several times and paused once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

from simulators.central import CentralSimulator
from simulators.scanner import ScannerSimulator
from tests.chaos.harness import (
    GW,
    LONG,
    Daemon,
    chaos_rules,
    code_member,
    daemon_config,
    started,
    until,
)
from tests.trust.helpers import gateway_key

OFFLINE_TAPS = int(os.environ.get("ACCESSGW_CHAOS_TAPS", 4000 if LONG else 150))
RESTARTS = int(os.environ.get("ACCESSGW_CHAOS_RESTARTS", 20 if LONG else 3))
PAUSE_S = float(os.environ.get("ACCESSGW_CHAOS_PAUSE", 60 if LONG else 4))


async def test_broker_restarted_and_paused_during_a_drain_delivers_all_in_order(tmp_path, broker):
    # Run as shipped (persistence on) with a central that keeps its session, as a real one
    # does: without both, what the gateway publishes in the moment between a restart and the
    # central's new subscription is acknowledged and dropped, and arrives later, out of order.
    broker.stop()
    broker.persistence = True
    broker.start()
    state = tmp_path / "state"
    keys = {GW: gateway_key(state, GW)}
    async with CentralSimulator(
        "127.0.0.1",
        broker.port,
        "oslo-sentrum",
        records=[code_member(n) for n in range(1, 21)],
        rules=chaos_rules(),
        time_interval=None,
        gateways=keys,
    ) as central:
        with ScannerSimulator() as scanner:
            cfg = tmp_path / "accessgw.toml"
            cfg.write_text(
                daemon_config(
                    state, broker.port, central.public_key_b64, scanner.path, sensor=False
                )
            )
            daemon = Daemon(cfg, tmp_path / "daemon.log").start()
            try:
                await until(lambda: started(central) == 1, 30, "started")
                await asyncio.sleep(1.0)  # the set is there
                broker.stop()  # offline: the door goes on deciding, all journalled
                for n in range(OFFLINE_TAPS):
                    scanner.scan(f"MC-{n % 20 + 1}")
                    await asyncio.sleep(0.005)
                await asyncio.sleep(1.0)
                broker.start()
                got = central.received
                for _ in range(RESTARTS):  # restarted mid-drain
                    await asyncio.sleep(0.7)
                    broker.stop()
                    await asyncio.sleep(0.3)
                    broker.start()
                assert broker.process is not None
                broker.process.send_signal(signal.SIGSTOP)  # hung, TCP still open
                await asyncio.sleep(PAUSE_S)
                broker.process.send_signal(signal.SIGCONT)
                drained = await until(
                    lambda: len(got[GW].checkins) >= OFFLINE_TAPS, 600, "all check-ins delivered"
                )
            finally:
                code = daemon.stop()
            assert code == 0
    received = got[GW]
    offline = [c for c in received.checkins if c["offline"]]
    assert len(offline) >= OFFLINE_TAPS * 0.95  # decided while the broker was away
    seqs = Counter(r["seq"] for r in received.checkins + received.events)
    assert [s for s, n in seqs.items() if n > 1] == []
    assert sorted(seqs) == list(range(1, max(seqs) + 1))  # nothing lost
    first_arrivals = [s for s in received.arrivals if s > 0]
    assert first_arrivals == sorted(first_arrivals)  # each record first came in seq order
    print(
        f"broker: {OFFLINE_TAPS} offline check-ins, {RESTARTS} restarts, paused {PAUSE_S:g} s: "
        f"all delivered {drained:.1f} s after the pause, {received.duplicates} duplicates "
        f"dropped by id, lost 0, out of order 0 ({time.strftime('%Y-%m-%d %H:%M')})"
    )
