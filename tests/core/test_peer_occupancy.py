"""Peers' occupancy in the local state: what a capacity decision reads, and what it costs.

A peer's check-ins count on top of its last occupancy message until the next one covers
them; up to MAX_PEER_STEPS of them are kept. A capacity decision reads their sum per zone,
kept as steps come and go, so it never walks the steps on the doors' loop.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import state as state_module
from gateway.state import LocalState

ZONES = ["gym", "spa"]


def peer_checkin(gw: str, seq: int, zone: str, direction: str) -> dict[str, Any]:
    return {
        "gw": gw, "seq": seq, "zone": zone, "direction": direction, "decision": "granted",
        "passed": True, "at": "2026-12-02T10:00:00+01:00", "member": f"M{seq}",
    }  # fmt: skip


def counted_from_steps(state: LocalState, zone: str) -> int:
    """The site's count as the steps themselves give it (the reference)."""
    total = state.own_inside.get(zone, 0)
    for gw in set(state.peer_inside) | set(state.peer_steps):
        steps = state.peer_steps.get(gw, {}).values()
        base = state.peer_inside.get(gw, {}).get(zone, 0)
        total += max(0, base + sum(step for z, step in steps if z == zone))
    return total


class Untouchable(dict):  # type: ignore[type-arg]
    """A peer's steps that fail the test if anything walks them."""

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the steps were walked")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the steps were walked")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the steps were walked")


def test_a_capacity_check_does_not_walk_the_peers_steps():
    state = LocalState()
    for seq in range(1, 5001):
        state.apply_checkin(peer_checkin("door-2", seq, "gym", "in"), own=False)
    state.peer_steps["door-2"] = Untouchable(state.peer_steps["door-2"])
    assert state.inside("gym") == 5000
    assert state.peer_count("door-2", "spa") == 0


def test_folding_past_the_bound_does_not_scan_the_steps(monkeypatch):
    monkeypatch.setattr(state_module, "MAX_PEER_STEPS", 100)
    state = LocalState()
    for seq in range(1, 101):
        state.apply_checkin(peer_checkin("door-2", seq, "gym", "in"), own=False)

    def no_min(*_: Any, **__: Any) -> Any:
        raise AssertionError("min() scanned the steps")

    monkeypatch.setattr(state_module, "min", no_min, raising=False)
    state.apply_checkin(peer_checkin("door-2", 101, "gym", "in"), own=False)
    assert len(state.peer_steps["door-2"]) == 100
    assert 1 not in state.peer_steps["door-2"]  # the earliest went into the base
    assert state.peer_inside["door-2"] == {"gym": 1} and state.inside("gym") == 101


step = st.tuples(
    st.sampled_from(["checkin", "checkin", "checkin", "occupancy"]),
    st.sampled_from(["door-2", "door-3"]),
    st.integers(1, 40),  # seq (a seq may come twice) or an occupancy's upto
    st.sampled_from(ZONES),
    st.sampled_from(["in", "in", "out"]),
    st.integers(0, 5),  # an occupancy's count
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=80), st.integers(3, 20))
def test_the_kept_sums_always_equal_the_steps(events, bound):
    original = state_module.MAX_PEER_STEPS
    state_module.MAX_PEER_STEPS = bound
    try:
        state = LocalState()
        for kind, gw, n, zone, direction, count in events:
            if kind == "checkin":
                state.apply_checkin(peer_checkin(gw, n, zone, direction), own=False)
            else:
                state.set_peer_occupancy(gw, {zone: count}, n)
            for z in ZONES:
                assert state.inside(z) == counted_from_steps(state, z)
    finally:
        state_module.MAX_PEER_STEPS = original
