"""The output/input role: what every relay/IO board driver gives the gateway.

A :class:`Board` has numbered outputs (relays: switch, pulse, read back) and numbered
inputs (door contact, REX, turnstile rotation, fire alarm: read, watch edges). Drivers
(one module per hardware family in ``drivers/``) subclass it; the door logic never knows
which hardware it drives. Levels here are physical (relay energised = True); a door's
``active_low`` points are inverted by :class:`OutputPoint` / :class:`InputPoint`.

Faults are never silent: a write the board refuses, or a relay whose read-back disagrees,
raises :class:`RelayFault` (and is told to subscribers as ``relay_fault``); a board that
cannot be reached raises :class:`BoardOffline` and reports ``online=False`` with a reason
in :attr:`Board.health` while the driver keeps trying to reconnect.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import HardwareError
from gateway.supervisor import Supervisor, describe


class RelayFault(HardwareError):
    """A relay did not do what it was told (refused write, or read-back disagrees)."""

    def __init__(self, board: str, index: int, reason: str) -> None:
        self.board = board
        self.index = index
        self.reason = reason
        super().__init__(f"board {board!r} output {index}: {reason}")


class BoardOffline(HardwareError):
    """The board cannot be reached right now; the driver keeps trying to reconnect."""

    def __init__(self, board: str, reason: str) -> None:
        self.board = board
        self.reason = reason
        super().__init__(f"board {board!r} is offline: {reason}")


@dataclass(frozen=True, slots=True)
class BoardHealth:
    """Whether a board answers, and if not, why (said so an installer can act on it)."""

    board: str
    online: bool
    reason: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class Edge:
    """A de-bounced change of one input. ``previous`` is None when the level was unknown
    (first reading after start or after the board came back)."""

    index: int
    value: bool
    previous: bool | None
    at: float  # time.monotonic()


EdgeCallback = Callable[[Edge], None]
EventCallback = Callable[[str, dict[str, Any]], None]


class LoopKeeper(Protocol):
    """Who runs a board's long-lived loop (input polling, reconnecting): the gateway's
    :class:`~gateway.supervisor.Supervisor`, which logs a failure with its cause, reports
    it (``component_failed``, the status's ``components``) and restarts the loop."""

    def start(
        self,
        component: str,
        run: Callable[[], Awaitable[None]],
        *,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None: ...

    async def stop(self, components: Iterable[str] | None = None) -> None: ...


class Debouncer:
    """A raw level becomes the stable level once it has held for ``seconds``.

    Fed with samples (polling drivers) or raw edges (the fake); returns the new stable
    level when it changes, else None. The first sample is taken at once (nothing to filter).
    """

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.stable: bool | None = None
        self._candidate: bool | None = None
        self._since = 0.0

    def feed(self, raw: bool, at: float) -> bool | None:
        """Take one sample at monotonic time ``at``; the new stable level, or None."""
        if self.stable is None:
            self.stable, self._candidate = raw, None
            return raw
        if raw == self.stable:
            self._candidate = None
            return None
        if self._candidate != raw:
            self._candidate, self._since = raw, at
        if at - self._since >= self.seconds:
            self.stable, self._candidate = raw, None
            return raw
        return None

    def forget(self) -> None:
        """The level is unknown again (board offline)."""
        self.stable, self._candidate = None, None


class Board(abc.ABC):
    """A relay/IO board. Drivers implement the ``_write``/``_read_output`` primitives and
    feed input samples through :meth:`_sample`; timing, watchers and faults live here."""

    def __init__(self, board_id: str, settings: Mapping[str, Any] | None = None) -> None:
        self.id = board_id
        self.settings: dict[str, Any] = dict(settings or {})
        self.health = BoardHealth(board_id, online=False, reason="not started")
        self._wanted: dict[int, bool] = {}
        self._inputs: dict[int, Debouncer] = {}
        self._watchers: dict[int, list[EdgeCallback]] = {}
        self._listeners: list[EventCallback] = []
        self._pulses: dict[int, asyncio.Task[None]] = {}
        self._safe: dict[int, bool] = {}
        self.debounce = float(self.settings.get("debounce", 0.0))
        self._keeper: LoopKeeper | None = None
        self._looping = False

    @property
    def component(self) -> str:
        """The name its loop is supervised under (events and status show it)."""
        return f"board {self.id}"

    def supervise_with(self, keeper: LoopKeeper) -> None:
        """Run the board's loop under ``keeper`` (the gateway's supervisor); call before
        :meth:`start`. Without it a board keeps its loop under a supervisor of its own
        (a failure is logged and the loop restarted, but nobody else is told)."""
        self._keeper = keeper

    # --- what doors call ----------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional for drivers
        """Open the device and begin reporting inputs (never raises for an absent board:
        it reports offline and keeps trying)."""

    async def close(self) -> None:
        """Put every output this board was told about at its safe level, then release it."""
        for task in self._pulses.values():
            task.cancel()
        for index in sorted(set(self._wanted) | set(self._safe)):
            with contextlib.suppress(HardwareError):
                await self.set_output(index, self.safe_level(index))

    def declare_safe(self, index: int, physical: bool) -> None:
        """The physical level output ``index`` must have when nobody controls it (a door
        whose lock is wired active-low declares True): used at start and stop. Declared
        before :meth:`start`, it is the first level the output is ever given."""
        self._safe[index] = physical

    def levels_to_restore(self) -> dict[int, bool]:
        """What a board that (re)connects writes first: every output a door declared a
        safe level for at that level, and every output told a level since at that one."""
        return {**self._safe, **self._wanted}

    def safe_level(self, index: int) -> bool:
        """The physical level output ``index`` goes to at start and stop (default off)."""
        return self._safe.get(index, False)

    async def set_output(self, index: int, on: bool, *, hold_for: float | None = None) -> None:
        """Switch output ``index``; raises RelayFault or BoardOffline. A later call wins
        over a running :meth:`pulse` of the same output.

        ``hold_for`` (with ``on``): the caller will switch it off after that many seconds;
        a board that can time a pulse itself (Waveshare flash-on) is told to, so the
        output ends even if the gateway dies. The caller's own switch-off still comes.
        A level that could not be set is forgotten: a board that comes back is never
        told an old level (the door writes its current one).
        """
        pulse = self._pulses.pop(index, None)
        if pulse is not None and pulse is not asyncio.current_task():
            pulse.cancel()
        self._wanted[index] = on
        try:
            if not (on and hold_for is not None and await self._write_timed(index, hold_for)):
                await self._write(index, on)
        except HardwareError:
            self._wanted.pop(index, None)
            raise

    async def pulse(self, index: int, seconds: float) -> None:
        """Energise ``index`` now and de-energise it after ``seconds``.

        Returns once the output is on. The off-switch is a task of the board, not of the
        caller: cancelling the caller never leaves the relay energised.
        """
        await self.set_output(index, True)
        self._pulses[index] = asyncio.get_running_loop().create_task(
            self._end_pulse(index, seconds), name=f"pulse {self.id}:{index}"
        )

    async def _end_pulse(self, index: int, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        finally:
            if self._pulses.get(index) is asyncio.current_task():
                del self._pulses[index]
                with contextlib.suppress(HardwareError):
                    await asyncio.shield(self.set_output(index, False))

    def output_state(self, index: int) -> bool | None:
        """The level this board was last told to put on ``index`` (None: never told)."""
        return self._wanted.get(index)

    async def read_output(self, index: int) -> bool:
        """Read the relay's actual state back from the board."""
        return await self._read_output(index)

    def input_state(self, index: int) -> bool | None:
        """The de-bounced level of input ``index``; None while unknown."""
        debouncer = self._inputs.get(index)
        return debouncer.stable if debouncer is not None else None

    def watch(self, index: int, callback: EdgeCallback) -> Callable[[], None]:
        """Call ``callback`` on every de-bounced change of input ``index``; returns an
        unsubscribe function. Callbacks run on the event loop and must not block."""
        self._inputs.setdefault(index, Debouncer(self.debounce))
        self._watchers.setdefault(index, []).append(callback)
        return lambda: self._watchers.get(index, []).remove(callback)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Be told of ``relay_fault`` and health changes (``board_online``/``board_offline``)."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    # --- what drivers implement and call -------------------------------------------

    @abc.abstractmethod
    async def _write(self, index: int, on: bool) -> None:
        """Put the physical level on output ``index``; raise RelayFault/BoardOffline."""

    async def _write_timed(self, index: int, seconds: float) -> bool:
        """Energise ``index`` for ``seconds`` timed by the board itself; False where the
        board cannot (the caller then writes the level and times it in software)."""
        return False

    @abc.abstractmethod
    async def _read_output(self, index: int) -> bool:
        """Read output ``index`` back from the hardware."""

    def _run_loop(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run the driver's long-lived loop supervised: a failure (a bug, a watcher that
        raises, an answer the driver did not expect) is logged with its cause, the board
        shows offline with its inputs unknown (its doors report ``relay_fault``) and the
        loop is started again with back-off; it never dies silently."""
        if self._looping:
            return
        if self._keeper is None:
            self._keeper = Supervisor()
        self._keeper.start(self.component, run, on_failure=self._loop_failed)
        self._looping = True

    async def _stop_loop(self) -> None:
        """Stop the loop of :meth:`_run_loop` (if it runs) and wait for it."""
        if self._looping and self._keeper is not None:
            self._looping = False
            await self._keeper.stop([self.component])

    def _loop_failed(self, error: BaseException | None) -> None:
        self._forget_inputs()
        self._report(False, f"input polling failed: {describe(error)}")

    def watched_inputs(self) -> list[int]:
        """Input indexes somebody watches (what a polling driver has to read)."""
        return sorted(self._inputs)

    def _sample(self, index: int, raw: bool, at: float | None = None) -> None:
        """Feed one raw input sample; watchers hear of de-bounced changes."""
        debouncer = self._inputs.setdefault(index, Debouncer(self.debounce))
        previous = debouncer.stable
        at = time.monotonic() if at is None else at
        value = debouncer.feed(raw, at)
        if value is None:
            return
        edge = Edge(index, value, previous, at)
        for callback in list(self._watchers.get(index, [])):
            callback(edge)

    def _forget_inputs(self) -> None:
        for debouncer in self._inputs.values():
            debouncer.forget()

    def _report(self, online: bool, reason: str = "") -> None:
        """Record a health change and tell the listeners, once per change."""
        if online == self.health.online and reason == self.health.reason:
            return
        was_online = self.health.online
        self.health = BoardHealth(self.id, online, reason)
        if online != was_online or not online:
            kind = "board_online" if online else "board_offline"
            self._emit(kind, {"board": self.id, "reason": reason})

    def _emit(self, kind: str, detail: dict[str, Any]) -> None:
        for callback in list(self._listeners):
            callback(kind, detail)

    def _fault(self, index: int, reason: str) -> RelayFault:
        """A RelayFault, told to the listeners as ``relay_fault`` before it is raised."""
        self._emit("relay_fault", {"board": self.id, "output": index, "reason": reason})
        return RelayFault(self.id, index, reason)


def check_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop.

    In Python 3.11, ``asyncio.wait_for`` (which pymodbus awaits for every reply) can swallow
    a cancellation that arrives as the reply does; the task stays marked as cancelling.
    Loops that must stop when cancelled call this once per turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set.

    Built on asyncio.wait, which never turns a cancellation of the caller into a timeout
    (``asyncio.timeout`` can, in Python 3.11, when both happen at once): a door task told
    to stop must stop.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return event.is_set()


@dataclass(frozen=True)
class OutputPoint:
    """One output as a door sees it: logical on/off, inverted when ``active_low``."""

    board: Board
    index: int
    active_low: bool = False

    async def set(self, on: bool, *, hold_for: float | None = None) -> None:
        """Switch the output to the logical level ``on`` (``hold_for``: see
        :meth:`Board.set_output`; only where energised means on)."""
        physical = on != self.active_low
        await self.board.set_output(self.index, physical, hold_for=hold_for if physical else None)

    def physical(self, on: bool) -> bool:
        """The physical level for the logical level ``on``."""
        return on != self.active_low


@dataclass(frozen=True)
class InputPoint:
    """One input as a door sees it: logical active/inactive, inverted when ``active_low``."""

    board: Board
    index: int
    active_low: bool = False

    def state(self) -> bool | None:
        """The logical level, None while unknown."""
        raw = self.board.input_state(self.index)
        return None if raw is None else raw != self.active_low

    def watch(self, callback: Callable[[bool, bool | None, float], None]) -> Callable[[], None]:
        """Call ``callback(active, previous, at)`` on every change; returns unsubscribe."""

        def logical(edge: Edge) -> None:
            previous = None if edge.previous is None else edge.previous != self.active_low
            callback(edge.value != self.active_low, previous, edge.at)

        return self.board.watch(self.index, logical)
