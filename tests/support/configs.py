"""Config texts the tests share."""

from __future__ import annotations

from pathlib import Path


def standalone_header(state: Path, gw: str = "gw-1", site: str = "oslo") -> str:
    """The start of a config for a gateway on its own: trusted clock, no broker, no web UI.
    Boards, doors and readers follow."""
    return f"""
[gateway]
id = "{gw}"
site = "{site}"
state_dir = "{state}"
clock = "trusted"
[mqtt]
enabled = false
[web]
enabled = false
"""
