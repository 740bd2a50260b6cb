"""The checks on peers' messages, as pure functions, and how checked ones are applied
(PROTOCOL.md, "Peers' check-ins, checked before use", "Occupancy from peers")."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.entitlements import parse_rules
from gateway.errors import BadMessage
from gateway.history import History
from gateway.pass_cache import PassCache
from gateway.state import LocalState
from gateway.sync.peers import PeerEffects, PeerInbox, checkin_problem, occupancy_problem
from tests.trust.helpers import SITE, Peer, keep_and_apply, kept_at_once, rules, until

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = parse_rules(rules({}))
PEER = Peer("door-2")


def checkin(**fields: Any) -> dict[str, Any]:
    return PEER.checkin(**{"at": NOW.isoformat(), **fields})


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": 2**53}, "seq"),
        ({"seq": True}, "seq"),
        ({"at": "2026-12-01T12:00:00"}, "offset"),
        ({"at": "2019-12-31T23:59:59+00:00"}, "2020-01-01"),
        ({"at": (NOW + timedelta(minutes=6)).isoformat()}, "5 minutes ahead"),
        ({"at": "9999-12-31T23:59:59-23:59"}, "valid instant"),
        ({"zone": "pool"}, "zone"),
        ({"charged": -1}, "charged"),
        ({"charged": 3}, "charged"),  # the dearest zone (spa) costs 2
        ({"charged": 1.0}, "charged"),
        ({"direction": "sideways"}, "direction"),
        ({"member": 7}, "member"),
        ({"pass": ["dev-1", "t", "n"]}, "pass"),
    ],
)
def test_a_peer_check_in_failing_a_field_check_is_refused(fields: dict[str, Any], problem: str):
    found = checkin_problem(checkin(**fields), RULES, NOW, clock_trusted=True)
    assert found is not None and problem in found


def test_a_valid_peer_check_in_passes_and_the_future_bound_needs_a_trusted_clock():
    assert checkin_problem(checkin(charged=2), RULES, NOW, clock_trusted=True) is None
    later = checkin(at=(NOW + timedelta(hours=2)).isoformat())
    assert checkin_problem(later, RULES, NOW, clock_trusted=False) is None
    assert checkin_problem(later, RULES, NOW, clock_trusted=True) is not None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"zones": {"gym": 1}}, "upto_seq"),
        ({"zones": {"pool": 1}, "upto_seq": 1}, "zone"),
        ({"zones": {"gym": 100_001}, "upto_seq": 1}, "counts"),
        ({"zones": {"gym": -1}, "upto_seq": 1}, "counts"),
        ({"zones": [], "upto_seq": 1}, "zones"),
    ],
)
def test_a_peer_occupancy_failing_a_check_is_refused(body: dict[str, Any], problem: str):
    found = occupancy_problem(body, RULES)
    assert found is not None and problem in found


class Records:
    def member(self, member_id: str) -> Any:
        return object() if member_id in ("M1", "M2", "M3") else None

    def ticket(self, ticket_id: str) -> Any:
        return None


async def test_an_unknown_member_is_kept_but_changes_no_state_and_a_repeat_is_applied_once(
    tmp_path: Path,
):
    history = History.open(tmp_path / "history.sqlite")
    passes = PassCache.open(tmp_path / "passes.sqlite")
    state = LocalState()
    effects = PeerEffects(history, state, passes, Records(), lambda *a: None)
    try:
        stranger = checkin(member="M99")
        assert not await keep_and_apply(effects, stranger)
        assert state.passages == {} and state.inside("gym") == 0
        known = checkin(member="M1", **{"pass": ["dev-1", 1_764_590_400, "bm9uY2Vub25jZQ"]})
        assert await keep_and_apply(effects, known)
        assert not await keep_and_apply(effects, dict(known))  # delivered again
        assert state.inside("gym") == 1 and len(state.passages["M1"]) == 1
        assert ("dev-1", 1_764_590_400, "bm9uY2Vub25jZQ") in state.seen_passes
    finally:
        history.close()
        passes.close()
    reopened = History.open(tmp_path / "history.sqlite")  # after a restart: still once
    try:
        effects = PeerEffects(reopened, LocalState(), PassCache.open(tmp_path / "p2"), Records(),
                              lambda *a: None)  # fmt: skip
        assert not await keep_and_apply(effects, dict(known))
        rebuilt = reopened.rebuild("door-1", NOW, RULES.tz, {})
        assert rebuilt.peer_count("door-2", "gym") == 2  # the stranger's row counts once known
    finally:
        reopened.close()


async def test_at_most_100_check_ins_per_second_of_one_peer_are_applied_the_rest_later():
    applied: list[float] = []

    async def apply(checkin: dict[str, Any], kept: Any) -> bool:
        applied.append(time.monotonic())
        return True

    inbox = PeerInbox(
        site=SITE, gw="door-1", own_key=PEER.key.public_key(), rules=lambda: RULES,
        now=lambda: NOW, clock_trusted=lambda: True, keep_checkin=kept_at_once, apply_checkin=apply,
        apply_occupancy=lambda *a: None, peer_upto=lambda gw: 0,
    )  # fmt: skip
    keyed = parse_rules(rules({"door-2": PEER.public_key_b64}))
    inbox.rules = lambda: keyed
    name = f"acs/v1/{SITE}/gw/door-2/checkin"
    started = time.monotonic()
    for _ in range(150):
        assert await inbox.handle(name, PEER.sign(checkin()))
    await asyncio.sleep(0.3)
    assert len(applied) == 100 and inbox.pending("door-2") == 50
    await until(lambda: len(applied) == 150)
    assert applied[100] - applied[0] >= 1.0 and applied[-1] - started < 3
    with pytest.raises(BadMessage, match="unsigned"):
        await inbox.handle(name, b'{"gw": "door-2"}')
    await inbox.close()


def test_a_peer_charge_the_central_already_counted_is_not_charged_again():
    state = LocalState()
    state.counted({"door-2": 5})  # the set's credits include door-2's check-ins up to 5
    state.apply_checkin(checkin(seq=5, member="M3", contract="K3", charged=1), own=False)
    assert state.charged("M3", "K3") == 0  # it arrived after the central counted it
    state.apply_checkin(checkin(seq=6, member="M3", contract="K3", charged=1), own=False)
    assert state.charged("M3", "K3") == 1
    state.counted({"door-1": 9})  # a delta naming another gateway only
    assert state.charged("M3", "K3") == 1 and state.counted_upto == {"door-2": 5, "door-1": 9}
