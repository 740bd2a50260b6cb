"""The daemon as a separate process (``accessgw run``) with a scanner simulator, Mosquitto
and the central simulator; the long form with ``ACCESSGW_CHAOS_LONG=1``."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulators.central import default_rules

LONG = os.environ.get("ACCESSGW_CHAOS_LONG") == "1" or os.environ.get("ACCESSGW_LONG") == "1"
GW = "door-1"


def chaos_rules() -> dict[str, Any]:
    """The simulated site with a gym that has no capacity or anti-passback limit: every tap
    of a member with credits is a grant that charges one clip, however long the run (the
    simulator's default capacity of 500 fills up in a long run, where nobody leaves)."""
    rules = default_rules("oslo-sentrum")
    rules["zones"] = {"gym": {"anti_passback": "none"}}
    return rules


def code_member(n: int) -> dict[str, Any]:
    """Member M{n} with the printed code ``MC-{n}`` and a clip card (a charge per entry)."""
    return {
        "member": f"M{n}",
        "credentials": [{"kind": "code", "value": f"MC-{n}"}],
        "contracts": [
            {"id": f"K{n}", "type": "clipcard", "credits": 1_000_000, "start": "2026-01-01"}
        ],
    }


def daemon_config(
    state: Path,
    port: int,
    central_key: str,
    scanner: str,
    *,
    sensor: bool,
    gw: str = GW,
    host: str = "127.0.0.1",
    mqtt: str = "",
    tail: str = "",
) -> str:
    """One entry door (with or without a passage sensor) read by a serial scanner.

    ``mqtt`` adds lines to the ``[mqtt]`` section (e.g. ``keepalive = 5``), ``tail`` whole
    sections at the end (e.g. ``[metrics]``)."""
    passage = 'passage = { board = "io", index = 4 }\npass_timeout = 0.3\n' if sensor else ""
    return f"""
[gateway]
id = "{gw}"
site = "oslo-sentrum"
state_dir = "{state}"
clock = "trusted"
[central]
public_key = "{central_key}"
[mqtt]
host = "{host}"
port = {port}
ack_timeout = 2
{mqtt}
[web]
enabled = false
[[boards]]
id = "io"
profile = "fake-io"
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = {{ board = "io", index = 0 }}
unlock_seconds = 0.1
{passage}
[[readers]]
id = "scan"
profile = "newland-fm430"
door = "in"
port = "{scanner}"
repeat_guard = 0
{tail}
"""


class Daemon:
    """``accessgw run CONFIG`` as a process of its own; ``prefix`` runs it under another
    command (``ip netns exec NS``: the same process, in that network namespace)."""

    def __init__(self, config: Path, log: Path, prefix: tuple[str, ...] = ()) -> None:
        self.config, self.log, self.prefix = config, log, prefix
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "gateway.cli", "run", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


async def until(condition: Any, within: float = 30.0, what: str = "condition") -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > within:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def started(central: Any, gw: str = GW) -> int:
    """How many ``started`` events the central system has from the gateway."""
    got = central.received.get(gw)
    return 0 if got is None else sum(1 for e in got.events if e["type"] == "started")


async def until_granted(central: Any, scanner: Any, gw: str = GW, code: str = "MC-1") -> int:
    """Present ``code`` once a second until the central has a granted check-in from ``gw``
    (a slow machine may take seconds to get the set); how many times it was presented."""
    taps = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while not any(c["decision"] == "granted" for c in central.received[gw].checkins):
        assert loop.time() < deadline, f"no grant at {gw} within 90 s of its first start"
        scanner.scan(code)
        taps += 1
        await asyncio.sleep(1.0)
    return taps


def last_seq(state: Path) -> int:
    """The highest seq the gateway has given out (its journal's ``last_seq``)."""
    conn = sqlite3.connect(state / "journal.sqlite")
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
    finally:
        conn.close()
