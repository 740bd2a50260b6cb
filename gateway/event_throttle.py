"""How many ``bad_message`` events a flood may cost: a token bucket per (topic, reason).

Anyone who can reach the broker can send garbage at thousands of messages a second. Each
refused message used to become a journalled event (an fsync on the journal's writer, in
front of the doors' own commits), a log line and a row in the installer's feed, so a flood
of unsigned messages slowed every door. Now each (topic, reason) may report a burst, then
about one event every few seconds; what was held back is counted and carried by the next
event of that kind (``"suppressed": N``), or by a summary when the flood has stopped. The
metrics still count every refused message: only the journal, the log and the feed are
spared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]
"""A ``bad_message``'s (topic, reason)."""


def key_of(detail: dict[str, Any]) -> Key:
    """The (topic, reason) of a ``bad_message`` detail: what it is throttled and counted by
    (by the gateway, and by its wire process before it)."""
    return str(detail.get("topic")), str(detail.get("reason"))


@dataclass
class _Bucket:
    tokens: float
    at: float
    held_back: int = 0


class EventThrottle:
    """Token buckets per key, and one for all keys together (so many keys cannot flood)."""

    def __init__(
        self,
        *,
        burst: int = 20,
        per_second: float = 0.2,
        total_burst: int = 100,
        total_per_second: float = 10.0,
        max_keys: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst, self._rate = float(burst), per_second
        self._total_burst, self._total_rate = float(total_burst), total_per_second
        self._max_keys = max_keys
        self._clock = clock
        self._keys: dict[Key, _Bucket] = {}
        self._total = _Bucket(float(total_burst), clock())

    def admit(self, key: Key, count: int = 1) -> int | None:
        """``None`` if this event is held back; else how many of its kind were held back
        since the last one admitted (0 in the normal case).

        ``count`` events of one kind at once (counted together by the wire process) are
        one event to admit: if it is, the other ``count - 1`` are held back with it."""
        now = self._clock()
        bucket = self._keys.get(key)
        if bucket is None:
            if len(self._keys) >= self._max_keys:  # a bounded table: forget the quietest
                self._forget_full(now)
            bucket = self._keys[key] = _Bucket(self._burst, now)
        self._refill(bucket, now, self._burst, self._rate)
        self._refill(self._total, now, self._total_burst, self._total_rate)
        if bucket.tokens < 1 or self._total.tokens < 1:
            bucket.held_back += count
            return None
        bucket.tokens -= 1
        self._total.tokens -= 1
        held_back, bucket.held_back = bucket.held_back + count - 1, 0
        return held_back

    def held_back(self) -> list[tuple[Key, int]]:
        """The keys with events held back, and how many; their counts start again at 0
        (for a summary event once a flood has stopped)."""
        out = [(key, b.held_back) for key, b in self._keys.items() if b.held_back]
        for key, _ in out:
            self._keys[key].held_back = 0
        return out

    @staticmethod
    def _refill(bucket: _Bucket, now: float, burst: float, rate: float) -> None:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._keys.items()):
            self._refill(bucket, now, self._burst, self._rate)
            if bucket.tokens >= self._burst and not bucket.held_back:
                del self._keys[key]
        if len(self._keys) >= self._max_keys:  # all busy: drop the oldest entry
            del self._keys[next(iter(self._keys))]
