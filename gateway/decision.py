"""The door decision (ENTITLEMENTS.md, "The decision"): a pure function.

``decide(request, store, state)`` reads the entitlement set through a small read-only
view, the local state and the instant given in the request; it reads no clock and
writes nothing. Given the same input it gives the same output. Every check it runs
is written to the trace, so "why was this member refused?" has an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from gateway.entitlements import WILDCARD, Contract, Member, SiteRules, Ticket
from gateway.passes import SeenKey, parse_pass, verify_pass
from gateway.schedules import local, minutes_between, period_key, schedule_covers
from gateway.state import LocalState, Passage

CONTRACT_CHECKS = (
    "not_started", "expired", "frozen", "site_not_allowed", "zone_not_allowed",
    "outside_schedule", "visit_limit", "no_credits",
)  # fmt: skip
TYPE_RANK = {"recurring": 0, "fixed": 1, "clipcard": 2}


class EntitlementView(Protocol):
    """The read-only view of the entitlement set that the decision needs."""

    @property
    def rules(self) -> SiteRules | None: ...

    def find(self, kind: str, value: str, fmt: str | None = None) -> Member | Ticket | None: ...

    def member(self, member_id: str) -> Member | None: ...


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential as a reader gave it: ``nfc`` (UID or card number), ``code`` or ``pass``."""

    kind: Literal["nfc", "code", "pass"]
    value: str
    format: str | None = None


@dataclass(frozen=True, slots=True)
class DoorContext:
    """The door a credential is presented at."""

    id: str
    zone: str
    direction: Literal["in", "out"]
    site: str | None = None
    locked_down: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """Everything that varies per presentation: the credential, the door and the instant."""

    credential: Presented
    door: DoorContext
    at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: granted or denied, exactly one reason, and what the check-in needs."""

    granted: bool
    reason: str
    credential: str
    member: str | None = None
    ticket: str | None = None
    contract: str | None = None
    charged: int = 0
    warnings: tuple[str, ...] = ()
    display: str | None = None
    member_message: str | None = None
    trace: tuple[str, ...] = ()
    pass_seen: SeenKey | None = None
    clock_unsynced: bool = False

    @property
    def decision(self) -> str:
        """``granted`` or ``denied``, as on the wire."""
        return "granted" if self.granted else "denied"

    def summary(self, message: str) -> dict[str, Any]:
        """The JSON object ``accessgw decide`` prints."""
        out: dict[str, Any] = {
            "decision": self.decision,
            "reason": self.reason,
            "warnings": list(self.warnings),
            "member": self.member,
            "contract": self.contract,
            "charged": self.charged,
            "message": message,
            "trace": list(self.trace),
        }
        if self.ticket is not None:
            out["ticket"] = self.ticket
        if self.member_message is not None:
            out["member_message"] = self.member_message
        return out


@dataclass
class _Run:
    """One decision in progress: inputs, what was found, and the trace."""

    request: Request
    rules: SiteRules
    state: LocalState
    wall: datetime
    credential: str = "unknown"
    warnings: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    pass_seen: SeenKey | None = None
    clock_unsynced: bool = False

    @property
    def today(self) -> date:
        return self.wall.date()

    def note(self, line: str) -> None:
        self.trace.append(line)

    def outcome(self, reason: str, record: Member | Ticket | None = None, **extra: Any) -> Decision:
        granted = reason == "ok"
        member = record if isinstance(record, Member) else None
        ticket = record if isinstance(record, Ticket) else None
        self.note(f"{'granted' if granted else 'denied'}: {reason}")
        return Decision(
            granted=granted,
            reason=reason,
            credential=self.credential,
            member=member.member if member else None,
            ticket=ticket.ticket if ticket else None,
            contract=extra.get("contract") if granted else None,
            charged=extra.get("charged", 0) if granted else 0,
            warnings=tuple(self.warnings),
            display=member.display if member else None,
            member_message=member.message if member else None,
            trace=tuple(self.trace),
            pass_seen=self.pass_seen,
            clock_unsynced=self.clock_unsynced,
        )


def decide(request: Request, store: EntitlementView, state: LocalState) -> Decision:
    """Decide whether ``request`` opens the door. Pure: no clock, no I/O, no mutation."""
    rules = store.rules
    cred = request.credential
    if rules is None:
        return Decision(
            False,
            "unknown_credential",
            _kind(cred),
            trace=("no entitlement set loaded yet", "denied: unknown_credential"),
        )
    run = _Run(request, rules, state, local(request.at, rules.tz))
    run.note(
        f"door {request.door.id}: zone {request.door.zone}, direction {request.door.direction}"
        f", at {run.wall.isoformat()} ({rules.timezone})"
    )
    record, reason = _resolve(run, store)
    if reason is not None:
        return run.outcome(reason)
    assert record is not None
    if request.door.direction == "out":
        run.note("exit: egress is never refused to a known credential")
        return run.outcome("ok", record)
    if request.door.locked_down or state.lockdown:
        run.note("door is locked down")
        return run.outcome("locked_down", record)
    if isinstance(record, Ticket):
        return _ticket(run, record)
    return _member(run, record)


def _kind(cred: Presented) -> str:
    return "phone" if cred.kind == "pass" else cred.kind


def _resolve(run: _Run, store: EntitlementView) -> tuple[Member | Ticket | None, str | None]:
    """Check 1: the credential resolves to a member or ticket; a pass must verify."""
    cred = run.request.credential
    run.credential = _kind(cred)
    if cred.kind != "pass":
        record = store.find(cred.kind, cred.value, cred.format)
        if record is None:
            run.note(f"{cred.kind} credential matches no member or ticket")
            return None, "unknown_credential"
        if isinstance(record, Ticket):
            run.credential = "ticket"
            run.note(f"{cred.kind} credential is ticket {record.ticket}")
        else:
            run.note(f"{cred.kind} credential belongs to member {record.member}")
        return record, None
    claim = parse_pass(cred.value)
    if isinstance(claim, str):
        run.note(f"pass rejected: {claim}")
        return None, "bad_pass"
    member = store.member(claim.member)
    check = verify_pass(
        claim,
        member,
        run.request.at,
        window_s=run.rules.pass_window_s,
        clock_synced=run.state.clock_synced,
        seen=run.state.seen_passes,
    )
    run.note(check.detail)
    if check.reason is not None:
        run.clock_unsynced = check.reason == "pass_expired" and not run.state.clock_synced
        return None, check.reason
    run.pass_seen = claim.seen_key
    return member, None


def _ticket(run: _Run, ticket: Ticket) -> Decision:
    """Checks 4 and 13 for a ticket."""
    zone = run.request.door.zone
    if not ticket.valid_from <= run.request.at < ticket.valid_to:
        run.note(f"ticket window {ticket.valid_from.isoformat()} .. {ticket.valid_to.isoformat()}")
        return run.outcome("ticket_not_valid_now", ticket)
    if not _covers(ticket.zones, zone):
        run.note(f"ticket zones {ticket.zones} do not include {zone}")
        return run.outcome("zone_not_allowed", ticket)
    used = run.state.ticket_uses(ticket.ticket)
    if used >= ticket.uses:
        run.note(f"ticket used {used} of {ticket.uses} times")
        return run.outcome("ticket_used", ticket)
    run.note(f"ticket valid now for {zone}, used {used} of {ticket.uses}")
    if _full(run):
        return run.outcome("capacity_full", ticket)
    return run.outcome("ok", ticket)


def _member(run: _Run, member: Member) -> Decision:
    """Checks 3 and 5-13 for a member or staff."""
    rules, at, zone = run.rules, run.request.at, run.request.door.zone
    block = next((b for b in member.blocks if b.covers(at)), None)
    if block is not None:
        run.note(f"blocked {block.from_.isoformat()} .. {block.to.isoformat()} ({block.reason})")
        return run.outcome("blocked", member)
    if member.role == "staff":
        if not _in_schedule(run, rules.staff_schedule, "staff_schedule"):
            return run.outcome("outside_schedule", member)
        run.note("staff: no contract, charge or occupancy limit applies")
        return run.outcome("ok", member)
    if _stale(run):
        return run.outcome("entitlements_stale", member)
    if not _in_schedule(run, rules.opening_schedule, "opening_schedule"):
        return run.outcome("site_closed", member)
    if rules.zone(zone).booking and not _booked(run, member):
        return run.outcome("no_booking", member)
    free = _free_reentry(run, member)
    chosen, failure = _choose_contract(run, member, free)
    if chosen is None:
        return run.outcome(failure, member)
    if member.unpaid and rules.unpaid != "allow":
        run.note(f"member is unpaid; site policy {rules.unpaid}")
        if rules.unpaid == "deny":
            return run.outcome("unpaid", member)
        run.warnings.append("unpaid")
    if rules.medical != "allow" and (
        member.medical_until is None or member.medical_until < run.today
    ):
        run.note(f"medical certificate until {member.medical_until}; site policy {rules.medical}")
        if rules.medical == "deny":
            return run.outcome("medical_expired", member)
        run.warnings.append("medical_expired")
    if _anti_passback(run, member):
        if rules.zone(zone).anti_passback == "hard":
            return run.outcome("anti_passback", member)
        run.warnings.append("anti_passback")
    if _full(run):
        return run.outcome("capacity_full", member)
    charged = 0
    if chosen.type == "clipcard" and not free:
        charged = rules.zone(zone).credits
    run.note(f"charge {charged} credit(s) on {chosen.id}" + (" (free re-entry)" if free else ""))
    return run.outcome("ok", member, contract=chosen.id, charged=charged)


def _covers(ids: Sequence[str], wanted: str) -> bool:
    return WILDCARD in ids or wanted in ids


def _in_schedule(run: _Run, name: str | None, label: str) -> bool:
    if name is None:
        run.note(f"{label}: none, always")
        return True
    ok = schedule_covers(run.rules.schedules[name], run.wall)
    run.note(f"{label} {name!r} {'covers' if ok else 'does not cover'} {run.wall:%a %H:%M}")
    return ok


def _stale(run: _Run) -> bool:
    limit, since = run.rules.max_offline_hours, run.state.entitlements_at
    if limit is None or since is None:
        return False
    hours = minutes_between(since, run.request.at) / 60
    run.note(f"entitlements updated {hours:.1f} h ago (limit {limit} h)")
    return hours > limit


def _booked(run: _Run, member: Member) -> bool:
    zone, at = run.request.door.zone, run.request.at
    early = run.rules.zone(zone).booking_early_minutes
    for booking in member.bookings:
        if booking.zone == zone and booking.from_ - timedelta(minutes=early) <= at < booking.to:
            run.note(f"booking {booking.id} covers now (from {early} min before its start)")
            return True
    run.note(f"zone {zone} needs a booking; none covers now")
    return False


def _entries(run: _Run, member: Member) -> list[Passage]:
    return [p for p in run.state.passages_of(member.member, run.request.at) if p.direction == "in"]


def _is_reentry(earlier: Passage, later_at: datetime, run: _Run) -> bool:
    """``later_at`` is within ``reentry_free_minutes`` of ``earlier`` on the same local date."""
    tz, minutes = run.rules.tz, run.rules.reentry_free_minutes
    gap = minutes_between(earlier.at, later_at)
    return 0 <= gap <= minutes and local(earlier.at, tz).date() == local(later_at, tz).date()


def _free_reentry(run: _Run, member: Member) -> bool:
    zone = run.request.door.zone
    for p in reversed(_entries(run, member)):
        if p.zone == zone and _is_reentry(p, run.request.at, run):
            run.note(f"free re-entry: entered {zone} at {p.at.isoformat()}")
            return True
    return False


def _visits(run: _Run, member: Member, contract: Contract) -> int:
    """Granted entries on ``contract`` in the current period, free re-entries not counted."""
    assert contract.max_visits is not None
    per, tz = contract.max_visits.per, run.rules.tz
    now_key = period_key(per, run.today)
    entries = _entries(run, member)
    count = 0
    for i, p in enumerate(entries):
        if p.contract != contract.id or period_key(per, local(p.at, tz).date()) != now_key:
            continue
        if any(q.zone == p.zone and _is_reentry(q, p.at, run) for q in entries[:i]):
            continue
        count += 1
    return count


def _contract_failure(run: _Run, member: Member, c: Contract, free: bool) -> str | None:
    """The first check of the contract list that ``c`` fails, or None when usable."""
    today, zone = run.today, run.request.door.zone
    if c.start is not None and today < c.start:
        return "not_started"
    if c.end is not None and today > c.end:
        return "expired"
    if any(f.covers(today) for f in c.freezes):
        return "frozen"
    if not _covers(c.sites, run.request.door.site or run.rules.site):
        return "site_not_allowed"
    if not _covers(c.zones, zone):
        return "zone_not_allowed"
    if c.schedule is not None and not schedule_covers(run.rules.schedules[c.schedule], run.wall):
        return "outside_schedule"
    if c.max_visits is not None and not free and _visits(run, member, c) >= c.max_visits.count:
        return "visit_limit"
    if c.type == "clipcard" and not free:
        balance = (c.credits or 0) - run.state.charged(member.member, c.id)
        if balance < run.rules.zone(zone).credits:
            return "no_credits"
    return None


def _choose_contract(run: _Run, member: Member, free: bool) -> tuple[Contract | None, str]:
    """Check 9: the usable contract to use, or the most specific reason none is usable."""
    if not member.contracts:
        run.note("member has no contracts")
        return None, "no_contract"
    usable: list[tuple[tuple[int, int, date, int], Contract]] = []
    furthest: tuple[int, str, str] | None = None
    for index, c in enumerate(member.contracts):
        failure = _contract_failure(run, member, c, free)
        run.note(f"contract {c.id} ({c.type}): {failure or 'usable'}")
        if failure is None:
            # Among clip cards the one ending soonest; open-ended last; ties keep record order.
            if c.type == "clipcard":
                key = (TYPE_RANK[c.type], int(c.end is None), c.end or date.max, index)
            else:
                key = (TYPE_RANK[c.type], 0, date.min, index)
            usable.append((key, c))
            continue
        depth = CONTRACT_CHECKS.index(failure)
        if furthest is None or depth > furthest[0]:
            furthest = (depth, failure, c.id)
    if usable:
        chosen = min(usable, key=lambda item: item[0])[1]
        run.note(f"using contract {chosen.id}")
        return chosen, "ok"
    assert furthest is not None
    run.note(f"no usable contract; {furthest[2]} got furthest ({furthest[1]})")
    return None, furthest[1]


def _anti_passback(run: _Run, member: Member) -> bool:
    """True when the member entered the zone recently and has not left it since."""
    zone = run.request.door.zone
    mode = run.rules.zone(zone).anti_passback
    if mode == "none":
        return False
    last_entry: datetime | None = None
    for p in run.state.passages_of(member.member, run.request.at):
        if p.zone == zone:
            last_entry = p.at if p.direction == "in" else None
    minutes = run.rules.anti_passback_minutes
    if last_entry is not None and minutes_between(last_entry, run.request.at) < minutes:
        run.note(f"anti-passback ({mode}): entered {zone} at {last_entry.isoformat()}, no exit")
        return True
    run.note(f"anti-passback ({mode}): clear")
    return False


def _full(run: _Run) -> bool:
    zone = run.request.door.zone
    capacity = run.rules.zone(zone).capacity
    if capacity is None:
        return False
    inside = run.state.inside(zone)
    run.note(f"zone {zone}: {inside} inside, capacity {capacity}")
    return inside >= capacity
