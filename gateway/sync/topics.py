"""MQTT topic names (PROTOCOL.md, Topics): building them and telling what an inbound one is.

Every topic is ``acs/v1/{site}/...``; site and gateway ids are ``[a-z0-9-]{1,64}``.
Site-wide topics are ``entitlements/delta`` and ``time``; per-gateway topics are
``gw/{gw}/{kind}`` where kind is e.g. ``delta``, ``snapshot``, ``cmd``, ``checkin``,
``checkin/ack``, ``event``, ``sync``, ``cmd/result``, ``status``, ``occupancy``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "acs/v1"
ID = re.compile(r"[a-z0-9-]{1,64}")

SITE_KINDS = ("entitlements/delta", "time")
GW_KINDS = (
    "delta",
    "snapshot",
    "cmd",
    "cmd/result",
    "checkin",
    "checkin/ack",
    "event",
    "sync",
    "status",
    "occupancy",
)


# Size limits per topic kind, checked before a message is parsed (PROTOCOL.md, Trust between
# gateways, "Size before parsing"). ``gw/{gw}/delta`` also carries ``time``: it takes the
# delta's limit, and the time envelope is checked again for its own once opened.
MiB, KiB = 2**20, 2**10
MAX_BYTES = {
    "entitlements/delta": 16 * MiB,
    "delta": 16 * MiB,
    "snapshot": 16 * MiB,
    "cmd": 64 * KiB,
    "time": 4 * KiB,
    "checkin/ack": 4 * KiB,
    "occupancy": 4 * KiB,
    "sync": 4 * KiB,
    "checkin": 16 * KiB,
    "event": 16 * KiB,
    "cmd/result": 4 * KiB,
    "status": 16 * KiB,
}
MAX_TIME = 4 * KiB


def max_bytes(name: str) -> int:
    """The size limit of the topic ``name``; the smallest (4 KiB) for unknown topics."""
    where = parse(name)
    return MAX_BYTES.get(where.kind, 4 * KiB) if where is not None else 4 * KiB


def valid_id(value: str) -> bool:
    """True for a site or gateway id of ``[a-z0-9-]{1,64}``."""
    return ID.fullmatch(value) is not None


def topic(site: str, *parts: str) -> str:
    """The full topic ``acs/v1/{site}/{parts...}``, e.g. ``topic(site, "gw", gw, "sync")``."""
    if not valid_id(site):
        raise ValueError(f"site id {site!r} must match [a-z0-9-]{{1,64}}")
    return "/".join((PREFIX, site, *parts))


def gw_topic(site: str, gw: str, kind: str) -> str:
    """The per-gateway topic ``acs/v1/{site}/gw/{gw}/{kind}``."""
    if not valid_id(gw):
        raise ValueError(f"gateway id {gw!r} must match [a-z0-9-]{{1,64}}")
    return topic(site, "gw", gw, kind)


@dataclass(frozen=True)
class Topic:
    """What an inbound topic is: its site, its gateway (None for site-wide) and its kind."""

    site: str
    gw: str | None
    kind: str


def parse(name: str) -> Topic | None:
    """Tell which site, gateway and kind ``name`` is; None for anything not in PROTOCOL.md."""
    parts = name.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != PREFIX or not valid_id(parts[2]):
        return None
    site, rest = parts[2], parts[3:]
    joined = "/".join(rest)
    if joined in SITE_KINDS:
        return Topic(site, None, joined)
    if len(rest) >= 3 and rest[0] == "gw" and valid_id(rest[1]):
        kind = "/".join(rest[2:])
        if kind in GW_KINDS:
            return Topic(site, rest[1], kind)
    return None
