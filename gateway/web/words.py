"""Rows and states in words an installer reads at a glance, in the site's time zone."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.entitlements import Member, Ticket
from gateway.messages import render
from gateway.web.i18n import FAMILIES, say, t

# how each language writes a date and time (the CSV keeps the first, sortable form)
DATE_TIME = {
    "en": "%Y-%m-%d %H:%M:%S",
    "nb": "%d.%m.%Y %H:%M:%S",
    "da": "%d.%m.%Y %H:%M:%S",
    "fr": "%d/%m/%Y %H:%M:%S",
}


def local_time(at: str, tz: str, language: str = "en") -> str:
    """``at`` (ISO 8601) as the site's wall-clock time, e.g. ``2026-12-02 09:14:03`` (en),
    ``02.12.2026 09:14:03`` (nb)."""
    try:
        zone = ZoneInfo(tz)
        layout = DATE_TIME.get(language, DATE_TIME["en"])
        return datetime.fromisoformat(at).astimezone(zone).strftime(layout)
    except (ValueError, KeyError, OSError):
        return at


# detail values that are codes with words of their own
_DETAIL_FAMILIES = {"action": "action", "test": "mode"}


def row_words(row: dict[str, Any], language: str) -> str:
    """What happened, in words."""
    body = row.get("body") or {}
    if row["kind"] == "decision":
        return render(row["what"], row.get("display"), language)
    what = str(row["what"])
    text = say(language, "event", what)
    if what not in FAMILIES["event"]:
        text = text.capitalize()
    detail = body.get("detail") or {}
    extra = [
        say(language, _DETAIL_FAMILIES.get(k, ""), detail[k])
        for k in ("action", "test", "reader", "board", "output", "reason", "why", "cause", "state")
        if isinstance(detail, dict) and detail.get(k) not in (None, "")
    ]
    return t(language, "row.event_detail", event=text, detail=", ".join(extra)) if extra else text


def shown(row: dict[str, Any], tz: str, language: str) -> dict[str, Any]:
    """A stored row with its local time and words added (what pages and the API show)."""
    body = row.get("body") or {}
    return {
        **row,
        "local": local_time(row["at"], tz, language),
        "text": row_words(row, language),
        "warnings": body.get("warnings") or [],
        "trace": body.get("trace") or [],
        "latency_ms": body.get("latency_ms"),
    }


def duration(seconds: int | None, language: str = "en") -> str:
    """``3 d 4 h``, ``5 min``, ``12 s`` (as the language abbreviates them)."""
    if seconds is None:
        return t(language, "time.never")
    if seconds < 60:
        return t(language, "time.s", s=seconds)
    if seconds < 3600:
        return t(language, "time.min", min=seconds // 60)
    if seconds < 86_400:
        return t(language, "time.h_min", h=seconds // 3600, min=seconds % 3600 // 60)
    return t(language, "time.d_h", d=seconds // 86_400, h=seconds % 86_400 // 3600)


def describe_record(record: Member | Ticket) -> dict[str, Any]:
    """A member or ticket for the installer: what the decision looks at, without secrets."""
    data = record.model_dump(mode="json")
    creds = data.pop("credentials", None) or []
    data["credentials"] = [c.get("kind", "?") for c in creds if isinstance(c, dict)]
    return {"id": record.id, "record": data}
