"""What the box sees, for the installer: recent reads, decisions and events, reader health.

A bounded ring buffer in memory (nothing of it is persisted: the journal is the record).
The demo reads it on the gateway's loop; the web UI is handed each item as it happens
(``listen``) and keeps its own history, so no other thread ever iterates these items.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.readers import ReaderHealth


@dataclass
class Activity:
    """The last ``size`` things that happened, and each reader's health."""

    size: int = 200
    items: deque[dict[str, Any]] = field(default_factory=deque)
    readers: dict[str, ReaderHealth] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _listeners: list[Callable[[Mapping[str, Any]], None]] = field(default_factory=list)

    def add(self, kind: str, **detail: Any) -> dict[str, Any]:
        """Record one thing (``decision``, ``event``, ``health``...) with a running number."""
        item = {"n": next(self._ids), "kind": kind, "at": datetime.now(UTC).isoformat(), **detail}
        self.items.append(item)
        while len(self.items) > self.size:
            self.items.popleft()
        for listener in self._listeners:
            listener(item)
        return item

    def listen(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Hand every new item to ``listener`` (on the loop: it must be quick, never block)."""
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Stop handing items to ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def health(self, health: ReaderHealth) -> None:
        """A reader came online or went offline."""
        self.readers[health.reader] = health
        self.add("health", reader=health.reader, online=health.online, reason=health.reason)

    def since(self, n: int) -> list[dict[str, Any]]:
        """Items with a running number above ``n``, oldest first."""
        return [item for item in self.items if item["n"] > n]
