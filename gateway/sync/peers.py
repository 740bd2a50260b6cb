"""Peers' check-ins and occupancy, checked before they touch any state.

PROTOCOL.md, "Trust between gateways": a gateway certificate can say anything on its own
topics, and a broker without an ACL lets anyone say it. So a message on another gateway's
``checkin`` or ``occupancy`` topic is bounded in size, parsed defensively, its signature
verified against ``rules.gateways`` (``gw`` equal to the topic's), and every field checked
(:func:`checkin_problem`, :func:`occupancy_problem`, pure functions) before anything of it
is applied. A message that fails is dropped whole with ``bad_message`` (topic, reason).

Valid check-ins are kept at once, durably, in the passage history (de-duplicated by
``(gw, id)`` across restarts), and applied to the state at most ``RATE`` per second per
peer (the rest wait in a bounded queue and are applied as it drains), once each
(:class:`PeerEffects`). The wire process acknowledges a peer's check-in to the broker only
once it is kept: a gateway stopped or killed with check-ins waiting loses none of them (the
state is rebuilt from the history at start; what was not kept yet, the broker sends again).
A check-in naming a member or ticket this gateway does not know (its set may be behind) is
kept but changes no state. A phone pass a peer let through goes into this gateway's replay cache.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import metrics
from gateway.entitlements import SiteRules
from gateway.errors import BadMessage
from gateway.history import changes_state
from gateway.identity import signature_problem
from gateway.passes import SeenKey
from gateway.state import LocalState
from gateway.sync.topics import parse

log = logging.getLogger(__name__)

MAX_CHECKIN_BYTES = 16 * 2**10
MAX_OCCUPANCY_BYTES = 4 * 2**10
MAX_SEQ = 2**53 - 1
MAX_ZONE_COUNT = 100_000
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(minutes=5)
MAX_ID = 128
RATE = 100  # check-ins applied per second per peer, at most
QUEUE_LIMIT = 50_000  # check-ins waiting per peer; beyond that they are refused


# --- the checks (pure) -------------------------------------------------------------------


def parse_message(payload: bytes, limit: int, topic: str) -> dict[str, Any]:
    """A peer's JSON object, within ``limit`` bytes; :class:`BadMessage` otherwise."""
    if len(payload) > limit:
        raise BadMessage(f"too large: {len(payload)} bytes, the limit is {limit}", topic)
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadMessage("not valid JSON in UTF-8", topic) from None
    if not isinstance(message, dict):
        raise BadMessage("not a JSON object", topic)
    return message


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short_str(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def instant_problem(value: Any, now: datetime, clock_trusted: bool) -> str | None:
    """Why ``value`` is not an acceptable ``at`` of a peer's message, or None: a valid
    instant with an offset, not before 2020-01-01, at most 5 minutes ahead of a trusted
    clock."""
    if not isinstance(value, str) or len(value) > 64:
        return "at is not an ISO 8601 time"
    try:
        at = datetime.fromisoformat(value)
        if at.utcoffset() is None:
            return "at has no UTC offset"
        utc = at.astimezone(UTC)
    except (ValueError, OverflowError):
        return "at is not a valid instant"
    if utc < EARLIEST:
        return "at is before 2020-01-01"
    if clock_trusted and utc > now + MAX_AHEAD:
        return "at is more than 5 minutes ahead of this gateway's clock"
    return None


def max_charge(rules: SiteRules) -> int:
    """The highest credit price of any zone of the site: no check-in charges more."""
    return max((zone.credits for zone in rules.zones.values()), default=0)


def checkin_problem(
    c: Mapping[str, Any], rules: SiteRules, now: datetime, clock_trusted: bool
) -> str | None:
    """What is wrong with an authentic peer check-in, or None (PROTOCOL.md, "Peers'
    check-ins, checked before use")."""
    if not _short_str(c.get("id")):
        return "id missing or longer than 128 characters"
    if not _is_int(c.get("seq"), 1, MAX_SEQ):
        return "seq is not an integer from 1 to 2^53-1"
    problem = instant_problem(c.get("at"), now, clock_trusted)
    if problem is not None:
        return problem
    if c.get("zone") not in rules.zones:
        return "zone is not one of the site's zones"
    if c.get("direction") not in ("in", "out"):
        return "direction is not in or out"
    if c.get("decision") not in ("granted", "denied") or not isinstance(c.get("passed"), bool):
        return "decision/passed missing"
    for key in ("member", "ticket", "contract"):
        if c.get(key) is not None and not _short_str(c[key]):
            return f"{key} is not a string of at most 128 characters"
    highest = max_charge(rules)
    if not _is_int(c.get("charged", 0), 0, highest):
        return f"charged is not an integer from 0 to {highest}"
    if "pass" in c and c["pass"] is not None and pass_key(c["pass"]) is None:
        return "pass is not [device, t, nonce]"
    return None


def pass_key(value: Any) -> SeenKey | None:
    """A check-in's ``pass`` ``[device, t, nonce]`` as a replay-cache key, None if malformed."""
    if not isinstance(value, list) or len(value) != 3:
        return None
    device, t, nonce = value
    if not _short_str(device) or not _is_int(t, 0, MAX_SEQ) or not _short_str(nonce):
        return None
    return (device, t, nonce)


def occupancy_problem(body: Mapping[str, Any], rules: SiteRules) -> str | None:
    """What is wrong with an authentic peer occupancy message, or None: ``zones`` only of
    the site's rules with integer counts 0..100,000, ``upto_seq`` an integer."""
    zones = body.get("zones")
    if not isinstance(zones, dict):
        return "zones is not an object"
    for zone, count in zones.items():
        if zone not in rules.zones:
            return "zones names a zone that is not one of the site's"
        if not _is_int(count, 0, MAX_ZONE_COUNT):
            return f"zone counts must be integers from 0 to {MAX_ZONE_COUNT}"
    if not _is_int(body.get("upto_seq"), 0, MAX_SEQ):
        return "upto_seq is not an integer from 0 to 2^53-1"
    return None


# --- applying what passed ----------------------------------------------------------------


class HistoryLike(Protocol):
    """The passage history as peers need it (gateway.history.History)."""

    def add(self, checkin: Mapping[str, Any]) -> Future[bool]: ...


class PassesLike(Protocol):
    """The replay cache as peers need it (gateway.pass_cache.PassCache)."""

    def add(self, device: str, t: int, nonce: str) -> Future[None]: ...


class RecordsLike(Protocol):
    """Which members and tickets the set knows (gateway.store.EntitlementStore)."""

    def member(self, member_id: str) -> Any: ...

    def ticket(self, ticket_id: str) -> Any: ...


EventSink = Callable[[str, str | None, dict[str, Any]], None]
Kept = asyncio.Future[bool]  # a peer's check-in kept durably: True if new


class PeerEffects:
    """Applies valid peer check-ins to this gateway's state, each once, durably."""

    def __init__(
        self,
        history: HistoryLike,
        state: LocalState,
        passes: PassesLike,
        records: RecordsLike,
        record_event: EventSink,
    ) -> None:
        self.history = history
        self.state = state
        self.passes = passes
        self.records = records
        self.record_event = record_event

    def keep(self, checkin: dict[str, Any]) -> Kept:
        """Keep one checked peer check-in durably, before it is applied: its phone pass in
        the replay cache (and refused from now on), the check-in in the passage history.
        The future says whether it is new there (False: delivered before, or it changes no
        state)."""
        seen = pass_key(checkin.get("pass"))
        if seen is not None:
            self.state.seen_passes.add(seen)
        return asyncio.ensure_future(
            _kept(
                self.passes.add(*seen) if seen is not None else None,
                self.history.add(checkin) if changes_state(checkin) else None,
            )
        )

    async def apply(self, checkin: dict[str, Any], kept: Awaitable[bool]) -> bool:
        """Apply one checked peer check-in once :meth:`keep` kept it (``kept``); True when
        it changed the state."""
        if not await kept:
            return False  # delivered before (also before a restart): applied once
        member, ticket_id = checkin.get("member"), checkin.get("ticket")
        if (member and self.records.member(member) is None) or (
            ticket_id and self.records.ticket(ticket_id) is None
        ):
            log.info("peer check-in %s/%s names a member or ticket not in our set: kept, "
                     "not applied", checkin["gw"], checkin["seq"])  # fmt: skip
            return False
        self.state.apply_checkin(checkin, own=False)
        metrics.peer_checkin_accepted()
        if ticket_id:
            self._check_double_use(ticket_id, checkin)
        return True

    def _check_double_use(self, ticket_id: str, checkin: Mapping[str, Any]) -> None:
        ticket = self.records.ticket(ticket_id)
        used = self.state.ticket_uses(ticket_id)
        if ticket is not None and used > ticket.uses:
            self.record_event("ticket_double_use", checkin.get("door"),
                              {"ticket": ticket_id, "uses": used, "allowed": ticket.uses,
                               "gw": checkin.get("gw")})  # fmt: skip


async def _kept(pass_write: Future[None] | None, history_write: Future[bool] | None) -> bool:
    """Both writes durable (either may be None: nothing to write); whether the history
    took the check-in as new."""
    writes = [asyncio.wrap_future(w) for w in (pass_write, history_write) if w is not None]
    results = await asyncio.gather(*writes)
    return history_write is not None and bool(results[-1])


# --- the inbox ------------------------------------------------------------------------------


class PeerInbox:
    """Takes other gateways' ``checkin`` and ``occupancy`` messages of this site."""

    def __init__(
        self,
        *,
        site: str,
        gw: str,
        own_key: Ed25519PublicKey,
        rules: Callable[[], SiteRules | None],
        now: Callable[[], datetime],
        clock_trusted: Callable[[], bool],
        keep_checkin: Callable[[dict[str, Any]], Kept],
        apply_checkin: Callable[[dict[str, Any], Kept], Awaitable[bool]],
        apply_occupancy: Callable[[str, dict[str, int], int], None],
        peer_upto: Callable[[str], int],
        rate: int = RATE,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        """``keep_checkin`` (:meth:`PeerEffects.keep`) keeps a check-in as it is taken;
        ``apply_checkin`` (:meth:`PeerEffects.apply`) gets it with that future, later."""
        self.site, self.gw = site, gw
        self.own_key = own_key
        self.rules = rules
        self.now = now
        self.clock_trusted = clock_trusted
        self.apply_checkin = apply_checkin
        self.apply_occupancy = apply_occupancy
        self.peer_upto = peer_upto
        self.keep_checkin = keep_checkin
        self.rate = rate
        self.queue_limit = queue_limit
        self._queues: dict[str, collections.deque[tuple[dict[str, Any], Kept]]] = {}
        self._applied_at: dict[str, collections.deque[float]] = {}
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._key_cache: tuple[Mapping[str, str], dict[str, Ed25519PublicKey | None]] | None = None

    # --- what the link hands over --------------------------------------------------------

    async def handle(self, name: str, payload: bytes) -> bool:
        """Take a peer's check-in or occupancy; False if the topic is not one of those.
        A bad one raises :class:`BadMessage` (the link reports it) and changes nothing."""
        where = parse(name)
        if where is None or where.site != self.site or where.gw is None:
            return False
        if where.kind == "checkin":
            message = parse_message(payload, MAX_CHECKIN_BYTES, name)
            if where.gw == self.gw:
                self._own_echo(message, name)
                return True
            self._take_checkin(where.gw, message, name)
            return True
        if where.kind == "occupancy":
            message = parse_message(payload, MAX_OCCUPANCY_BYTES, name)
            if where.gw == self.gw:
                self._own_echo(message, name)
                return True
            self._take_occupancy(where.gw, message, name)
            return True
        return False

    def take_verified(self, name: str, message: dict[str, Any], key: str | None) -> Kept | None:
        """A peer's check-in or occupancy that the wire process parsed and whose signature
        it verified with ``key`` (gateway.sync.wire_child): checked and applied as in
        :meth:`handle`, without verifying again, if ``key`` is still the peer's key in the
        current set; otherwise verified here (the set changed meanwhile). A check-in's
        future ends once it is kept: then it may be acknowledged."""
        where = parse(name)
        if where is None or where.site != self.site or where.gw is None or where.gw == self.gw:
            raise BadMessage("not a peer's topic", name)
        rules = self.rules()
        verified = rules is not None and key is not None and rules.gateways.get(where.gw) == key
        if where.kind == "checkin":
            return self._take_checkin(where.gw, message, name, verified=verified)
        if where.kind == "occupancy":
            self._take_occupancy(where.gw, message, name, verified=verified)
            return None
        raise BadMessage("not a peer's topic", name)

    def pending(self, gw: str) -> int:
        """Check-ins of ``gw`` checked and waiting to be applied."""
        queue = self._queues.get(gw)
        return len(queue) if queue else 0

    async def close(self) -> None:
        """Stop applying. What waits was kept, and a restart rebuilds the
        state from the history; what was not, the broker still has (not acknowledged)."""
        for task in self._drains.values():
            task.cancel()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)
        self._drains.clear()

    # --- checks ----------------------------------------------------------------------------

    def _keys(self, rules: SiteRules) -> dict[str, Ed25519PublicKey | None]:
        """The registered keys of ``rules.gateways``, decoded once per set of rules."""
        if self._key_cache is None or self._key_cache[0] is not rules.gateways:
            self._key_cache = (rules.gateways, rules.gateway_keys())
        return self._key_cache[1]

    def _authentic(
        self, gw: str, message: dict[str, Any], name: str, verified: bool = False
    ) -> SiteRules:
        rules = self.rules()
        if rules is None:
            raise BadMessage("no entitlement set yet: peers cannot be verified", name)
        if verified:  # by the wire process, with the key the current set has for ``gw``
            return rules
        problem = signature_problem(message, gw, self._keys(rules))
        if problem is not None:
            raise BadMessage(problem, name)
        return rules

    def _own_echo(self, message: dict[str, Any], name: str) -> None:
        """Our own message coming back (MQTT 3.1.1 has no no-local): ignored when it is
        ours; anyone else's on our topic is a forgery."""
        problem = signature_problem(message, self.gw, {self.gw: self.own_key})
        if problem is not None:
            raise BadMessage(f"on this gateway's own topic: {problem}", name)

    def _take_checkin(
        self, gw: str, message: dict[str, Any], name: str, verified: bool = False
    ) -> Kept:
        rules = self._authentic(gw, message, name, verified)
        problem = checkin_problem(message, rules, self.now(), self.clock_trusted())
        if problem is not None:
            raise BadMessage(f"check-in: {problem}", name)
        queue = self._queues.setdefault(gw, collections.deque())
        if len(queue) >= self.queue_limit:
            raise BadMessage(f"check-in: {len(queue)} of this peer wait already", name)
        kept = self.keep_checkin(message)
        queue.append((message, kept))
        if gw not in self._drains:
            task = asyncio.create_task(self._drain(gw), name=f"peer {gw}")
            self._drains[gw] = task
        return kept

    def _take_occupancy(
        self, gw: str, message: dict[str, Any], name: str, verified: bool = False
    ) -> None:
        rules = self._authentic(gw, message, name, verified)
        problem = occupancy_problem(message, rules)
        if problem is not None:
            raise BadMessage(f"occupancy: {problem}", name)
        upto = message["upto_seq"]
        if upto < self.peer_upto(gw):
            raise BadMessage("occupancy: older than the one already applied", name)
        self.apply_occupancy(gw, dict(message["zones"]), upto)

    # --- applying, at most ``rate`` per second per peer ------------------------------------

    async def _drain(self, gw: str) -> None:
        queue = self._queues[gw]
        applied = self._applied_at.setdefault(gw, collections.deque(maxlen=self.rate))
        try:
            while queue:
                if len(applied) == self.rate:
                    wait = applied[0] + 1.0 - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                checkin, kept = queue.popleft()
                applied.append(time.monotonic())
                try:
                    await self.apply_checkin(checkin, kept)
                except Exception:  # one check-in's failure must not stop this peer's drain
                    log.exception("peer check-in %s/%s not applied", gw, checkin.get("seq"))
        finally:
            self._drains.pop(gw, None)
