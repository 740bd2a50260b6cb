"""What happens when a credential is presented at a door.

read -> decision -> journal (durable, before any lock moves) -> door (release, wait for
the passage) -> final check-in (charge only if someone walked through) -> local state
-> outbox. One presentation at a time per door: a turnstile lets one person through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway import logs, metrics
from gateway.decision import Decision, DoorContext, EntitlementView, Presented, Request, decide
from gateway.readers import CredentialRead
from gateway.state import LocalState

log = logging.getLogger(__name__)


class PassageSeen(Protocol):
    """The outcome of a release: did someone walk through?"""

    @property
    def passed(self) -> bool: ...


class DoorControl(Protocol):
    """What the entrance needs of a door (gateway.doors.Door provides it)."""

    @property
    def mode(self) -> str: ...

    async def release(self) -> PassageSeen: ...

    async def open_once(
        self, seconds: float | None = None, lock_moved: asyncio.Future[bool] | None = None
    ) -> PassageSeen: ...


class JournalLike(Protocol):
    """What the entrance needs of the journal (gateway.journal.Journal provides it)."""

    async def record_decision(
        self, checkin: dict[str, Any], *, passage_assumed: bool = False
    ) -> Any: ...

    async def finalise(self, seq: int, *, passed: bool, charged: int) -> dict[str, Any]: ...

    async def record_event(
        self, type: str, *, door: str | None, detail: dict[str, Any], at: datetime
    ) -> Any: ...


class SeenPasses(Protocol):
    """The durable replay cache (gateway.pass_cache.PassCache provides it)."""

    def add(self, device: str, t: int, nonce: str) -> Future[None]: ...


class StoreLike(EntitlementView, Protocol):
    """The store as the entrance sees it: the decision's view plus freshness."""

    @property
    def version(self) -> int | None: ...

    @property
    def updated_at(self) -> datetime | None: ...


def _seconds_since(at: datetime) -> float:
    """How long ago a read was made (0..60 s: a wrong reader clock must not skew metrics)."""
    return min(60.0, max(0.0, (datetime.now(at.tzinfo) - at).total_seconds()))


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DoorPlace:
    """Where a door is: its id, zone, direction and display language, and whether a
    sensor sees the passage (without one, a grant whose lock opened counts as passed)."""

    id: str
    zone: str
    direction: str
    language: str = "en"
    senses_passage: bool = True


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A check-in as journalled before the lock moves (PROTOCOL.md Check-ins).

    The journal adds ``id``, ``seq`` and ``gw``; finalising sets ``passed`` and ``charged``
    (``charged`` here is what the decision would charge if someone walks through).
    """

    at: str
    door: str
    zone: str
    direction: str
    credential: str
    decision: str
    reason: str
    offline: bool
    entitlements_version: int | None
    member: str | None = None
    ticket: str | None = None
    contract: str | None = None
    charged: int = 0
    warnings: tuple[str, ...] = ()
    member_message: str | None = None
    pass_seen: tuple[str, int, str] | None = None

    def message(self) -> dict[str, Any]:
        """The check-in message as the journal takes it (not passed yet)."""
        body: dict[str, Any] = {
            "at": self.at,
            "door": self.door,
            "zone": self.zone,
            "direction": self.direction,
            "credential": self.credential,
            "member": self.member,
            "ticket": self.ticket,
            "decision": self.decision,
            "reason": self.reason,
            "contract": self.contract,
            "charged": self.charged,
            "passed": False,
            "warnings": list(self.warnings),
            "offline": self.offline,
            "entitlements_version": self.entitlements_version,
        }
        if self.member_message:
            body["member_message"] = self.member_message  # for the reception
        if self.pass_seen is not None:  # peers add it to their replay caches
            body["pass"] = list(self.pass_seen)
        return body


class Entrance:
    """Turns reads at one door into decisions, released doors and final check-ins."""

    def __init__(
        self,
        place: DoorPlace,
        door: DoorControl,
        *,
        site: str,
        store: StoreLike,
        state: LocalState,
        journal: JournalLike,
        passes: SeenPasses,
        online: Callable[[], bool],
        published: Callable[[dict[str, Any]], None],
        explained: Callable[[str | None, tuple[str, ...], float | None], None] | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.place = place
        self.door = door
        self.site = site
        self.store = store
        self.state = state
        self.journal = journal
        self.passes = passes
        self.online = online
        self.published = published
        # the name, trace and decision time in seconds, for the installer's UI only
        self.explained = explained
        self.now = now
        self._one_at_a_time = asyncio.Lock()
        self._retrying: set[asyncio.Task[None]] = set()
        self.retry_initial, self.retry_max = 0.2, 10.0  # finalise retries, seconds

    async def present(
        self, read: CredentialRead, decided: Callable[[bool], None] | None = None
    ) -> dict[str, Any]:
        """Decide a read, release the door on a grant, and return the final check-in.

        ``decided(granted)`` is called as soon as the decision is durable, before the door
        moves and long before the passage: the reader's LED and beep come then.
        """
        tapped = time.monotonic() - _seconds_since(read.at)  # the reader saw it then
        async with self._one_at_a_time:
            began = time.perf_counter()
            decision = self._decide(read)
            decided_in = time.perf_counter() - began
            await self._remember_pass(decision, read)
            checkin = self._checkin(read, decision)
            recording = time.perf_counter()
            entry = await self._journal_decision(checkin)  # durable before the lock moves
            durable_in = time.perf_counter() - recording
            if decided is not None:
                decided(decision.granted)
            passed, released_at = False, None
            try:
                if decision.granted:
                    outcome = await self.door.release()
                    passed, released_at = outcome.passed, getattr(outcome, "released_at", None)
            finally:  # whatever happened at the door, the record is closed (it holds nothing)
                charged = decision.charged if passed else 0
                final = await asyncio.shield(
                    self._finalise(entry, checkin, passed, charged, decision, decided_in)
                )
            logs.log_decision(final, decided_in)
            relay_s = None if released_at is None else released_at - tapped
            metrics.decision(final, decided_in, relay_s, durable_in)
            return final

    async def open_once(
        self, seconds: float | None, lock_moved: asyncio.Future[bool] | None = None
    ) -> dict[str, Any]:
        """Command ``open``: one timed release, journalled as a ``remote_open`` check-in.

        ``lock_moved`` is resolved once the lock was (or could not be) released."""
        async with self._one_at_a_time:
            checkin = CheckIn(
                at=self.now().isoformat(timespec="milliseconds"),
                door=self.place.id,
                zone=self.place.zone,
                direction=self.place.direction,
                credential="unknown",
                decision="granted",
                reason="remote_open",
                offline=not self.online(),
                entitlements_version=self.store.version,
            )
            entry = await self._journal_decision(checkin)
            passed = False
            try:
                passed = (await self.door.open_once(seconds, lock_moved)).passed
            finally:
                final = await asyncio.shield(self._finalise(entry, checkin, passed, 0))
            return final

    async def _journal_decision(self, checkin: CheckIn) -> Any:
        return await self.journal.record_decision(
            checkin.message(), passage_assumed=not self.place.senses_passage
        )

    async def _finalise(
        self,
        entry: Any,
        checkin: CheckIn,
        passed: bool,
        charged: int,
        decision: Decision | None = None,
        decided_in: float | None = None,
    ) -> dict[str, Any]:
        """Close the record; if the journal cannot now (disk full for a moment), keep trying
        in the background: the local state takes the outcome at once, the record follows
        to the central system when it is final, and later records do not wait for it."""
        try:
            final = await self.journal.finalise(entry.seq, passed=passed, charged=charged)
        except Exception as exc:  # JournalError mostly; retried below, never dropped
            log.error(
                "door %s: check-in seq %d could not be finalised (%s); retrying in the "
                "background, later check-ins are published meanwhile",
                self.place.id,
                entry.seq,
                exc,
            )
            final = {**checkin.message(), "id": entry.id, "seq": entry.seq}
            final.update(passed=passed, charged=charged)
            self.state.apply_checkin(final, own=True)
            task = asyncio.get_running_loop().create_task(
                self._finalise_later(entry.seq, passed, charged)
            )
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)
            return final
        self.state.apply_checkin(final, own=True)
        if self.explained is not None and decision is not None:
            self.explained(decision.display, decision.trace, decided_in)  # for published()
        self.published(final)
        return final

    async def _finalise_later(self, seq: int, passed: bool, charged: int) -> None:
        delay = self.retry_initial
        while True:
            await asyncio.sleep(delay)
            try:
                final = await self.journal.finalise(seq, passed=passed, charged=charged)
            except Exception as exc:  # still failing: wait longer (up to retry_max)
                delay = min(delay * 2, self.retry_max)
                log.warning("check-in seq %d still not final (%s)", seq, exc)
                continue
            log.info("check-in seq %d is final now", seq)
            self.published(final)
            return

    @property
    def unfinished(self) -> int:
        """Check-ins whose finalisation is being retried (the status shows them)."""
        return len(self._retrying)

    async def close(self) -> None:
        """Stop retrying (a record still open is finalised at the journal's next open)."""
        for task in list(self._retrying):
            task.cancel()
        await asyncio.gather(*self._retrying, return_exceptions=True)

    def _decide(self, read: CredentialRead) -> Decision:
        self.state.entitlements_at = self.store.updated_at
        presented = Presented(read.kind, read.value, read.format)
        door = DoorContext(
            self.place.id,
            self.place.zone,
            self.place.direction,  # type: ignore[arg-type]
            site=self.site,
            locked_down=self.door.mode == "lockdown",
        )
        return decide(Request(presented, door, read.at), self.store, self.state)

    async def _remember_pass(self, decision: Decision, read: CredentialRead) -> None:
        if decision.pass_seen is not None:
            # durable before the decision goes on: a used pass stays used after a power cut
            await asyncio.wrap_future(self.passes.add(*decision.pass_seen))
            self.state.seen_passes.add(decision.pass_seen)
        if decision.clock_unsynced:
            await self.journal.record_event(
                "clock_unsynced",
                door=self.place.id,
                detail={
                    "reader": read.reader,
                    "why": "phone pass refused until the clock is synced",
                },
                at=read.at,
            )

    def _checkin(self, read: CredentialRead, decision: Decision) -> CheckIn:
        rules = self.store.rules
        at = read.at.astimezone(rules.tz) if rules else read.at
        return CheckIn(
            at=at.isoformat(timespec="milliseconds"),
            door=self.place.id,
            zone=self.place.zone,
            direction=self.place.direction,
            credential=decision.credential,
            member=decision.member,
            ticket=decision.ticket,
            decision=decision.decision,
            reason=decision.reason,
            contract=decision.contract,
            charged=decision.charged,
            warnings=tuple(decision.warnings),
            offline=not self.online(),
            entitlements_version=self.store.version,
            member_message=decision.member_message or None,
            pass_seen=decision.pass_seen,  # peers add it to their replay caches
        )
