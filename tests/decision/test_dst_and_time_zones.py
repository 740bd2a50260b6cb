"""Dates and schedules are local to the site's time zone, across DST transitions (Europe/Oslo).

2026-03-29: clocks go 02:00 CET -> 03:00 CEST. 2026-10-25: 03:00 CEST -> 02:00 CET.
"""

from __future__ import annotations

import pytest

from tests.decision.helpers import check
from tests.support.sets import contract, member, rules

SUNDAY_2_TO_3 = {
    "early": [{"days": "sun", "from": "02:00", "to": "03:00"}],
    "open": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}],
}


def _early_rules():
    return rules(schedules=SUNDAY_2_TO_3, opening_schedule="open")


@pytest.mark.parametrize(
    ("instant", "reason"),
    [
        ("2026-03-29T00:59:59+00:00", "outside_schedule"),  # 01:59:59 CET
        ("2026-03-29T01:00:00+00:00", "outside_schedule"),  # 03:00 CEST: 02:00-03:00 never happened
        ("2026-10-25T00:30:00+00:00", "ok"),  # 02:30 CEST, the first time
        ("2026-10-25T01:30:00+00:00", "ok"),  # 02:30 CET, the second time
        ("2026-10-25T02:00:00+00:00", "outside_schedule"),  # 03:00 CET
    ],
    ids=[
        "spring_before_gap",
        "spring_after_gap",
        "autumn_first_0230",
        "autumn_second_0230",
        "autumn_0300",
    ],
)
def test_schedule_windows_are_local_wall_clock_across_dst(instant, reason):
    result = check(
        [member(contracts=[contract("C1", schedule="early")])],
        when=instant,
        site_rules=_early_rules(),
    )
    assert result.reason == reason, result.trace


def test_contract_ending_today_is_usable_until_local_midnight_in_summer():
    c = contract("C1", end="2026-07-01")
    r = rules(opening_schedule=None)
    assert (
        check([member(contracts=[c])], when="2026-07-01T21:59:59+00:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-07-01T22:00:00+00:00", site_rules=r).reason
        == "expired"
    )


def test_contract_ending_on_the_day_clocks_go_forward_covers_that_whole_local_day():
    c = contract("C1", end="2026-03-29")
    r = rules(opening_schedule=None)
    assert (
        check([member(contracts=[c])], when="2026-03-29T21:59:00+00:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-03-29T22:00:00+00:00", site_rules=r).reason
        == "expired"
    )


def test_contract_ending_on_the_day_clocks_go_back_covers_the_long_local_day():
    c = contract("C1", end="2026-10-25")
    r = rules(opening_schedule=None)
    assert (
        check([member(contracts=[c])], when="2026-10-25T22:59:00+00:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-10-25T23:00:00+00:00", site_rules=r).reason
        == "expired"
    )


def test_contract_starting_tomorrow_local_is_not_started_even_if_utc_says_tomorrow_already():
    c = contract("C1", start="2026-11-26")
    r = rules(opening_schedule=None)
    # 23:30 UTC on the 25th is 00:30 on the 26th in Oslo: started
    assert (
        check([member(contracts=[c])], when="2026-11-25T23:30:00+00:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-11-25T22:30:00+00:00", site_rules=r).reason
        == "not_started"
    )


def test_overnight_window_belongs_to_the_day_it_starts():
    c = contract("C1", schedule="night")  # fri 22:00 - 02:00
    r = rules(opening_schedule=None)
    assert (
        check([member(contracts=[c])], when="2026-11-28T01:59:00+01:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-11-27T23:00:00+01:00", site_rules=r).reason
        == "ok"
    )
    assert (
        check([member(contracts=[c])], when="2026-11-27T01:00:00+01:00", site_rules=r).reason
        == "outside_schedule"
    )  # Friday morning: Thursday's night


def test_window_to_24_00_covers_the_last_minute_of_the_day():
    r = rules(
        schedules={"open": [{"days": "wed", "from": "05:00", "to": "24:00"}]},
        opening_schedule="open",
    )
    assert check([member()], when="2026-11-25T23:59:59+01:00", site_rules=r).reason == "ok"
    assert check([member()], when="2026-11-26T00:00:00+01:00", site_rules=r).reason == "site_closed"


def test_day_ranges_wrap_around_the_week():
    r = rules(
        schedules={"open": [{"days": "fri-mon", "from": "00:00", "to": "24:00"}]},
        opening_schedule="open",
    )
    assert check([member()], when="2026-11-23T10:00:00+01:00", site_rules=r).reason == "ok"  # Mon
    assert (
        check([member()], when="2026-11-25T10:00:00+01:00", site_rules=r).reason == "site_closed"
    )  # Wed


def test_comma_lists_of_days():
    r = rules(
        schedules={"open": [{"days": "mon,wed", "from": "00:00", "to": "24:00"}]},
        opening_schedule="open",
    )
    assert check([member()], when="2026-11-25T10:00:00+01:00", site_rules=r).reason == "ok"
    assert check([member()], when="2026-11-24T10:00:00+01:00", site_rules=r).reason == "site_closed"
