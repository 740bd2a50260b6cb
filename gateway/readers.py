"""The reader role: what every credential reader driver gives the gateway.

A reader is an async stream of :class:`CredentialRead` plus a health state. Drivers
(one module per hardware family in ``drivers/``) never raise hardware faults out of
:meth:`Reader.reads`: they report ``online=False`` with a reason through ``on_health``
and keep trying, so one unplugged reader never stops a door or the daemon.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway.logs import cleanup

log = logging.getLogger(__name__)

PASS_PREFIX = "AGP1."

CredentialKind = Literal["nfc", "code", "pass"]


def utc_now() -> datetime:
    """The current instant, timezone-aware (UTC)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CredentialRead:
    """One credential presented at a reader.

    ``kind`` is ``nfc`` (``value`` is a UID as hex, or a card number with ``format``),
    ``code`` (a printed barcode/QR value) or ``pass`` (a phone-pass token ``AGP1....``).
    ``bits`` keeps the raw card data of OSDP/Wiegand reads, for diagnostics.
    """

    reader: str
    kind: CredentialKind
    value: str
    at: datetime
    format: str | None = None
    bits: str | None = None


def classify_code(reader: str, text: str, at: datetime) -> CredentialRead:
    """A scanned text (QR/barcode/NDEF) as a read: phone pass if it starts ``AGP1.``."""
    kind: CredentialKind = "pass" if text.startswith(PASS_PREFIX) else "code"
    return CredentialRead(reader=reader, kind=kind, value=text, at=at)


@dataclass(frozen=True, slots=True)
class ReaderHealth:
    """Whether a reader works, and if not, why (said so an installer can act on it)."""

    reader: str
    online: bool
    reason: str = ""
    at: datetime = field(default_factory=utc_now)
    # what the reader itself reports as wrong while it works ("tamper", "power fault")
    alerts: tuple[str, ...] = ()


HealthCallback = Callable[[ReaderHealth], None]
# an event a reader reports (``tamper``, ``reader_power``, ``reader_keypad``) and its detail
ReaderEventSink = Callable[[str, dict[str, Any]], None]


class Reader(abc.ABC):
    """A credential reader. Subclasses implement :meth:`reads` (and optionally feedback)."""

    def __init__(self, reader_id: str, on_health: HealthCallback | None = None) -> None:
        self.id = reader_id
        self._on_health = on_health
        self.health = ReaderHealth(reader_id, online=False, reason="not started")
        # LED/beeper on outputs of a board, for readers that cannot show it themselves
        self.indicator: Indicator | None = None
        self.events: ReaderEventSink | None = None  # set by the gateway (journalled events)

    def report(self, online: bool, reason: str = "") -> None:
        """Record a health change and tell the listener, once per change."""
        if online == self.health.online and reason == self.health.reason:
            return
        self.health = ReaderHealth(self.id, online, reason, alerts=self.health.alerts)
        if self._on_health is not None:
            self._on_health(self.health)

    def notice(self, kind: str, detail: dict[str, Any]) -> None:
        """Tell the gateway of something the reader reported (an event of ``kind``)."""
        if self.events is not None:
            self.events(kind, {"reader": self.id, **detail})

    def alert(self, name: str, active: bool, kind: str, detail: dict[str, Any]) -> None:
        """A condition the reader reports (its tamper switch...): on a change, an event
        of ``kind`` and the health's ``alerts`` (not a health report: the reader still
        reads, and its online/offline events are for its link)."""
        if (name in self.health.alerts) == active:
            return
        alerts = {*self.health.alerts, name} if active else set(self.health.alerts) - {name}
        self.health = replace(self.health, alerts=tuple(sorted(alerts)))
        self.notice(kind, {**detail, "active": active})

    @abc.abstractmethod
    def reads(self) -> AsyncIterator[CredentialRead]:
        """Run the reader and yield each read, until cancelled or closed."""

    async def feedback(self, granted: bool) -> None:
        """Show the outcome on the reader's LED/beeper: its :attr:`indicator` (outputs
        of a board, wired to the reader's LED and buzzer lines) where it has one."""
        if self.indicator is not None:
            await self.indicator.show(granted)

    async def close(self) -> None:  # noqa: B027 - optional for drivers
        """Release the port or device."""


class RepeatGuard:
    """De-bounce: a credential held on a reader makes one read per ``seconds``.

    The same (kind, value) on the same reader within ``seconds`` of the last read that
    was let through is dropped. Time comes from the reads themselves, so it is testable.
    """

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds
        self._last: dict[tuple[str, str, str], datetime] = {}

    def admit(self, read: CredentialRead) -> bool:
        """True if ``read`` should go on to a decision."""
        key = (read.reader, read.kind, read.value)
        last = self._last.get(key)
        if last is not None and 0 <= (read.at - last).total_seconds() < self.seconds:
            return False
        self._last[key] = read.at
        if len(self._last) > 1024:  # bounded: forget reads older than the guard
            cutoff = read.at.timestamp() - self.seconds
            self._last = {k: t for k, t in self._last.items() if t.timestamp() >= cutoff}
        return True


async def debounced(
    reads: AsyncIterator[CredentialRead], guard: RepeatGuard
) -> AsyncIterator[CredentialRead]:
    """The reads of ``reads`` that ``guard`` admits."""
    async for read in reads:
        if guard.admit(read):
            yield read


class Switchable(Protocol):
    """One output a reader's LED or beeper is wired to (gateway.outputs.OutputPoint)."""

    async def set(self, on: bool, *, hold_for: float | None = None) -> None:
        """Switch it on or off."""
        ...


@dataclass
class Indicator:
    """A reader's green LED, red LED and beeper on board outputs: green and one long beep
    on grant, red and three short beeps on deny (patterns of common access readers)."""

    green: Switchable | None = None
    red: Switchable | None = None
    beep: Switchable | None = None
    led_seconds: float = 1.5
    _running: asyncio.Task[None] | None = None

    async def show(self, granted: bool) -> None:
        """Start the pattern (returns at once; a new decision replaces a running one)."""
        if self._running is not None and not self._running.done():
            self._running.cancel()
        self._running = asyncio.get_running_loop().create_task(self._pattern(granted))

    async def _pattern(self, granted: bool) -> None:
        led = self.green if granted else self.red
        beeps = [0.4] if granted else [0.1, 0.1, 0.1]
        try:
            await _switch(led, True)
            for beep in beeps:
                await _switch(self.beep, True)
                await asyncio.sleep(beep)
                await _switch(self.beep, False)
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, self.led_seconds - sum(beeps) - 0.1 * len(beeps)))
        finally:
            with cleanup(log, "reader feedback: turning the beeper off", logging.WARNING):
                await asyncio.shield(_switch(self.beep, False))
            with cleanup(log, "reader feedback: turning the LED off", logging.WARNING):
                await asyncio.shield(_switch(led, False))


async def _switch(point: Switchable | None, on: bool) -> None:
    if point is None:
        return
    try:
        await point.set(on)
    except Exception as exc:  # an LED is a nicety: a board fault must not stop the reader
        log.warning("reader feedback output not switched: %s", exc)
