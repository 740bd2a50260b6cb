"""The gateway's background processes run behind the doors' process (gateway.niceness).

Under load almost every late wake of the doors' loop was a wait for a core (the loop-lag
bench, 2026-12-02): the wire, web UI, snapshot builder and delta worker lower their own
CPU priority as they start, and say so when the system refuses.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from gateway import niceness
from tests.integration.gateways import SITE, config
from tests.supervision.helpers import FAST, until


def behind_us(steps: int) -> int:
    """The niceness of a child that lowered its priority ``steps`` below this process's."""
    return min(19, os.getpriority(os.PRIO_PROCESS, 0) + steps)


def test_lowering_goes_the_given_steps_below_the_niceness_inherited():
    code = "from gateway.niceness import lower_own_priority as l; print(l('test', 3))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    assert int(out) == behind_us(3)


def test_a_refusal_is_logged_with_its_cause_and_the_process_goes_on(monkeypatch, caplog):
    def refused(steps: int) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(niceness.os, "nice", refused)
    with caplog.at_level(logging.WARNING, logger="gateway.niceness"):
        assert niceness.lower_own_priority("MQTT wire process", niceness.WIRE) is None
    [record] = caplog.records
    assert "MQTT wire process: its CPU priority could not be lowered" in record.getMessage()
    assert "Operation not permitted" in record.getMessage()


async def test_the_wire_process_of_a_running_gateway_runs_behind_the_doors(tmp_path, broker):
    from gateway.config import parse_config
    from gateway.daemon import Gateway
    from gateway.identity import load_identity

    central_key = load_identity("central", SITE, tmp_path / "central").public_key_b64
    text = config(tmp_path, "door-1", broker.port, central_key)
    gw = Gateway(parse_config(text, "test"), backoff=FAST)
    await gw.start()
    try:
        await until(lambda: gw.sync is not None and gw.sync.wire.process is not None)
        assert gw.sync is not None and gw.sync.wire.process is not None
        pid = gw.sync.wire.process.pid
        await until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == behind_us(niceness.WIRE))
    finally:
        await gw.stop()
