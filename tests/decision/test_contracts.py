"""Check 9: some contract is usable; the most specific reason when none is; which one is used."""

from __future__ import annotations

import pytest

from gateway.state import Charge, LocalState
from tests.decision.helpers import check, passage
from tests.support.sets import contract, member

CASES = [
    # (rule, contracts, kwargs, decision, reason)
    (
        "contract_not_started_refuses",
        [contract("C1", start="2026-11-26")],
        {},
        "denied",
        "not_started",
    ),
    (
        "contract_starting_today_is_usable",
        [contract("C1", start="2026-11-25")],
        {},
        "granted",
        "ok",
    ),
    (
        "contract_ended_yesterday_is_expired",
        [contract("C1", end="2026-11-24")],
        {},
        "denied",
        "expired",
    ),
    (
        "contract_ending_today_is_usable_end_is_inclusive",
        [contract("C1", end="2026-11-25")],
        {},
        "granted",
        "ok",
    ),
    (
        "frozen_contract_refuses",
        [contract("C1", freezes=[{"from": "2026-11-20", "to": "2026-11-30"}])],
        {},
        "denied",
        "frozen",
    ),
    (
        "freeze_ending_today_still_freezes",
        [contract("C1", freezes=[{"from": "2026-11-20", "to": "2026-11-25"}])],
        {},
        "denied",
        "frozen",
    ),
    (
        "freeze_that_ended_yesterday_is_over",
        [contract("C1", freezes=[{"from": "2026-11-20", "to": "2026-11-24"}])],
        {},
        "granted",
        "ok",
    ),
    (
        "frozen_contract_is_refused_even_with_credits_left",
        [
            contract(
                "C1", "clipcard", credits=8, freezes=[{"from": "2026-11-25", "to": "2026-11-25"}]
            )
        ],
        {},
        "denied",
        "frozen",
    ),
    (
        "contract_for_another_site_refuses",
        [contract("C1", sites=["bergen"])],
        {},
        "denied",
        "site_not_allowed",
    ),
    (
        "contract_listing_the_site_is_usable",
        [contract("C1", sites=["bergen", "oslo-sentrum"])],
        {},
        "granted",
        "ok",
    ),
    ("empty_site_list_means_no_site", [contract("C1", sites=[])], {}, "denied", "site_not_allowed"),
    (
        "contract_for_another_zone_refuses",
        [contract("C1", zones=["spa"])],
        {},
        "denied",
        "zone_not_allowed",
    ),
    (
        "offpeak_contract_outside_its_schedule_refuses",
        [contract("C1", schedule="offpeak")],
        {"when": "2026-11-25T16:00:00+01:00"},
        "denied",
        "outside_schedule",
    ),
    (
        "offpeak_contract_inside_its_schedule_is_usable",
        [contract("C1", schedule="offpeak")],
        {"when": "2026-11-25T14:59:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "clip_card_without_credits_refuses",
        [contract("C1", "clipcard", credits=0)],
        {},
        "denied",
        "no_credits",
    ),
    (
        "clip_card_with_one_credit_is_usable",
        [contract("C1", "clipcard", credits=1)],
        {},
        "granted",
        "ok",
    ),
    (
        "spa_needs_two_credits",
        [contract("C1", "clipcard", credits=1)],
        {"zone": "spa"},
        "denied",
        "no_credits",
    ),
    ("member_without_contracts_is_no_contract", [], {}, "denied", "no_contract"),
    (
        "most_specific_reason_wins_frozen_beats_expired",
        [
            contract("C1", end="2026-01-31"),
            contract("C2", freezes=[{"from": "2026-11-01", "to": "2026-11-30"}]),
        ],
        {},
        "denied",
        "frozen",
    ),
    (
        "most_specific_reason_wins_zone_beats_site",
        [contract("C1", zones=["spa"]), contract("C2", sites=["bergen"])],
        {},
        "denied",
        "zone_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("rule", "contracts", "kwargs", "decision", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_contract_usability(rule, contracts, kwargs, decision, reason):
    result = check([member(contracts=contracts)], **kwargs)
    assert (result.decision, result.reason) == (decision, reason), result.trace
    if decision == "denied":
        assert result.contract is None and result.charged == 0


def test_visit_limit_refuses_the_second_visit_of_the_day():
    c = contract("C1", max_visits={"per": "day", "count": 1})
    state = LocalState()
    state.add_passage(passage("M1", "spa", "in", "2026-11-25T07:00:00+01:00", "C1"))
    state.add_passage(passage("M1", "spa", "out", "2026-11-25T08:00:00+01:00", "C1"))
    result = check([member(contracts=[c])], state=state, site_rules=_no_reentry())
    assert result.reason == "visit_limit"


def test_visit_limit_counts_only_entries_on_that_contract():
    c = contract("C1", max_visits={"per": "day", "count": 1})
    state = LocalState()
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T07:00:00+01:00", "C9"))
    state.add_passage(passage("M1", "gym", "in", "2026-11-25T07:30:00+01:00"))
    assert (
        check([member(contracts=[c])], state=state, site_rules=_no_reentry(), zone="pool").reason
        == "ok"
    )


def test_visit_limit_per_week_uses_iso_weeks():
    c = contract("C1", max_visits={"per": "week", "count": 2})
    state = LocalState()
    state.add_passage(
        passage("M1", "pool", "in", "2026-11-22T10:00:00+01:00", "C1")
    )  # Sun, last week
    state.add_passage(passage("M1", "pool", "in", "2026-11-23T10:00:00+01:00", "C1"))  # Mon
    assert (
        check([member(contracts=[c])], state=state, zone="pool", site_rules=_no_reentry()).reason
        == "ok"
    )
    state.add_passage(passage("M1", "pool", "in", "2026-11-24T10:00:00+01:00", "C1"))
    assert (
        check([member(contracts=[c])], state=state, zone="pool", site_rules=_no_reentry()).reason
        == "visit_limit"
    )


def test_visit_limit_per_month_uses_calendar_months():
    c = contract("C1", max_visits={"per": "month", "count": 1})
    state = LocalState()
    state.add_passage(passage("M1", "pool", "in", "2026-10-31T10:00:00+01:00", "C1"))
    assert check([member(contracts=[c])], state=state, zone="pool").reason == "ok"
    state.add_passage(passage("M1", "pool", "in", "2026-11-01T10:00:00+01:00", "C1"))
    assert check([member(contracts=[c])], state=state, zone="pool").reason == "visit_limit"


def test_recurring_is_chosen_before_clip_card():
    result = check([member(contracts=[contract("K", "clipcard"), contract("R")])])
    assert (result.contract, result.charged) == ("R", 0)


def test_fixed_is_chosen_before_clip_card_and_after_recurring():
    fixed = contract("F", "fixed", end="2026-12-31")
    assert check([member(contracts=[contract("K", "clipcard"), fixed])]).contract == "F"
    assert check([member(contracts=[fixed, contract("R")])]).contract == "R"


def test_the_clip_card_ending_soonest_is_used_and_open_ended_last():
    cards = [
        contract("K1", "clipcard", end=None),
        contract("K2", "clipcard", end="2027-03-01"),
        contract("K3", "clipcard", end="2026-12-31"),
    ]
    assert check([member(contracts=cards)]).contract == "K3"


def test_equal_clip_cards_keep_record_order():
    cards = [
        contract("K1", "clipcard", end="2026-12-31"),
        contract("K2", "clipcard", end="2026-12-31"),
    ]
    assert check([member(contracts=cards)]).contract == "K1"


def test_working_balance_subtracts_uncounted_charges():
    state = LocalState(charges=[Charge("M1", "K", 8)])
    result = check([member(contracts=[contract("K", "clipcard", credits=8)])], state=state)
    assert result.reason == "no_credits"


def test_refusal_names_no_contract_but_the_trace_names_the_furthest():
    result = check(
        [member(contracts=[contract("C1", end="2026-01-31"), contract("C2", zones=["spa"])])]
    )
    assert result.contract is None
    assert any("C2 got furthest (zone_not_allowed)" in line for line in result.trace)


def test_tie_on_failure_depth_names_the_first_contract_in_record_order():
    result = check(
        [member(contracts=[contract("C1", end="2026-01-31"), contract("C2", end="2026-02-28")])]
    )
    assert result.reason == "expired"
    assert any("C1 got furthest" in line for line in result.trace)


def _no_reentry():
    from tests.support.sets import rules

    return rules(reentry_free_minutes=0, zones={})
