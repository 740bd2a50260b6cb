"""Local state: what the decision needs besides the entitlement set.

Occupancy, recent passages (re-entry, visit limits, anti-passback), used tickets,
clip-card charges not yet counted by the central system, seen pass tokens, and
whether the clock and the set can be trusted. The decision only reads it; the
daemon updates it from final check-ins, its own and other gateways' of the site.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from gateway.passes import SeenKey

Direction = Literal["in", "out"]
PASSAGE_HORIZON = timedelta(days=32)  # enough for a calendar month of max_visits
MAX_PEER_STEPS = 100_000  # a peer's check-ins kept apart from its occupancy message


@dataclass(frozen=True, slots=True)
class Passage:
    """A granted passage someone walked through (an entry or an exit)."""

    member: str
    zone: str
    direction: Direction
    at: datetime
    contract: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """Clip-card credits charged at a gateway that the central system has not counted yet."""

    member: str
    contract: str
    credits: int
    gw: str | None = None
    seq: int | None = None


@dataclass
class LocalState:
    """The gateway's local state, plain data. Decisions read it; the daemon updates it."""

    own_inside: dict[str, int] = field(default_factory=dict)
    own_upto_seq: int = 0  # the highest own seq whose passage is in own_inside
    # Peers' counts as of their last occupancy message (covering their seqs up to
    # peer_upto[gw]), and their later check-ins' steps by seq until the next one covers them.
    peer_inside: dict[str, dict[str, int]] = field(default_factory=dict)
    peer_upto: dict[str, int] = field(default_factory=dict)
    peer_steps: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)
    # The sum of each peer's steps by zone, kept as they change: a capacity decision reads
    # it instead of summing up to MAX_PEER_STEPS steps on the doors' loop.
    peer_step_totals: dict[str, dict[str, int]] = field(default_factory=dict)
    passages: dict[str, list[Passage]] = field(default_factory=dict)
    used_tickets: dict[str, int] = field(default_factory=dict)
    charges: list[Charge] = field(default_factory=list)
    seen_passes: set[SeenKey] = field(default_factory=set)
    counted_upto: dict[str, int] = field(default_factory=dict)  # the set's checkins_upto
    entitlements_at: datetime | None = None
    clock_synced: bool = True
    lockdown: bool = False

    # --- what the decision asks ---------------------------------------------------------

    def inside(self, zone: str) -> int:
        """People inside ``zone`` across the site: this gateway's count plus its peers'."""
        peers = set(self.peer_inside) | set(self.peer_step_totals)
        return self.own_inside.get(zone, 0) + sum(self.peer_count(gw, zone) for gw in peers)

    def peer_count(self, gw: str, zone: str) -> int:
        """People inside ``zone`` through a peer's doors: its occupancy plus later check-ins."""
        base = self.peer_inside.get(gw, {}).get(zone, 0)
        return max(0, base + self.peer_step_totals.get(gw, {}).get(zone, 0))

    def passages_of(self, member: str, until: datetime) -> list[Passage]:
        """The member's passages up to and including ``until``, oldest first."""
        items = self.passages.get(member, [])
        return items[: bisect.bisect_right([p.at for p in items], until)]

    def charged(self, member: str, contract: str) -> int:
        """Credits charged on a contract that the central system has not counted yet."""
        return sum(c.credits for c in self.charges if c.member == member and c.contract == contract)

    def ticket_uses(self, ticket: str) -> int:
        """How often a ticket has been used at this site, as far as this gateway knows."""
        return self.used_tickets.get(ticket, 0)

    # --- how the daemon updates it ------------------------------------------------------

    def add_passage(self, passage: Passage) -> None:
        """Remember a passage, keeping each member's list in time order."""
        items = self.passages.setdefault(passage.member, [])
        bisect.insort(items, passage, key=lambda p: p.at)

    def apply_checkin(
        self, checkin: Mapping[str, Any], *, own: bool, count_inside: bool = True
    ) -> None:
        """Apply a final check-in (own or a peer's).

        Only granted check-ins that someone walked through change anything. The daemon
        compares ``ticket_uses`` with the ticket's ``uses`` afterwards to report a
        ``ticket_double_use`` (offline double use is reported, never silently merged).
        """
        if checkin.get("decision") != "granted" or not checkin.get("passed"):
            return
        zone, direction = str(checkin.get("zone")), checkin.get("direction")
        at = datetime.fromisoformat(str(checkin["at"]))
        member, ticket = checkin.get("member"), checkin.get("ticket")
        if member and direction in ("in", "out"):
            self.add_passage(Passage(member, zone, direction, at, checkin.get("contract")))
            charged = int(checkin.get("charged") or 0)
            if charged and checkin.get("contract") and not self._already_counted(checkin):
                self.charges.append(
                    Charge(
                        member, checkin["contract"], charged, checkin.get("gw"), checkin.get("seq")
                    )
                )
        if ticket and direction == "in":
            self.used_tickets[ticket] = self.used_tickets.get(ticket, 0) + 1
        if not count_inside:
            return
        step = 1 if direction == "in" else -1
        seq = checkin.get("seq")
        if own:
            self.own_inside[zone] = max(0, self.own_inside.get(zone, 0) + step)
            if isinstance(seq, int):
                self.own_upto_seq = max(self.own_upto_seq, seq)
            return
        gw = str(checkin.get("gw"))
        if isinstance(seq, int) and seq <= self.peer_upto.get(gw, 0):
            return  # already in the peer's last occupancy message
        steps = self.peer_steps.setdefault(gw, {})
        key = seq if isinstance(seq, int) else -len(steps) - 1
        if key in steps:  # the same seq again: it replaces the step it had
            self._add_peer_step(gw, *steps.pop(key), sign=-1)
        steps[key] = (zone, step)
        self._add_peer_step(gw, zone, step)
        if len(steps) > MAX_PEER_STEPS:
            # No occupancy for a long while: fold the earliest received into the base (the
            # first key, as a dict keeps its order; min() would scan them all on every
            # check-in from then on).
            old_zone, old_step = steps.pop(next(iter(steps)))
            self._add_peer_step(gw, old_zone, old_step, sign=-1)
            base = self.peer_inside.setdefault(gw, {})
            base[old_zone] = max(0, base.get(old_zone, 0) + old_step)

    def _add_peer_step(self, gw: str, zone: str, step: int, sign: int = 1) -> None:
        totals = self.peer_step_totals.setdefault(gw, {})
        totals[zone] = totals.get(zone, 0) + sign * step

    def _already_counted(self, checkin: Mapping[str, Any]) -> bool:
        """Whether the set's credits already include this check-in's charge: a peer's
        check-in can arrive after the central system counted it (it heard it first)."""
        seq, gw = checkin.get("seq"), checkin.get("gw")
        return isinstance(seq, int) and isinstance(gw, str) and seq <= self.counted_upto.get(gw, 0)

    def counted(self, checkins_upto: Mapping[str, int]) -> None:
        """Forget charges the central system has counted in the set's clip-card credits."""
        for gw, upto in checkins_upto.items():  # only grows; a delta may name some gateways
            self.counted_upto[gw] = max(upto, self.counted_upto.get(gw, 0))
        self.charges = [
            c
            for c in self.charges
            if c.gw is None or c.seq is None or c.seq > checkins_upto.get(c.gw, 0)
        ]

    def set_peer_occupancy(self, gw: str, zones: Mapping[str, int], upto_seq: int) -> None:
        """A peer's occupancy message: its counts include its check-ins up to ``upto_seq``
        (PROTOCOL.md, Clarifications, Peers); later ones stay added on top of them."""
        self.peer_inside[gw] = {z: max(0, int(n)) for z, n in zones.items()}
        self.peer_upto[gw] = upto_seq
        steps = self.peer_steps.get(gw)
        if steps:
            self.peer_steps[gw] = steps = {s: v for s, v in steps.items() if s > upto_seq}
            self.peer_step_totals[gw] = {}  # summed again from the steps kept
            for zone, step in steps.values():
                self._add_peer_step(gw, zone, step)

    def forget_before(self, instant: datetime) -> None:
        """Drop passages older than the longest period any rule looks back over."""
        cutoff = instant - PASSAGE_HORIZON
        for member in list(self.passages):
            kept = [p for p in self.passages[member] if p.at >= cutoff]
            if kept:
                self.passages[member] = kept
            else:
                del self.passages[member]


def state_from_json(data: Mapping[str, Any], *, until: datetime | None = None) -> LocalState:
    """Build local state from the ``STATE.json`` format of ``accessgw decide`` (README).

    Raises ``ValueError``/``KeyError``/``TypeError`` with the offending key on bad input.
    """
    state = LocalState()
    inside = data.get("inside", {})
    if not isinstance(inside, Mapping):
        raise ValueError("inside: must be an object of zone -> count")
    state.own_inside = {str(z): _int(n, f"inside.{z}") for z, n in inside.items()}
    for i, raw in enumerate(_list(data, "passages")):
        direction = raw.get("direction")
        if direction not in ("in", "out"):
            raise ValueError(f"passages[{i}].direction: must be in or out")
        at = _time(raw.get("at"), f"passages[{i}].at")
        if until is not None and at > until:
            continue  # passages later than the decision's instant are ignored
        state.add_passage(
            Passage(
                _str(raw.get("member"), f"passages[{i}].member"),
                _str(raw.get("zone"), f"passages[{i}].zone"),
                direction,
                at,
                raw.get("contract"),
            )
        )
    used = data.get("used_tickets", {})
    if not isinstance(used, Mapping):
        raise ValueError("used_tickets: must be an object of ticket -> uses")
    state.used_tickets = {str(t): _int(n, f"used_tickets.{t}") for t, n in used.items()}
    for i, raw in enumerate(_list(data, "charges")):
        state.charges.append(
            Charge(
                _str(raw.get("member"), f"charges[{i}].member"),
                _str(raw.get("contract"), f"charges[{i}].contract"),
                _int(raw.get("credits"), f"charges[{i}].credits"),
            )
        )
    for i, raw in enumerate(_list(data, "seen_passes")):
        if not isinstance(raw, list) or len(raw) != 3:
            raise ValueError(f"seen_passes[{i}]: must be [device, t, nonce]")
        state.seen_passes.add((_str(raw[0], "device"), _int(raw[1], "t"), _str(raw[2], "nonce")))
    if data.get("entitlements_at") is not None:
        state.entitlements_at = _time(data["entitlements_at"], "entitlements_at")
    state.clock_synced = _bool(data.get("clock_synced", True), "clock_synced")
    state.lockdown = _bool(data.get("lockdown", False), "lockdown")
    return state


def _list(data: Mapping[str, Any], key: str) -> Iterable[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: must be a list")
    for i, item in enumerate(value):
        if key != "seen_passes" and not isinstance(item, Mapping):
            raise ValueError(f"{key}[{i}]: must be an object")
    return value


def _int(value: object, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key}: must be an integer")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: must be a non-empty string")
    return value


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false")
    return value


def _time(value: object, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(_str(value, key))
    except ValueError:
        raise ValueError(f"{key}: must be an ISO 8601 time with offset") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key}: must carry a UTC offset")
    return parsed
