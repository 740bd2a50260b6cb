"""A peer's check-in is acknowledged to the broker only once the gateway kept it.

Peers' check-ins are applied at most 100 a second (PROTOCOL.md, "Peers' check-ins, checked
before use"); the rest wait. Were they acknowledged as they arrived, a gateway stopped or
killed meanwhile would lose them for good: the broker forgets an acknowledged message, and
ticket uses, clip-card charges and passages have no other way back (the CI failure of
2026-12-03: one ticket use missing at one of two gateways after a restart).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.broker import Broker
from tests.support.procs import children
from tests.trust.helpers import SITE, Peer, config, gateway_key, until
from tests.trust.test_issue8_peers import (
    central_for,
    gateway_process,
    has_the_set,
    kept_peer_rows,
    started,
)

COUNT = 300  # three seconds' worth of applying at 100 a second


async def test_a_gateway_killed_with_peers_check_ins_waiting_loses_none_of_them(
    tmp_path: Path, broker: Broker
) -> None:
    state, peer = tmp_path / "door-1", Peer("door-2")
    keys = {"door-1": gateway_key(state, "door-1"), "door-2": peer.public_key_b64}
    name = f"acs/v1/{SITE}/gw/door-2/checkin"
    log = tmp_path / "door-1.log"
    async with central_for(broker, keys) as central:
        cfg = tmp_path / "door-1.toml"
        cfg.write_text(config(state, "door-1", broker.port, central.public_key_b64))
        with gateway_process(cfg, log) as proc:
            await started(central, "door-1", 1, proc, log)
            await has_the_set(broker, "door-1", central.version)
            for _ in range(COUNT):  # the peer drains a backlog: far faster than 100 a second
                await central.publish_raw(name, peer.sign(peer.checkin()))
            await until(lambda: kept_peer_rows(state) >= 50)
            [wire] = children(proc.pid, "gateway.sync.wire_child")
            proc.send_signal(signal.SIGKILL)  # no stop, no flush: as a power cut would
            await asyncio.to_thread(proc.wait, 10)
        # its wire process leaves too: left behind, it would keep the gateway's MQTT session
        # and take it back from the next one's, again and again
        await until(lambda: not Path(f"/proc/{wire}").exists(), within=5)
        with gateway_process(cfg, log) as proc:
            await started(central, "door-1", 2, proc, log)
            # what it had kept is there; what it had not, the broker delivers again
            await until(lambda: kept_peer_rows(state) == COUNT, within=20)
            await asyncio.sleep(1.0)
            assert kept_peer_rows(state) == COUNT  # and each once
