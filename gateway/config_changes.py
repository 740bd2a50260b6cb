"""``config_changed`` at start: which keys differ from the configuration of the previous start
(PROTOCOL.md, Clarifications: Events).

What is kept between starts is one keyed fingerprint (HMAC-SHA256 with the gateway's own
secret) per setting, in the private state directory: enough to tell which keys changed,
never a value, so no secret in the config can be read back from it. Keys are named by path
with the ids of list entries (``mqtt.host``, ``doors[main-in].unlock_seconds``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from gateway.state_dir import write_secret_atomically

FINGERPRINT_FILE = "config.fingerprints.json"


def fingerprints(settings: dict[str, Any], key: bytes) -> dict[str, str]:
    """One keyed fingerprint per setting of ``settings`` (a config as plain JSON data)."""
    return {
        path: hmac.new(key, json.dumps(value, sort_keys=True).encode(), hashlib.sha256).hexdigest()
        for path, value in _leaves("", settings)
    }


def _leaves(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        found: list[tuple[str, Any]] = []
        for name in sorted(value, key=str):
            found += _leaves(f"{prefix}.{name}" if prefix else str(name), value[name])
        return found
    if (
        isinstance(value, list)
        and value
        and all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in value)
    ):
        found = []
        for entry in value:
            found += _leaves(f"{prefix}[{entry['id']}]", entry)
        return found
    return [(prefix, value)]


def changed_since_last_start(settings: dict[str, Any], state_dir: Path, key: bytes) -> list[str]:
    """The keys that differ from the previous start's configuration (none at a first start),
    and this start's fingerprints kept for the next one. Blocking: call it in a thread."""
    path = state_dir / FINGERPRINT_FILE
    now = fingerprints(settings, key)
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(before, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        before = None
    except (OSError, ValueError):  # unreadable: say nothing changed rather than everything
        before = None
    write_secret_atomically(path, json.dumps(now, sort_keys=True).encode())
    if before is None:
        return []
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
