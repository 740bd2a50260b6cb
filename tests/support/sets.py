"""Builders for entitlement sets in the wire format, and a plain in-memory view of one.

The decision is tested over plain data: :class:`MemorySet` implements the read-only
view the decision needs with dicts, matching credentials as the store does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from gateway.entitlements import (
    Member,
    SiteRules,
    Ticket,
    credential_key,
    parse_records,
    parse_rules,
)

RULES: dict[str, Any] = {
    "site": "oslo-sentrum",
    "timezone": "Europe/Oslo",
    "schedules": {
        "open": [
            {"days": "mon-fri", "from": "05:00", "to": "23:00"},
            {"days": "sat-sun", "from": "07:00", "to": "21:00"},
        ],
        "offpeak": [
            {"days": "mon-fri", "from": "09:00", "to": "15:00"},
            {"days": "sat-sun", "from": "07:00", "to": "21:00"},
        ],
        "night": [{"days": "fri", "from": "22:00", "to": "02:00"}],
    },
    "opening_schedule": "open",
    "staff_schedule": None,
    "zones": {
        "gym": {"capacity": 120, "anti_passback": "hard"},
        "spa": {"capacity": 20, "credits": 2},
        "pool": {"anti_passback": "soft"},
        "squash-2": {"booking": True, "booking_early_minutes": 30},
    },
    "unpaid": "deny",
    "medical": "allow",
    "reentry_free_minutes": 240,
    "anti_passback_minutes": 15,
    "max_offline_hours": 72,
}


def rules(**overrides: Any) -> dict[str, Any]:
    """The example site rules of ENTITLEMENTS.md, with overrides."""
    out = copy.deepcopy(RULES)
    out.update(overrides)
    return out


def member(member_id: str = "M1", **overrides: Any) -> dict[str, Any]:
    """A member with one NFC card (UID 04A1B2C3) and one open-ended recurring contract."""
    out: dict[str, Any] = {
        "member": member_id,
        "display": "Kari N.",
        "role": "member",
        "credentials": [{"kind": "nfc", "uid": "04A1B2C3"}],
        "contracts": [contract("C1")],
    }
    out.update(overrides)
    return out


def contract(contract_id: str, type_: str = "recurring", **overrides: Any) -> dict[str, Any]:
    """A contract started 2026-01-01, open-ended, all sites, all zones."""
    out: dict[str, Any] = {"id": contract_id, "type": type_, "start": "2026-01-01", "end": None}
    if type_ == "clipcard":
        out["credits"] = 8
    out.update(overrides)
    return out


def ticket(ticket_id: str = "T-1", **overrides: Any) -> dict[str, Any]:
    """A single-use ticket for the hall, valid the evening of 2026-11-22."""
    out: dict[str, Any] = {
        "ticket": ticket_id,
        "code": "EVT-1",
        "valid_from": "2026-11-22T18:00:00+01:00",
        "valid_to": "2026-11-22T23:00:00+01:00",
        "zones": ["hall"],
        "uses": 1,
    }
    out.update(overrides)
    return out


class MemorySet:
    """A validated entitlement set held in dicts; the decision's read-only view."""

    def __init__(self, rules_raw: dict[str, Any], records_raw: Iterable[dict[str, Any]]) -> None:
        self._rules: SiteRules = parse_rules(rules_raw)
        self._by_key: dict[str, Member | Ticket] = {}
        self._members: dict[str, Member] = {}
        for record in parse_records(list(records_raw), self._rules):
            for key in record.credential_keys():
                self._by_key[key] = record
            if isinstance(record, Member):
                self._members[record.member] = record

    @property
    def rules(self) -> SiteRules:
        return self._rules

    def find(self, kind: str, value: str, fmt: str | None = None) -> Member | Ticket | None:
        key = credential_key(kind, value, fmt)
        return None if key is None else self._by_key.get(key)

    def member(self, member_id: str) -> Member | None:
        return self._members.get(member_id)
