"""Site schedules and local calendar periods, in the site's time zone.

Schedule windows are local wall-clock ``[from, to)``; a window with ``to`` before
``from`` runs overnight and belongs to the day it starts; ``to`` may be ``24:00``;
``from == to`` is an empty window. Wall-clock comparison makes DST days behave as a
person reads the sign on the door: on the spring-forward night 02:00-03:00 never
happens, on the fall-back night 02:00-03:00 happens twice and both count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.entitlements import Window, minutes_of, parse_days


def local(instant: datetime, tz: ZoneInfo) -> datetime:
    """The instant as local wall-clock time in ``tz``."""
    return instant.astimezone(tz)


def window_covers(window: Window, wall: datetime) -> bool:
    """True when local wall-clock time ``wall`` falls in ``window``."""
    days = parse_days(window.days)
    start, end = minutes_of(window.from_), minutes_of(window.to)
    now = wall.hour * 60 + wall.minute
    today = wall.weekday()
    if start < end:
        return today in days and start <= now < end
    if start == end:
        return False
    # Overnight: the evening part belongs to today, the morning part to yesterday.
    yesterday = (today - 1) % 7
    return (today in days and now >= start) or (yesterday in days and now < end)


def schedule_covers(windows: Sequence[Window], wall: datetime) -> bool:
    """True when any window of the schedule covers ``wall``."""
    return any(window_covers(w, wall) for w in windows)


def period_key(per: str, day: date) -> tuple[int, int, int]:
    """The local calendar period (``day``, ISO ``week`` or ``month``) that ``day`` is in."""
    if per == "day":
        return (day.year, day.month, day.day)
    if per == "week":
        iso = day.isocalendar()
        return (iso.year, iso.week, 0)
    return (day.year, day.month, 0)


def minutes_between(earlier: datetime, later: datetime) -> float:
    """Elapsed real minutes from ``earlier`` to ``later`` (negative if reversed)."""
    return (later - earlier) / timedelta(minutes=1)
