"""The gateway's background processes run behind the doors' process (gateway.niceness).

Under load almost every late wake of the doors' loop was a wait for a core (the loop-lag
bench, 2026-12-02): the wire, web UI, snapshot builder and delta worker lower their own
CPU priority as they start, and say so when the system refuses. The doors' process asks
for short time slices (Linux 6.12+), which the background processes give back.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

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


# --- time slices ---------------------------------------------------------------------------


def slice_ns(path: str = "/proc/thread-self/sched") -> int:
    """A thread's slice as the kernel's scheduler statistics show it."""
    with open(path) as f:
        for line in f:
            if line.startswith("se.slice"):
                return int(line.split(":")[1])
    pytest.skip("this kernel does not show a thread's slice")


needs_slices = pytest.mark.skipif(
    niceness.slices_supported() is not None or not os.path.exists("/proc/thread-self/sched"),
    reason=f"no per-thread slice request here: {niceness.slices_supported()}",
)


@needs_slices
async def test_a_running_gateway_has_short_slices_and_its_wire_process_gives_them_back(
    tmp_path, broker
):
    from gateway.config import parse_config
    from gateway.daemon import Gateway
    from gateway.identity import load_identity

    niceness.give_back_slice("test")  # whatever an earlier test in this process asked for
    assert slice_ns() != niceness.SHORT_SLICE_NS
    central_key = load_identity("central", SITE, tmp_path / "central").public_key_b64
    text = config(tmp_path, "door-1", broker.port, central_key)
    gw = Gateway(parse_config(text, "test"), backoff=FAST)
    await gw.start()
    try:
        loop_thread = f"/proc/self/task/{threading.get_native_id()}/sched"
        assert slice_ns(loop_thread) == niceness.SHORT_SLICE_NS
        await until(lambda: gw.sync is not None and gw.sync.wire.process is not None)
        assert gw.sync is not None and gw.sync.wire.process is not None
        pid = gw.sync.wire.process.pid
        await until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == behind_us(niceness.WIRE))
        assert slice_ns(f"/proc/{pid}/sched") != niceness.SHORT_SLICE_NS
    finally:
        await gw.stop()
        niceness.give_back_slice("test")


@needs_slices
def test_a_background_process_gives_back_the_short_slices_it_inherited():
    code = (
        "from gateway import niceness as n\n"
        "from tests.core.test_niceness import slice_ns\n"
        "assert n.ask_for_short_slices('doors')\n"
        "before = slice_ns()\n"
        "n.lower_own_priority('web UI', 1)\n"
        "print(before, slice_ns())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    before, after = map(int, out.split())
    assert before == niceness.SHORT_SLICE_NS
    assert after != niceness.SHORT_SLICE_NS


def test_slices_are_asked_for_only_where_the_kernel_takes_them(monkeypatch):
    def system(release: str, machine: str = "aarch64", sysname: str = "Linux") -> None:
        uname = SimpleNamespace(sysname=sysname, release=release, machine=machine)
        monkeypatch.setattr(niceness.os, "uname", lambda: uname)

    for release in ("6.12.0", "6.18.44-fc-v669", "7.0.1+rpt-rpi-v8"):
        system(release)
        assert niceness.slices_supported() is None, release
    system("6.6.51+rpt-rpi-v8")
    assert "Linux 6.12 and later" in (niceness.slices_supported() or "")
    system("6.1.0-28-arm64")
    assert "6.1.0-28-arm64" in (niceness.slices_supported() or "")
    system("6.12.0", machine="ppc64le")
    assert "no per-thread slice request" in (niceness.slices_supported() or "")
    system("23.1.0", machine="arm64", sysname="Darwin")
    assert "Darwin" in (niceness.slices_supported() or "")


def test_an_old_kernel_is_noted_and_nothing_is_asked(monkeypatch, caplog):
    monkeypatch.setattr(niceness, "slices_supported", lambda: "kernel 6.1.0 takes no ...")

    def never(ns: int, tid: int = 0) -> None:
        raise AssertionError("asked a kernel that does not take it")

    monkeypatch.setattr(niceness, "_set_slice", never)
    with caplog.at_level(logging.INFO, logger="gateway.niceness"):
        assert niceness.ask_for_short_slices("doors' process") is False
        niceness.give_back_slice("web UI")
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "doors' process: runs with the kernel's default time slices" in record.getMessage()


def test_a_refused_slice_is_logged_with_its_cause_and_the_process_goes_on(monkeypatch, caplog):
    monkeypatch.setattr(niceness, "slices_supported", lambda: None)

    def refused(ns: int, tid: int = 0) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(niceness, "_set_slice", refused)
    with caplog.at_level(logging.WARNING, logger="gateway.niceness"):
        assert niceness.ask_for_short_slices("doors' process") is False
        niceness.give_back_slice("web UI")
    first, second = caplog.records
    assert "doors' process: short time slices refused" in first.getMessage()
    assert "web UI: could not give back its short time slices" in second.getMessage()
    assert all("Operation not permitted" in r.getMessage() for r in caplog.records)


# --- the doors' loop thread at real-time priority 1 -------------------------------------------

# Run in a process of its own: pytest's thread must not stay real-time for the other tests.
LOOP_FIRST = """
import json, logging, os, threading
from gateway import niceness
logging.basicConfig(level=logging.INFO)
taken = niceness.doors_loop_first("doors' event loop")
started = {}
def child():
    started["policy"] = os.sched_getscheduler(0)
thread = threading.Thread(target=child)
thread.start(); thread.join()
print(json.dumps({"taken": taken, "loop": os.sched_getscheduler(0),
                  "priority": os.sched_getparam(0).sched_priority, "thread": started["policy"]}))
"""


def run_loop_first(*prefix: str) -> tuple[dict[str, object], str]:
    done = subprocess.run([*prefix, sys.executable, "-c", LOOP_FIRST], capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    return json.loads(done.stdout), done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time priority needs root or LimitRTPRIO")
def test_the_loop_thread_runs_real_time_and_what_it_starts_does_not():
    got, _ = run_loop_first()
    assert got["taken"] is True
    # SCHED_FIFO, priority 1, and the flag that keeps it from what the thread starts
    assert got["loop"] == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert got["priority"] == niceness.REALTIME_PRIORITY
    assert got["thread"] == os.SCHED_OTHER  # the journal's, store's, history's threads


def test_a_refused_real_time_priority_is_logged_and_the_loop_runs_on(monkeypatch, caplog):
    def refused(attr: object, tid: int = 0) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(niceness, "_sched_setattr", refused)
    with caplog.at_level(logging.INFO, logger="gateway.niceness"):
        assert niceness.doors_loop_first("doors' event loop") is False
    [record] = caplog.records
    message = record.getMessage()
    assert "doors' event loop: runs under the ordinary policy" in message
    assert "Operation not permitted" in message and "LimitRTPRIO=1" in message
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # nothing was changed


def test_another_system_is_noted_and_nothing_is_asked(monkeypatch, caplog):
    uname = SimpleNamespace(sysname="Darwin", release="23.1.0", machine="arm64")
    monkeypatch.setattr(niceness.os, "uname", lambda: uname)

    def never(attr: object, tid: int = 0) -> None:
        raise AssertionError("asked a system that has no sched_setattr")

    monkeypatch.setattr(niceness, "_sched_setattr", never)
    with caplog.at_level(logging.INFO, logger="gateway.niceness"):
        assert niceness.doors_loop_first("doors' event loop") is False
    [record] = caplog.records
    assert record.getMessage() == (
        "doors' event loop: runs under the ordinary policy (Darwin on arm64)"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop its capabilities")
def test_without_the_right_the_kernel_itself_refuses_and_the_loop_runs_on():
    # As under a unit without LimitRTPRIO: no capability, RLIMIT_RTPRIO 0
    if subprocess.run(["sh", "-c", "command -v setpriv prlimit"], capture_output=True,
                      check=False).returncode != 0:  # fmt: skip
        pytest.skip("setpriv and prlimit (util-linux) are not installed")
    dropped = ["prlimit", "--rtprio=0", "setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    got, err = run_loop_first(*dropped)
    assert got["taken"] is False and got["loop"] == os.SCHED_OTHER
    assert "runs under the ordinary policy" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time priority needs root or LimitRTPRIO")
def test_accessgw_run_puts_its_loop_first_and_its_other_threads_not(tmp_path):
    from tests.ops.helpers import Daemon, minimal_config

    path = tmp_path / "gateway.toml"
    path.write_text(minimal_config(tmp_path / "state"))
    daemon = Daemon(path)
    real_time = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        daemon.wait_for("started")  # logged by the start, which the loop's change follows
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(daemon.proc.pid) != real_time:
            assert time.monotonic() < deadline, "the loop's thread never went real-time"
            time.sleep(0.05)
        # the main thread runs the event loop; the journal's, store's, history's do not
        threads = [int(t) for t in os.listdir(f"/proc/{daemon.proc.pid}/task")]
        others = [t for t in threads if t != daemon.proc.pid]
        assert others and all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in others)
    finally:
        assert daemon.stop() == 0
