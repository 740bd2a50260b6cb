"""Shorthands for decision tests: present a credential at a door at an instant."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.decision import Decision, DoorContext, Presented, Request, decide
from gateway.passes import make_pass, public_key_b64
from gateway.state import LocalState, Passage
from tests.support.sets import MemorySet, rules

WED_10 = "2026-11-25T10:00:00+01:00"  # a Wednesday, inside opening hours and off-peak
PHONE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def at(text: str) -> datetime:
    """An instant from ISO text."""
    return datetime.fromisoformat(text)


def phone(device: str = "dev-1", bound_at: str = "2026-11-01T10:00:00+01:00") -> dict[str, Any]:
    """A phone credential bound to PHONE_KEY."""
    return {
        "kind": "phone",
        "device": device,
        "key": public_key_b64(PHONE_KEY),
        "bound_at": bound_at,
    }


def token(
    member: str = "M1",
    device: str = "dev-1",
    when: str = WED_10,
    key: Any = None,
    nonce: bytes = b"\x01" * 12,
) -> str:
    """A phone pass made at ``when`` (unix seconds)."""
    return make_pass(key or PHONE_KEY, member, device, int(at(when).timestamp()), nonce)


def passage(
    member: str, zone: str, direction: str, when: str, contract: str | None = None
) -> Passage:
    """A passage in local state."""
    return Passage(member, zone, direction, at(when), contract)  # type: ignore[arg-type]


def check(
    records: list[dict[str, Any]],
    *,
    when: str = WED_10,
    nfc: str | None = "04A1B2C3",
    code: str | None = None,
    pass_token: str | None = None,
    zone: str = "gym",
    direction: str = "in",
    state: LocalState | None = None,
    site_rules: dict[str, Any] | None = None,
    site: str | None = None,
) -> Decision:
    """Decide one presentation against ``records`` under the example site rules."""
    view = MemorySet(site_rules or rules(), records)
    if pass_token is not None:
        presented = Presented("pass", pass_token)
    elif code is not None:
        presented = Presented("code", code)
    else:
        assert nfc is not None
        presented = Presented("nfc", nfc)
    door = DoorContext("door-1", zone, direction, site=site)  # type: ignore[arg-type]
    return decide(Request(presented, door, at(when)), view, state or LocalState())


def b64(data: bytes) -> str:
    """Standard base64."""
    return base64.b64encode(data).decode()
