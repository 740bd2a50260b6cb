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
from datetime import datetime
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


class JournalLike(Protocol):
    """What the entrance needs of the journal (gateway.journal.Journal provides it)."""

    async def record_decision(self, checkin: dict[str, Any]) -> Any: ...

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


@dataclass(frozen=True)
class DoorPlace:
    """Where a door is: its id, zone, direction and display language."""

    id: str
    zone: str
    direction: str
    language: str = "en"


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
        explained: Callable[[str | None, tuple[str, ...]], None] | None = None,
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
        self.explained = explained  # the name and trace, for the installer's UI only
        self._one_at_a_time = asyncio.Lock()

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
            entry = await self.journal.record_decision(checkin)  # durable before the lock moves
            if decided is not None:
                decided(decision.granted)
            passed, released_at = False, None
            if decision.granted:
                outcome = await self.door.release()
                passed, released_at = outcome.passed, getattr(outcome, "released_at", None)
            final = await self.journal.finalise(
                entry.seq, passed=passed, charged=decision.charged if passed else 0
            )
            self.state.apply_checkin(final, own=True)
            if self.explained is not None:
                self.explained(decision.display, decision.trace)
            self.published(final)
            logs.log_decision(final, decided_in)
            relay_s = None if released_at is None else released_at - tapped
            metrics.decision(final, decided_in, relay_s)
            return final

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

    def _checkin(self, read: CredentialRead, decision: Decision) -> dict[str, Any]:
        rules = self.store.rules
        at = read.at.astimezone(rules.tz) if rules else read.at
        checkin: dict[str, Any] = {
            "at": at.isoformat(timespec="milliseconds"),
            "door": self.place.id,
            "zone": self.place.zone,
            "direction": self.place.direction,
            "credential": decision.credential,
            "member": decision.member,
            "ticket": decision.ticket,
            "decision": decision.decision,
            "reason": decision.reason,
            "contract": decision.contract,
            "charged": decision.charged,
            "passed": False,
            "warnings": list(decision.warnings),
            "offline": not self.online(),
            "entitlements_version": self.store.version,
        }
        if decision.member_message:
            checkin["member_message"] = decision.member_message  # for the reception
        if decision.pass_seen is not None:  # peers add it to their replay caches
            checkin["pass"] = list(decision.pass_seen)
        return checkin
