"""Charging, free re-entry, visit counting and exits."""

from __future__ import annotations

from gateway.state import LocalState
from tests.decision.helpers import check, passage
from tests.support.sets import contract, member, rules

CARD = contract("K", "clipcard", credits=8)


def test_clip_card_is_charged_one_credit_by_default():
    result = check([member(contracts=[CARD])], zone="pool")
    assert (result.reason, result.contract, result.charged) == ("ok", "K", 1)


def test_clip_card_is_charged_the_zones_credits():
    assert check([member(contracts=[CARD])], zone="spa").charged == 2


def test_time_based_contracts_are_never_charged():
    assert check([member()]).charged == 0


def test_reentry_within_the_free_minutes_on_the_same_day_is_free():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T07:00:00+01:00", "K"))
    result = check([member(contracts=[CARD])], zone="pool", state=state)
    assert (result.reason, result.charged) == ("ok", 0)


def test_reentry_after_the_free_minutes_is_charged():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T05:59:00+01:00", "K"))
    assert check([member(contracts=[CARD])], zone="pool", state=state).charged == 1


def test_reentry_exactly_at_the_free_minutes_is_free():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T06:00:00+01:00", "K"))
    assert check([member(contracts=[CARD])], zone="pool", state=state).charged == 0


def test_reentry_on_another_local_date_is_charged():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T23:30:00+01:00", "K"))
    result = check(
        [member(contracts=[CARD])],
        zone="pool",
        state=state,
        when="2026-11-26T00:30:00+01:00",
        site_rules=rules(opening_schedule=None),
    )
    assert result.charged == 1


def test_reentry_into_another_zone_is_charged():
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T09:00:00+01:00", "K"))
    assert check([member(contracts=[CARD])], zone="sauna", state=state).charged == 1


def test_free_reentry_needs_no_credits_left():
    card = contract("K", "clipcard", credits=0)
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T08:00:00+01:00", "K"))
    result = check([member(contracts=[card])], zone="pool", state=state)
    assert (result.reason, result.charged) == ("ok", 0)


def test_free_reentry_still_needs_a_usable_contract():
    card = contract("K", "clipcard", credits=5, end="2026-11-24")
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T08:00:00+01:00", "K"))
    assert check([member(contracts=[card])], zone="pool", state=state).reason == "expired"


def test_free_reentry_is_not_a_new_visit():
    c = contract("C1", max_visits={"per": "day", "count": 1})
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T08:00:00+01:00", "C1"))
    state.add_passage(passage("M1", "pool", "in", "2026-11-25T09:00:00+01:00", "C1"))
    assert check([member(contracts=[c])], zone="pool", state=state).reason == "ok"
    # another zone: a new visit, and the one visit of the day is used
    assert check([member(contracts=[c])], zone="sauna", state=state).reason == "visit_limit"


def test_denial_never_charges():
    result = check([member(contracts=[CARD], unpaid=True)], zone="pool")
    assert (result.decision, result.charged, result.contract) == ("denied", 0, None)


def test_exit_is_granted_to_a_blocked_member():
    block = {"from": "2026-11-01T00:00:00+01:00", "to": "2026-12-01T00:00:00+01:00"}
    result = check([member(blocks=[block])], direction="out")
    assert (result.decision, result.reason, result.contract, result.charged) == (
        "granted",
        "ok",
        None,
        0,
    )


def test_exit_is_granted_without_any_contract_and_outside_opening_hours():
    result = check([member(contracts=[])], direction="out", when="2026-11-25T23:59:00+01:00")
    assert result.reason == "ok"


def test_exit_with_unknown_credential_is_denied():
    assert check([member()], nfc="04FFFFFF", direction="out").reason == "unknown_credential"


def test_exit_uses_no_ticket():
    from tests.support.sets import ticket

    result = check(
        [ticket()],
        nfc=None,
        code="EVT-1",
        zone="hall",
        direction="out",
        when="2026-11-23T10:00:00+01:00",
    )
    assert (result.reason, result.ticket, result.charged) == ("ok", "T-1", 0)


def test_exit_with_a_bad_pass_is_denied():
    from tests.decision.helpers import OTHER_KEY, phone, token

    result = check(
        [member(credentials=[phone()])], pass_token=token(key=OTHER_KEY), direction="out"
    )
    assert result.reason == "bad_pass"
