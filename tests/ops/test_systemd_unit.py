"""The hardened unit (issue 13 point 4): confined, rated OK, valid, with Debian's groups."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "accessgw.service"
GPIO_DROP_IN = ROOT / "systemd" / "accessgw.service.d" / "gpio.conf"
GPIO_RULE = ROOT / "udev" / "60-accessgw-gpio.rules"
DEBIAN_GROUPS = {"dialout"}  # Debian 12 has no gpio group

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def standin_unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at a file that exists here."""
    exe = tmp_path / "accessgw"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "accessgw.service"
    unit.write_text(UNIT.read_text().replace("/opt/accessgw/.venv/bin/accessgw", str(exe)))
    return unit


def test_the_unit_has_every_hardening_setting_the_issue_lists():
    unit = settings(UNIT.read_text())
    expected = {
        "UMask": ["0077"],
        "CapabilityBoundingSet": [""],
        "DevicePolicy": ["closed"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "ProtectClock": ["yes"],
        "ProtectHostname": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "ProtectKernelLogs": ["yes"],
        "ProtectControlGroups": ["yes"],
        "ProtectProc": ["invisible"],
        "ProcSubset": ["pid"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "RestrictNamespaces": ["yes"],
        # the doors' loop thread at real-time priority 1, and no higher (gateway/niceness.py)
        "RestrictRealtime": ["no"],
        "LimitRTPRIO": ["1"],
        "RestrictSUIDSGID": ["yes"],
        "LockPersonality": ["yes"],
        "RemoveIPC": ["yes"],
        "PrivateMounts": ["yes"],
        "SystemCallArchitectures": ["native"],
        "SystemCallFilter": [
            "@system-service",
            "~@privileged @resources",
            "setpriority sched_setattr",
        ],
        "StateDirectoryMode": ["0700"],
    }
    for key, value in expected.items():
        assert unit.get(key) == value, key
    devices = {d.split()[0] for d in unit["DeviceAllow"]}
    assert devices == {f"char-{n}" for n in ("ttyUSB", "ttyAMA", "ttyS", "ttyACM", "gpiochip")}


def test_the_unit_names_only_groups_debian_has_and_gpio_comes_with_its_udev_rule():
    groups = set(" ".join(settings(UNIT.read_text())["SupplementaryGroups"]).split())
    assert groups <= DEBIAN_GROUPS
    assert settings(GPIO_DROP_IN.read_text())["SupplementaryGroups"] == ["gpio"]
    rule = GPIO_RULE.read_text()
    assert re.search(r'KERNEL=="gpiochip\*".*GROUP="gpio".*MODE="0660"', rule)
    install = (ROOT / "docs" / "install.md").read_text()
    assert "groupadd --system gpio" in install and "60-accessgw-gpio.rules" in install


@needs_systemd
def test_systemd_rates_the_unit_2_or_better(tmp_path):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(standin_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for accessgw.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


@needs_systemd
def test_systemd_verifies_the_unit_and_its_gpio_drop_in_without_a_word(tmp_path):
    unit = standin_unit(tmp_path)
    (tmp_path / "accessgw.service.d").mkdir()
    shutil.copy(GPIO_DROP_IN, tmp_path / "accessgw.service.d" / "gpio.conf")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # verify exits 0 on some warnings


def syscalls(name: str) -> set[str]:
    """The system calls a filter entry names, groups expanded (``systemd-analyze``)."""
    if not name.startswith("@"):
        return {name}
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", name],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    found: set[str] = set()
    for line in listing.splitlines()[1:]:  # the first line is the group's own name
        entry = line.strip()
        if entry and not entry.startswith("#"):
            found |= syscalls(entry)
    return found


def allowed_syscalls(unit_text: str) -> set[str]:
    """What the unit's SystemCallFilter= lines let through, as systemd merges them: the first
    line is an allow list, a later ``~`` line takes names out of it, a later plain line
    puts names back."""
    allowed: set[str] = set()
    lines = settings(unit_text)["SystemCallFilter"]
    assert not lines[0].startswith("~"), "the first line must be an allow list"
    for value in lines:
        names = set().union(*(syscalls(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


@needs_systemd
def test_the_unit_lets_background_processes_lower_their_priority_and_nothing_more():
    # The wire, web UI, snapshot builder and delta worker lower their own priority, and
    # the doors' process asks for short time slices (gateway/niceness.py); under a filter
    # that refuses setpriority or sched_setattr they could not, and the doors' process
    # would share every busy core with them as an equal.
    allowed = allowed_syscalls(UNIT.read_text())
    assert {"setpriority", "sched_setattr"} <= allowed
    for other in ("sched_setscheduler", "sched_setparam", "setrlimit", "ioprio_set", "reboot"):
        assert other not in allowed, other
