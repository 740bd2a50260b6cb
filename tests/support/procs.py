"""Processes as the kernel lists them (``/proc``): a test's children, and whether one is gone."""

from __future__ import annotations

from pathlib import Path


def state(pid: int) -> str:
    """The process's state letter (``R``, ``S``, ``Z``...), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def children(pid: int, command: str = "") -> set[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``command``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == pid and command in cmdline:
            found.add(int(stat.parent.name))
    return found
