"""Locked dependencies (issue 13 point 7): floors past known advisories, a current lock."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
sys.path.insert(0, str(ROOT / "scripts"))
import check_lock  # noqa: E402


def requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d) for d in deps if Requirement(d).name == name)


def test_floors_are_past_the_known_advisories():
    cryptography = requirement("cryptography").specifier
    assert Version("44.0.0") not in cryptography  # bundled OpenSSL with CVE-2024-12797
    assert Version("44.0.1") in cryptography
    h11 = requirement("h11").specifier
    assert Version("0.14.0") not in h11 and Version("0.16.0") in h11  # CVE-2025-43859


@pytest.mark.skipif(not LOCK.exists(), reason="requirements.lock lands at the end of the day")
def test_the_lock_is_current_with_pyproject():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_lock.py")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr  # stale: run scripts/lock.sh and commit it


@pytest.mark.skipif(not LOCK.exists(), reason="requirements.lock lands at the end of the day")
def test_every_pin_in_the_lock_has_hashes_and_meets_the_floors():
    text = LOCK.read_text()
    assert check_lock.problems(text) == []
    pins = dict(m.group(1, 2) for m in check_lock.PIN.finditer(text))
    assert Version(pins["cryptography"]) >= Version("44.0.1")
    assert Version(pins["h11"]) >= Version("0.16")


def test_a_stale_lock_is_caught_with_what_to_do():
    lock = (
        "# pyproject-dependencies-sha256: " + "0" * 64 + "\n"
        "cryptography==44.0.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "h11==0.14.0\n"
    )
    found = check_lock.problems(lock)
    assert "pyproject.toml's dependencies changed since the lock was made" in found
    assert "cryptography==44.0.0 in the lock does not meet <51,>=44.0.1" in found
    assert "h11 has no hashes" in found
    assert "aiomqtt is not in the lock" in found
