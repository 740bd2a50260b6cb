"""Rows and states in words an installer reads at a glance, in the site's time zone."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.entitlements import Member, Ticket
from gateway.messages import render

# events in words (English; decisions use the site's language through gateway.messages)
EVENT_WORDS = {
    "started": "Gateway started",
    "stopping": "Gateway stopping",
    "reader_online": "Reader online",
    "reader_offline": "Reader offline",
    "tamper": "Reader tamper switch",
    "reader_power": "Reader power",
    "reader_keypad": "Keys pressed at a reader",
    "board_online": "Relay board online",
    "board_offline": "Relay board unreachable",
    "relay_fault": "Relay fault",
    "lockdown": "Lockdown",
    "door_forced": "Door forced open",
    "door_held_open": "Door held open",
    "emergency_release": "Emergency release (fire)",
    "emergency_cleared": "Emergency release ended",
    "installer_action": "Installer action",
    "clock_unsynced": "Clock not synced",
    "ticket_double_use": "Ticket used twice",
    "bad_message": "Refused message",
    "component_failed": "A part of the gateway failed",
}


def local_time(at: str, tz: str) -> str:
    """``at`` (ISO 8601) as the site's wall-clock time, e.g. ``2026-12-02 09:14:03``."""
    try:
        zone = ZoneInfo(tz)
        return datetime.fromisoformat(at).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, KeyError, OSError):
        return at


def row_words(row: dict[str, Any], language: str) -> str:
    """What happened, in words."""
    body = row.get("body") or {}
    if row["kind"] == "decision":
        return render(row["what"], row.get("display"), language)
    text = EVENT_WORDS.get(row["what"], row["what"].replace("_", " ").capitalize())
    detail = body.get("detail") or {}
    extra = [
        str(detail[k]).replace("_", " ")
        for k in ("action", "test", "reader", "board", "output", "reason", "why", "cause", "state")
        if isinstance(detail, dict) and detail.get(k) not in (None, "")
    ]
    return f"{text}: {', '.join(extra)}" if extra else text


def shown(row: dict[str, Any], tz: str, language: str) -> dict[str, Any]:
    """A stored row with its local time and words added (what pages and the API show)."""
    body = row.get("body") or {}
    return {
        **row,
        "local": local_time(row["at"], tz),
        "text": row_words(row, language),
        "warnings": body.get("warnings") or [],
        "trace": body.get("trace") or [],
        "latency_ms": body.get("latency_ms"),
    }


def duration(seconds: int | None) -> str:
    """``3 d 4 h``, ``5 min``, ``12 s``."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"


def describe_record(record: Member | Ticket) -> dict[str, Any]:
    """A member or ticket for the installer: what the decision looks at, without secrets."""
    data = record.model_dump(mode="json")
    creds = data.pop("credentials", None) or []
    data["credentials"] = [c.get("kind", "?") for c in creds if isinstance(c, dict)]
    return {"id": record.id, "record": data}
