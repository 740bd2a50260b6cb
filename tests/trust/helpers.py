"""Gateways of one site for the trust tests: keys, a preloaded set, signed peer messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.daemon import Gateway
from gateway.decision import DoorContext, Presented, Request, decide
from gateway.entitlements import parse_records, parse_rules
from gateway.identity import load_identity, sign_message
from gateway.passes import make_pass, public_key_b64
from gateway.sync.envelopes import canonical
from gateway.sync.peers import PeerEffects
from gateway.uuid7 import uuid7
from tests.integration.gateways import config as config  # the end-to-end tests' gateway

SITE = "oslo-sentrum"
PHONE = Ed25519PrivateKey.generate()


def rules(gateways: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A site with a gym (hard anti-passback, capacity 10), a spa (2 credits) and keys."""
    return {
        "site": SITE,
        "timezone": "Europe/Oslo",
        "zones": {
            "gym": {"capacity": 10, "anti_passback": "hard"},
            "spa": {"credits": 2},
        },
        "anti_passback_minutes": 15,
        "gateways": gateways,
        **extra,
    }


def records() -> list[dict[str, Any]]:
    """M1 recurring with a phone; M2 a clip card with no credits left; M3 one credit left;
    ticket T-1 with two uses."""
    now = datetime.now(UTC)
    return [
        {"member": "M1", "display": "Kari",
         "credentials": [{"kind": "nfc", "uid": "04000001"},
                         {"kind": "phone", "device": "dev-1", "key": public_key_b64(PHONE),
                          "bound_at": "2026-01-01T00:00:00+00:00"}],
         "contracts": [{"id": "C1", "type": "recurring", "start": "2020-01-01"}]},
        {"member": "M2", "credentials": [{"kind": "nfc", "uid": "04000002"}],
         "contracts": [{"id": "K2", "type": "clipcard", "start": "2020-01-01", "credits": 0}]},
        {"member": "M3", "credentials": [{"kind": "nfc", "uid": "04000003"}],
         "contracts": [{"id": "K3", "type": "clipcard", "start": "2020-01-01", "credits": 1}]},
        {"ticket": "T-1", "code": "EVT-1", "uses": 2, "zones": ["gym"],
         "valid_from": (now - timedelta(hours=1)).isoformat(),
         "valid_to": (now + timedelta(hours=3)).isoformat()},
    ]  # fmt: skip


def phone_pass(t: int | None = None) -> str:
    """A fresh phone pass of M1's bound phone."""
    return make_pass(PHONE, "M1", "dev-1", int(time.time()) if t is None else t)


def gateway_key(state: Path, gw: str) -> str:
    """The gateway's public key, its key pair made as on first start."""
    return load_identity(gw, SITE, state).public_key_b64


def preload(gateway: Gateway, set_rules: dict[str, Any], version: int = 1) -> None:
    """Put a set straight into the gateway's store (no central system needed)."""
    parsed = parse_rules(set_rules)
    gateway.store.replace(version, parsed, parse_records(records(), parsed), {},
                          datetime.now(UTC))  # fmt: skip


@dataclass
class Peer:
    """A gateway of the site played by the test: it signs with its own key."""

    gw: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0

    @property
    def public_key_b64(self) -> str:
        return public_key_b64(self.key)

    def checkin(self, **fields: Any) -> dict[str, Any]:
        """A granted, walked-through entry at this peer (fields override)."""
        self.seq += 1
        out = {"id": str(uuid7()), "seq": self.seq, "gw": self.gw,
               "at": datetime.now(UTC).isoformat(timespec="milliseconds"), "door": "side-in",
               "zone": "gym", "direction": "in", "credential": "nfc", "member": "M1",
               "ticket": None, "decision": "granted", "reason": "ok", "contract": "C1",
               "charged": 0, "passed": True, "warnings": [], "offline": False,
               "entitlements_version": 1}  # fmt: skip
        out.update(fields)
        return out

    def sign(self, message: dict[str, Any], key: Ed25519PrivateKey | None = None) -> bytes:
        """The message as this peer publishes it (signed with ``key``, default its own)."""
        return canonical(sign_message(message, self.gw, key or self.key))


def probe(gateway: Gateway, kind: str, value: str, door: str = "in") -> str:
    """The decision's reason now, without presenting (nothing changes)."""
    place = gateway.entrances[door].place
    context = DoorContext(place.id, place.zone, place.direction, site=SITE)  # type: ignore[arg-type]
    request = Request(Presented(kind, value), context, datetime.now(UTC))
    return decide(request, gateway.store, gateway.state).reason


async def until(condition: Callable[[], Any], within: float = 10.0) -> None:
    """Wait for ``condition()``."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def bad_messages(gateway: Gateway) -> list[dict[str, Any]]:
    """The bad_message events the installer sees."""
    return [i["detail"] for i in gateway.activity.items
            if i["kind"] == "event" and i.get("type") == "bad_message"]  # fmt: skip


def kept_at_once(checkin: dict[str, Any]) -> asyncio.Future[bool]:
    """A peer inbox's ``keep_checkin`` for tests of the inbox alone: kept, and new."""
    kept: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    kept.set_result(True)
    return kept


async def keep_and_apply(effects: PeerEffects, checkin: dict[str, Any]) -> bool:
    """A peer's check-in kept and applied, as the inbox does it."""
    return await effects.apply(checkin, effects.keep(checkin))
