"""Checks 10-13: unpaid, medical certificate, anti-passback, capacity; warnings."""

from __future__ import annotations

import pytest

from gateway.state import LocalState
from tests.decision.helpers import check, passage
from tests.support.sets import member, rules


@pytest.mark.parametrize(
    ("policy", "decision", "reason", "warnings"),
    [
        ("deny", "denied", "unpaid", []),
        ("warn", "granted", "ok", ["unpaid"]),
        ("allow", "granted", "ok", []),
    ],
)
def test_unpaid_member_follows_the_site_policy(policy, decision, reason, warnings):
    result = check([member(unpaid=True)], site_rules=rules(unpaid=policy))
    assert (result.decision, result.reason, list(result.warnings)) == (decision, reason, warnings)


def test_paid_member_is_never_refused_as_unpaid():
    assert check([member(unpaid=False)], site_rules=rules(unpaid="deny")).reason == "ok"


@pytest.mark.parametrize(
    ("medical_until", "policy", "reason", "warnings"),
    [
        ("2026-11-24", "deny", "medical_expired", []),
        (None, "deny", "medical_expired", []),
        ("2026-11-25", "deny", "ok", []),
        ("2026-11-24", "warn", "ok", ["medical_expired"]),
        (None, "allow", "ok", []),
    ],
    ids=[
        "expired_yesterday_denied",
        "missing_denied",
        "valid_today_granted",
        "warn_grants_with_warning",
        "allow_ignores_it",
    ],
)
def test_medical_certificate_follows_the_site_policy(medical_until, policy, reason, warnings):
    result = check([member(medical_until=medical_until)], site_rules=rules(medical=policy))
    assert (result.reason, list(result.warnings)) == (reason, warnings)


def test_refusal_keeps_warnings_collected_before_the_failing_check():
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T09:55:00+01:00"))
    result = check([member(unpaid=True)], state=state, site_rules=rules(unpaid="warn"))
    assert (result.reason, list(result.warnings), result.contract) == (
        "anti_passback",
        ["unpaid"],
        None,
    )


def test_hard_anti_passback_refuses_reentry_without_exit():
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T09:50:00+01:00"))
    assert check([member()], state=state).reason == "anti_passback"


def test_anti_passback_ends_after_anti_passback_minutes():
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T09:45:00+01:00"))
    assert check([member()], state=state).reason == "ok"


def test_an_exit_clears_anti_passback():
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T09:50:00+01:00"))
    state.add_passage(passage("M1", "gym", "out", "2026-11-25T09:55:00+01:00"))
    assert check([member()], state=state).reason == "ok"


def test_an_exit_from_another_zone_does_not_clear_anti_passback():
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T09:50:00+01:00"))
    state.add_passage(passage("M1", "spa", "out", "2026-11-25T09:55:00+01:00"))
    assert check([member()], state=state).reason == "anti_passback"


def test_soft_anti_passback_grants_with_a_warning():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T09:55:00+01:00"))
    result = check([member()], state=state, zone="pool")
    assert (result.reason, list(result.warnings)) == ("ok", ["anti_passback"])


def test_anti_passback_none_ignores_recent_entries():
    state = LocalState()
    state.add_passage(passage("M1", "sauna", "in", "2026-11-25T09:59:00+01:00"))
    assert check([member()], state=state, zone="sauna").reason == "ok"


def test_full_zone_refuses_members():
    assert check([member()], state=LocalState(own_inside={"gym": 120})).reason == "capacity_full"


def test_zone_one_below_capacity_admits():
    assert check([member()], state=LocalState(own_inside={"gym": 119})).reason == "ok"


def test_capacity_adds_up_the_occupancy_of_every_gateway_of_the_site():
    state = LocalState(own_inside={"gym": 60}, peer_inside={"door-2": {"gym": 60}})
    assert check([member()], state=state).reason == "capacity_full"


def test_staff_are_exempt_from_capacity():
    staff = member("S1", role="staff", contracts=[])
    assert check([staff], state=LocalState(own_inside={"gym": 500})).reason == "ok"
