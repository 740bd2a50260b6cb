"""Is requirements.lock current? Offline: it must match pyproject.toml's dependencies.

The lock records a digest of the dependency lists it was made from; every direct
requirement must be met by a pinned version, and every pin must carry hashes.
Exit 1 with what to do when not. ``--digest-line`` prints the line scripts/lock.sh writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("osdp", "gpio")  # what the appliance installs (docs/install.md)
DIGEST = re.compile(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", re.M)
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$", re.M)


def direct_requirements() -> list[str]:
    """The dependency lines the lock is made from."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + [r for e in EXTRAS for r in extras.get(e, [])]


def digest() -> str:
    """A digest of the direct requirements (order and spacing do not matter)."""
    lines = sorted(str(Requirement(r)) for r in direct_requirements())
    return hashlib.sha256(json.dumps(lines).encode()).hexdigest()


def problems(lock_text: str) -> list[str]:
    """Why the lock does not fit pyproject.toml (empty when it does)."""
    found = DIGEST.search(lock_text)
    out = []
    if found is None or found.group(1) != digest():
        out.append("pyproject.toml's dependencies changed since the lock was made")
    pins: dict[str, Version] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock_text)
    for block in blocks:
        match = PIN.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        pins[name] = Version(match.group(2))
        if "--hash=sha256:" not in block:
            out.append(f"{name} has no hashes")
    for line in direct_requirements():
        req = Requirement(line)
        env_ok = req.marker is None or req.marker.evaluate()
        version = pins.get(canonicalize_name(req.name))
        if version is None and env_ok:
            out.append(f"{req.name} is not in the lock")
        elif version is not None and not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name}=={version} in the lock does not meet {req.specifier}")
    return out


def main(argv: list[str]) -> int:
    if argv == ["--digest-line"]:
        print(f"# pyproject-dependencies-sha256: {digest()}")
        return 0
    path = ROOT / "requirements.lock"
    if not path.exists():
        print("requirements.lock is missing: run scripts/lock.sh", file=sys.stderr)
        return 1
    found = problems(path.read_text())
    for problem in found:
        print(f"requirements.lock: {problem}", file=sys.stderr)
    if found:
        print("requirements.lock is stale: run scripts/lock.sh and commit it", file=sys.stderr)
        return 1
    print("requirements.lock is current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
