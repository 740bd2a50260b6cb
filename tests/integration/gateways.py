"""Whole gateways for end-to-end tests: config, start and stop, presenting a credential."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_config
from gateway.daemon import Gateway
from gateway.identity import load_identity
from gateway.readers import CredentialRead
from simulators.central import CentralSimulator

SITE = "oslo-sentrum"
RULES: dict[str, Any] = {
    "site": SITE,
    "timezone": "Europe/Oslo",
    "schedules": {},
    "opening_schedule": None,
    "zones": {"gym": {"capacity": 100}, "hall": {}},
    "reentry_free_minutes": 0,
}


def member(n: int, **extra: Any) -> dict[str, Any]:
    """Member M{n} with card 04{n:06X} and a recurring contract."""
    return {
        "member": f"M{n}",
        "display": f"Member {n}",
        "credentials": [{"kind": "nfc", "uid": f"04{n:06X}"}],
        "contracts": [{"id": "C1", "type": "recurring", "start": "2026-01-01"}],
        **extra,
    }


def ticket(ticket_id: str = "T-1", code: str = "EVT-1") -> dict[str, Any]:
    """A single-use ticket for the gym, valid around now."""
    now = datetime.now(UTC)
    return {
        "ticket": ticket_id,
        "code": code,
        "zones": ["gym"],
        "uses": 1,
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "valid_to": (now + timedelta(hours=3)).isoformat(),
    }


def config(
    state: Path,
    gw: str,
    port: int,
    key: str,
    *,
    readers: str = "",
    ack_timeout: float = 2,
    mqtt: str = "",
) -> str:
    """A gateway with one entry door and one exit on a fake board; MQTT to the test broker
    (``mqtt``: more lines of the [mqtt] table, or a [mqtt.tls] table)."""
    return f"""
[gateway]
id = "{gw}"
site = "{SITE}"
state_dir = "{state}"
clock = "trusted"
[central]
public_key = "{key}"
[mqtt]
host = "127.0.0.1"
port = {port}
ack_timeout = {ack_timeout}
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
unlock_seconds = 0.2
[[doors]]
id = "out"
zone = "gym"
direction = "out"
lock = {{ board = "io", index = 1 }}
unlock_seconds = 0.2
{readers}
"""


async def register(central: CentralSimulator, cfg: Config) -> str:
    """Make the gateway's key pair (as on its first start) and register it with the central
    system, which hands it to the site's gateways in ``rules.gateways``; the key."""
    key = load_identity(cfg.gateway.id, cfg.gateway.site, cfg.gateway.state_dir).public_key_b64
    await central.register_gateway(cfg.gateway.id, key)
    return key


@contextlib.asynccontextmanager
async def running(text: str, central: CentralSimulator | None = None) -> AsyncIterator[Gateway]:
    """A started gateway (registered with ``central`` first, if given), stopped afterwards."""
    cfg = parse_config(text, "test config")
    if central is not None:
        await register(central, cfg)
    gateway = Gateway(cfg)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def present(gateway: Gateway, kind: str, value: str, door: str = "in") -> dict[str, Any]:
    """Present a credential at a door as a reader would; the final check-in."""
    read = CredentialRead("test-reader", kind, value, datetime.now(UTC))  # type: ignore[arg-type]
    return await gateway.entrances[door].present(read)
