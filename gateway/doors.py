"""A door or turnstile: its lock output, its inputs, and the state machine between them.

HARDWARE.md, Doors. One task per door (:meth:`Door._run`) is the only writer of the lock
output: it computes whether the lock should be released (a grant's window, REX, command
``unlock``, fire alarm) and puts the output in that state, then sleeps until the next
deadline (relock, held-open alarm, retry after a fault) or until something changes.
Because the relock time is a deadline of that task, cancelling a caller of
:meth:`Door.release` never leaves the lock released; and because the task ends in
``finally`` by de-energising the output, cancelling or crashing the task itself leaves the
output de-energised, which is the configured ``fail_mode``'s safe state by wiring.

``fail_mode``: ``secure`` (lock holds without power, e.g. a fail-secure strike): released =
energised. ``safe`` (lock frees without power, e.g. a maglock on a fire door): released =
de-energised, so in normal operation the output is energised to hold the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from gateway.config import ContactPoint, DoorConfig, Point
from gateway.errors import HardwareError
from gateway.outputs import Board, InputPoint, OutputPoint, check_cancelled, wait_event

log = logging.getLogger(__name__)

Mode = Literal["normal", "unlock", "lockdown"]
EventSink = Callable[[str, dict[str, Any]], None]
RETRY_SECONDS = 1.0  # how soon a lock write that failed is tried again
# At stop nobody retries later, so the safe level gets a few tries: one frame lost on a bus
# that just came back must not leave a maglock energised (or a strike released).
STOP_ATTEMPTS = 3
STOP_RETRY_SECONDS = 0.2
TURNSTILE_PULSE = 0.5  # seconds on a turnstile's open input when the door does not say


@dataclass(frozen=True, slots=True)
class PassageOutcome:
    """Whether someone walked through after a release, and when it was seen."""

    passed: bool
    seen_at: datetime | None
    released_at: float | None = None  # time.monotonic() when the lock was released (metrics)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Door:
    """One door or turnstile (HARDWARE.md). Events go to ``on_event(type, detail)``."""

    def __init__(
        self,
        config: DoorConfig,
        boards: Mapping[str, Board],
        on_event: EventSink | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.id = config.id
        self._boards = boards
        self._on_event = on_event
        self._now = now
        self._clock = clock
        self._lock = self._output(config.lock)
        if self._lock is not None:  # the level it must have at start and stop, whatever
            # the wiring's polarity (an active-low point is physically ON when de-energised)
            self._lock.board.declare_safe(self._lock.index, self._lock.physical(False))
        self._contact = self._contact_input(config.contact)
        self._rex = self._input(config.rex)
        self._passage = self._input(config.passage)
        self._fire_input = self._input(config.fire)
        self._mode: Mode = "normal"
        self._fire = False  # the fire input is active (or unknown, where that is alarm)
        self._fire_unknown_alarm = (
            config.fire_unknown_is_alarm
            if config.fire_unknown_is_alarm is not None
            else config.fail_mode == "safe"
        )
        self._relock_on_close = (
            config.relock_on_close if config.relock_on_close is not None else True
        )
        self._release_until = 0.0
        self._rex_until = 0.0
        self._retry_at: float | None = None
        self._written: bool | None = None  # the lock's logical level last written
        self._fault = False  # a relay_fault was reported and not yet cured
        self._open_since: float | None = None
        self._held_reported = False
        self._alarm = False  # door_forced/door_held_open told; door_closed follows
        self._expected: deque[asyncio.Future[datetime]] = deque()
        self._applied: list[asyncio.Future[bool]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    def _board(self, point: Point) -> Board:
        try:
            return self._boards[point.board]
        except KeyError:
            raise HardwareError(
                f"door {self.id!r} uses board {point.board!r}, which was not started "
                f"(boards: {', '.join(sorted(self._boards)) or 'none'})"
            ) from None

    def _output(self, point: Point | None) -> OutputPoint | None:
        return (
            None
            if point is None
            else OutputPoint(self._board(point), point.index, point.active_low)
        )

    def _input(self, point: Point | None) -> InputPoint | None:
        return (
            None if point is None else InputPoint(self._board(point), point.index, point.active_low)
        )

    def _contact_input(self, point: ContactPoint | None) -> InputPoint | None:
        """The contact as an input that is *active when the door is open*."""
        if point is None:
            return None
        # the input's level after active_low is "active"; open is the level that is not
        # the closed one, so invert once more where closed means active
        open_active_low = point.active_low != (point.closed_when == "active")
        return InputPoint(self._board(point), point.index, open_active_low)

    # --- the API the entrance and the commands use ------------------------------------

    @property
    def mode(self) -> Mode:
        """``normal``, ``unlock`` (held released by command) or ``lockdown``."""
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Commands ``normal``/``unlock``/``lockdown``. Lockdown only refuses readers (the
        decision does that); egress (REX) and a fire release stay as they are."""
        if mode not in get_args(Mode):
            raise ValueError(f"door mode must be one of {', '.join(get_args(Mode))}, not {mode!r}")
        old, self._mode = self._mode, mode
        if old != mode and mode == "unlock":
            self._emit("emergency_release", {"cause": "command"})
        elif old == "unlock" and mode != "unlock":
            self._emit("emergency_cleared", {"cause": "command"})
        self._wake.set()

    async def release(self) -> PassageOutcome:
        """A grant: release the lock (a pulse for a turnstile) and wait for the passage."""
        return await self._release(self._grant_seconds())

    async def open_once(
        self, seconds: float | None = None, lock_moved: asyncio.Future[bool] | None = None
    ) -> PassageOutcome:
        """Command ``open``: one timed release, as for a grant. ``lock_moved`` is resolved as
        soon as the lock was (True) or could not be (False) released, before the passage:
        the command's result is sent then."""
        seconds = self._grant_seconds() if seconds is None else float(seconds)
        return await self._release(seconds, lock_moved)

    def status(self) -> dict[str, str]:
        """The door's part of the MQTT status message."""
        if self._contact is None:
            contact = "unknown"
        else:
            level = self._contact.state()
            contact = "unknown" if level is None else ("open" if level else "closed")
        return {
            "mode": self._mode,
            "lock": "unlocked" if self._lock_released() else "locked",
            "contact": contact,
        }

    async def start(self, *, spawn: bool = True) -> None:
        """Put the lock in its safe (de-energised) state, then take control of it.

        With ``spawn=False`` the caller runs :meth:`run` itself (the daemon's supervisor,
        which restarts it if it fails).
        """
        if self._task is not None or self._unsubscribe:
            return
        self._watch(self._contact, self._on_contact)
        self._watch(self._rex, self._on_rex)
        self._watch(self._passage, self._on_passage)
        self._watch(self._fire_input, self._on_fire)
        if self._lock is not None:
            self._unsubscribe.append(self._lock.board.subscribe(self._on_board))
        if self._fire_input is not None and (
            self._lock is None or self._fire_input.board is not self._lock.board
        ):
            self._unsubscribe.append(self._fire_input.board.subscribe(self._on_fire_board))
        await self._de_energise()
        if self._fire_input is not None:
            fire = self._fire_input.state()
            if fire or (fire is None and self._fire_unknown_alarm):
                self._on_fire(True, None, self._clock())
        if self._contact is not None and self._contact.state():
            self._open_since = self._clock()
            log.warning(
                "door %s: locked, but its contact reads open at start: is the door open, or "
                "is contact.closed_when wrong for this wiring?",
                self.id,
            )
        if spawn:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"door {self.id}")

    async def run(self) -> None:
        """The door's writer loop, until cancelled (a supervisor may run it again)."""
        self._task = asyncio.current_task()
        try:
            await self._run()
        finally:
            self._task = None

    async def stop(self) -> None:
        """Stop watching inputs and leave the lock de-energised (its safe state)."""
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await self._de_energise(STOP_ATTEMPTS)

    # --- releases and passages --------------------------------------------------------

    def _grant_seconds(self) -> float:
        """How long a grant releases: a turnstile gets the door's pulse length."""
        if self.config.kind == "turnstile":
            pulse = self.config.pulse_seconds
            return float(TURNSTILE_PULSE if pulse is None else pulse)
        return float(self.config.unlock_seconds)

    async def _release(
        self, seconds: float, lock_moved: asyncio.Future[bool] | None = None
    ) -> PassageOutcome:
        if self._task is None or self._task.done():
            raise HardwareError(f"door {self.id!r} is not running: start it first")
        loop = asyncio.get_running_loop()
        sensor = self._passage or self._contact
        expected: asyncio.Future[datetime] | None = None
        if sensor is not None:
            expected = loop.create_future()
            self._expected.append(expected)
        self._release_until = max(self._release_until, self._clock() + seconds)
        applied: asyncio.Future[bool] = loop.create_future()
        self._applied.append(applied)
        self._wake.set()
        try:
            energised = await applied
            if lock_moved is not None and not lock_moved.done():
                lock_moved.set_result(energised)
            released = time.monotonic() if energised else None
            if expected is None:  # nothing can see the passage: assume it happened
                return PassageOutcome(energised, self._now() if energised else None, released)
            await asyncio.wait({expected}, timeout=self.config.pass_timeout)
            if expected.done() and not expected.cancelled():
                return PassageOutcome(True, expected.result(), released)
            return PassageOutcome(False, None, released)
        finally:
            if lock_moved is not None and not lock_moved.done():
                lock_moved.set_result(False)
            if expected is not None:
                with contextlib.suppress(ValueError):
                    self._expected.remove(expected)
                expected.cancel()

    def _take_expected(self, at: float) -> bool:
        """Give a passage seen at ``at`` to the oldest grant waiting for one."""
        while self._expected:
            waiting = self._expected.popleft()
            if not waiting.done():
                waiting.set_result(self._stamp(at))
                return True
        return False

    def _stamp(self, at: float) -> datetime:
        """A monotonic instant as a wall-clock time."""
        return self._now() - timedelta(seconds=max(0.0, self._clock() - at))

    def _free_passage(self) -> bool:
        """Passages need no grant now: fire, command unlock, or an exit by REX."""
        return self._fire or self._mode == "unlock" or self._clock() < self._rex_until

    # --- inputs -----------------------------------------------------------------------

    def _watch(
        self, point: InputPoint | None, handler: Callable[[bool, bool | None, float], None]
    ) -> None:
        if point is not None:
            self._unsubscribe.append(point.watch(handler))

    def _on_passage(self, active: bool, previous: bool | None, at: float) -> None:
        if not active or previous is None:  # a level seen at start is no passage
            return
        if self._take_expected(at) or self._free_passage():
            return
        self._emit("unauthorised_passage", {"sensor": "passage"})

    def _on_contact(self, is_open: bool, previous: bool | None, at: float) -> None:
        if not is_open:
            if previous and self._relock_on_close and self._clock() < self._release_until:
                # the person went through and the door shut: a follower must not get in
                self._release_until = self._clock()
            self._open_since = None
            if self._alarm:
                self._alarm = False
                self._emit("door_closed", {})
            self._wake.set()
            return
        self._open_since, self._held_reported = at, False
        if previous is not None:
            authorised = bool(self._expected) or self._lock_released() or self._free_passage()
            if self._passage is None:  # the contact is the passage sensor of this door
                self._take_expected(at)
            if not authorised:
                self._alarm = True
                self._emit("door_forced", {})
        self._wake.set()

    def _on_rex(self, active: bool, previous: bool | None, at: float) -> None:
        if not active or previous is None:
            return
        seconds = float(self.config.unlock_seconds)
        self._release_until = max(self._release_until, at + seconds)
        self._rex_until = max(self._rex_until, at + max(seconds, self.config.pass_timeout))
        self._wake.set()

    def _on_fire(self, active: bool, previous: bool | None, at: float, cause: str = "fire") -> None:
        if active == self._fire:
            return
        self._fire = active
        self._emit("emergency_release" if active else "emergency_cleared", {"cause": cause})
        self._wake.set()

    def _on_fire_board(self, kind: str, detail: dict[str, Any]) -> None:
        """The fire input's board went away: its level is unknown."""
        if kind == "board_offline" and self._fire_unknown_alarm:
            self._on_fire(True, None, self._clock(), cause="fire_input_unknown")
        # on board_online the first sample comes as an edge with previous=None: _on_fire
        # then clears (or keeps) the alarm from the real level

    def _on_board(self, kind: str, detail: dict[str, Any]) -> None:
        if kind == "board_offline":
            self._report_fault(f"board offline: {detail.get('reason', '')}")
            if self._fire_input is not None and self._fire_input.board is self._lock_board():
                self._on_fire_board(kind, detail)
        elif kind == "board_online":
            self._written = None  # it may have lost power: write the lock level again
            self._wake.set()

    # --- the lock -----------------------------------------------------------------------

    def _lock_board(self) -> Board | None:
        return None if self._lock is None else self._lock.board

    def _should_release(self) -> bool:
        return self._fire or self._mode == "unlock" or self._clock() < self._release_until

    def _lock_released(self) -> bool:
        """What the lock does now: from the level written, else from what is wanted."""
        if self._written is None:
            return self._should_release()
        return self._written == (self.config.fail_mode == "secure")

    def _energise(self) -> bool:
        """The lock output's logical level for what is wanted now."""
        return self._should_release() == (self.config.fail_mode == "secure")

    async def _run(self) -> None:
        """The door's one writer: apply, then sleep until a deadline or a change."""
        try:
            while True:
                self._wake.clear()
                await self._apply()
                self._check_held_open()
                check_cancelled()
                await wait_event(self._wake, self._next_wake())
        finally:
            for waiter in self._applied:
                if not waiter.done():
                    waiter.set_result(False)
            self._applied.clear()
            for expected in self._expected:  # a stopped door sees no more passages
                expected.cancel()
            await asyncio.shield(self._de_energise(STOP_ATTEMPTS))

    async def _apply(self) -> None:
        """Put the lock in the wanted state; tell the grants waiting for it how it went."""
        waiters, self._applied = self._applied, []
        ok = False  # also what the waiters hear if this task is cancelled mid-write
        try:
            want = self._energise()
            ok = True
            if self._lock is not None and want != self._written:
                ok = await self._write(want)
                if not ok and self._clock() < self._release_until:
                    # a grant whose lock did not move is over: the board coming back
                    # must restore the door's current state, not this old grant
                    self._release_until = self._rex_until = self._clock()
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(ok)

    async def _write(self, level: bool) -> bool:
        assert self._lock is not None
        hold_for = None
        if level and self.config.fail_mode == "secure" and not self._held_released():
            # a timed release: a board that can time it itself ends it even if we die
            hold_for = max(0.1, self._release_until - self._clock())
        try:
            await self._lock.set(level, hold_for=hold_for)
        except HardwareError as exc:
            self._written, self._retry_at = None, self._clock() + RETRY_SECONDS
            self._report_fault(getattr(exc, "reason", str(exc)))
            return False
        self._written, self._retry_at, self._fault = level, None, False
        return True

    def _held_released(self) -> bool:
        """Released for as long as a state lasts (fire, command unlock), not a window."""
        return self._fire or self._mode == "unlock"

    async def _de_energise(self, attempts: int = 1) -> None:
        if self._lock is None:
            return
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(STOP_RETRY_SECONDS * attempt)
            try:
                await self._lock.set(False)
            except HardwareError as exc:
                self._written = None
                self._report_fault(getattr(exc, "reason", str(exc)))
            else:
                self._written = False
                return

    def _report_fault(self, reason: str) -> None:
        if self._fault or self._lock is None:
            return
        self._fault = True
        board, index = self._lock.board.id, self._lock.index
        self._emit("relay_fault", {"board": board, "output": index, "reason": reason})

    def _check_held_open(self) -> None:
        if self._open_since is None or self._held_reported or self._free_passage():
            return
        if self._clock() - self._open_since >= self.config.held_open_seconds:
            self._held_reported = self._alarm = True
            self._emit("door_held_open", {"seconds": self.config.held_open_seconds})

    def _next_wake(self) -> float | None:
        """Seconds until this door has something to do (None: nothing until an input or a
        command). A deadline that passed while the lock was being written counts as due:
        the write of a short grant can outlast its own window."""
        now = self._clock()
        deadlines = [d for d in (self._release_until, self._rex_until) if d > now]
        if self._lock is not None and self._written != self._energise():
            deadlines.append(now if self._retry_at is None else self._retry_at)
        if self._open_since is not None and not self._held_reported and not self._free_passage():
            deadlines.append(self._open_since + self.config.held_open_seconds)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _emit(self, kind: str, detail: dict[str, Any]) -> None:
        log.debug("door %s: %s %s", self.id, kind, detail)  # in words: gateway.logs
        if self._on_event is None:
            return
        try:
            self._on_event(kind, detail)
        except Exception:  # an event sink's bug must never stop a door
            log.exception("door %s: event %s could not be recorded", self.id, kind)
