"""The systemd unit is valid, and sd_notify reaches $NOTIFY_SOCKET."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gateway.systemd import notify, watchdog_interval

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "accessgw.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies_without_warnings(tmp_path):
    # ExecStart must exist for verify: point it at a stand-in with the same arguments.
    exe = tmp_path / "accessgw"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "accessgw.service"
    text = UNIT.read_text().replace("/opt/accessgw/.venv/bin/accessgw", str(exe))
    text = text.replace("User=accessgw\nGroup=accessgw\n", "")
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # verify exits 0 on some parse warnings
    assert "Type=notify" in UNIT.read_text() and "WatchdogSec=" in UNIT.read_text()


def test_notify_sends_a_datagram_to_the_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert server.recv(64) == b"READY=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_watchdog_pings_at_half_the_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert watchdog_interval() is None
