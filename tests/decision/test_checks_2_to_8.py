"""Checks 2-8: lockdown, blocks, tickets, staff schedule, staleness, opening hours, bookings."""

from __future__ import annotations

import pytest

from gateway.state import LocalState
from tests.decision.helpers import check
from tests.support.sets import member, rules, ticket

BLOCK = {
    "from": "2026-11-25T00:00:00+01:00",
    "to": "2026-11-25T10:00:00+01:00",
    "reason": "blacklist",
}
BOOKING = {
    "id": "B1",
    "zone": "squash-2",
    "from": "2026-11-25T18:00:00+01:00",
    "to": "2026-11-25T19:00:00+01:00",
}
STAFF = member("S1", role="staff", contracts=[])

CASES = [
    # (rule, records, kwargs, decision, reason)
    (
        "block_covering_the_instant_refuses",
        [member(blocks=[BLOCK])],
        {"when": "2026-11-25T09:59:59+01:00"},
        "denied",
        "blocked",
    ),
    (
        "block_is_half_open_so_its_end_is_free",
        [member(blocks=[BLOCK])],
        {"when": "2026-11-25T10:00:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "block_refuses_staff_too",
        [member("S1", role="staff", blocks=[BLOCK])],
        {"when": "2026-11-25T09:00:00+01:00"},
        "denied",
        "blocked",
    ),
    (
        "ticket_before_its_window_is_not_valid_now",
        [ticket()],
        {"nfc": None, "code": "EVT-1", "zone": "hall", "when": "2026-11-22T17:59:59+01:00"},
        "denied",
        "ticket_not_valid_now",
    ),
    (
        "ticket_at_window_start_is_valid",
        [ticket()],
        {"nfc": None, "code": "EVT-1", "zone": "hall", "when": "2026-11-22T18:00:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "ticket_at_window_end_is_not_valid_now",
        [ticket()],
        {"nfc": None, "code": "EVT-1", "zone": "hall", "when": "2026-11-22T23:00:00+01:00"},
        "denied",
        "ticket_not_valid_now",
    ),
    (
        "ticket_for_another_zone_is_zone_not_allowed",
        [ticket()],
        {"nfc": None, "code": "EVT-1", "zone": "gym", "when": "2026-11-22T19:00:00+01:00"},
        "denied",
        "zone_not_allowed",
    ),
    (
        "ticket_works_outside_opening_hours_inside_its_window",
        [ticket(valid_to="2026-11-23T02:00:00+01:00")],
        {"nfc": None, "code": "EVT-1", "zone": "hall", "when": "2026-11-23T01:00:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "staff_inside_staff_schedule_pass",
        [STAFF],
        {"when": "2026-11-25T10:00:00+01:00", "site_rules": rules(staff_schedule="offpeak")},
        "granted",
        "ok",
    ),
    (
        "staff_outside_staff_schedule_are_refused",
        [STAFF],
        {"when": "2026-11-25T16:00:00+01:00", "site_rules": rules(staff_schedule="offpeak")},
        "denied",
        "outside_schedule",
    ),
    (
        "staff_with_no_staff_schedule_pass_when_the_site_is_closed",
        [STAFF],
        {"when": "2026-11-25T23:30:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "site_closed_refuses_members",
        [member()],
        {"when": "2026-11-25T23:00:00+01:00"},
        "denied",
        "site_closed",
    ),
    (
        "site_open_until_the_minute_before_closing",
        [member()],
        {"when": "2026-11-25T22:59:59+01:00"},
        "granted",
        "ok",
    ),
    (
        "weekend_hours_apply_on_sunday",
        [member()],
        {"when": "2026-11-22T06:59:00+01:00"},
        "denied",
        "site_closed",
    ),
    (
        "null_opening_schedule_means_always_open",
        [member()],
        {"when": "2026-11-25T03:00:00+01:00", "site_rules": rules(opening_schedule=None)},
        "granted",
        "ok",
    ),
    (
        "booking_zone_without_booking_refuses",
        [member()],
        {"zone": "squash-2", "when": "2026-11-25T18:10:00+01:00"},
        "denied",
        "no_booking",
    ),
    (
        "booking_covers_its_time",
        [member(bookings=[BOOKING])],
        {"zone": "squash-2", "when": "2026-11-25T18:10:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "booking_opens_booking_early_minutes_before",
        [member(bookings=[BOOKING])],
        {"zone": "squash-2", "when": "2026-11-25T17:30:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "booking_does_not_open_earlier_than_that",
        [member(bookings=[BOOKING])],
        {"zone": "squash-2", "when": "2026-11-25T17:29:59+01:00"},
        "denied",
        "no_booking",
    ),
    (
        "booking_window_is_half_open",
        [member(bookings=[BOOKING])],
        {"zone": "squash-2", "when": "2026-11-25T19:00:00+01:00"},
        "denied",
        "no_booking",
    ),
    (
        "booking_for_another_zone_does_not_count",
        [member(bookings=[{**BOOKING, "zone": "squash-1"}])],
        {"zone": "squash-2", "when": "2026-11-25T18:10:00+01:00"},
        "denied",
        "no_booking",
    ),
    (
        "booking_never_grants_a_zone_without_a_contract_covering_it",
        [
            member(
                bookings=[BOOKING],
                contracts=[
                    {"id": "C1", "type": "recurring", "start": "2026-01-01", "zones": ["gym"]}
                ],
            )
        ],
        {"zone": "squash-2", "when": "2026-11-25T18:10:00+01:00"},
        "denied",
        "zone_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("rule", "records", "kwargs", "decision", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_door_checks(rule, records, kwargs, decision, reason):
    result = check(records, **kwargs)
    assert (result.decision, result.reason) == (decision, reason), result.trace


def test_lockdown_refuses_members_staff_and_tickets():
    state = LocalState(lockdown=True)
    assert check([member()], state=state).reason == "locked_down"
    assert check([STAFF], state=state).reason == "locked_down"
    t = check(
        [ticket()],
        nfc=None,
        code="EVT-1",
        zone="hall",
        when="2026-11-22T19:00:00+01:00",
        state=state,
    )
    assert t.reason == "locked_down"


def test_lockdown_never_blocks_an_exit():
    assert check([member()], direction="out", state=LocalState(lockdown=True)).reason == "ok"


def test_ticket_with_all_uses_spent_is_ticket_used():
    state = LocalState(used_tickets={"T-1": 1})
    result = check(
        [ticket()],
        nfc=None,
        code="EVT-1",
        zone="hall",
        when="2026-11-22T19:00:00+01:00",
        state=state,
    )
    assert (result.decision, result.reason) == ("denied", "ticket_used")


def test_ticket_with_uses_left_is_granted_and_reports_the_ticket_not_a_member():
    state = LocalState(used_tickets={"T-1": 1})
    result = check(
        [ticket(uses=2)],
        nfc=None,
        code="EVT-1",
        zone="hall",
        when="2026-11-22T19:00:00+01:00",
        state=state,
    )
    assert (result.reason, result.ticket, result.member, result.credential) == (
        "ok",
        "T-1",
        None,
        "ticket",
    )


def test_tickets_are_subject_to_capacity():
    r = rules(zones={"hall": {"capacity": 10}})
    full = LocalState(own_inside={"hall": 10})
    result = check(
        [ticket()],
        nfc=None,
        code="EVT-1",
        zone="hall",
        when="2026-11-22T19:00:00+01:00",
        state=full,
        site_rules=r,
    )
    assert result.reason == "capacity_full"


def test_entitlements_older_than_max_offline_hours_refuse_members():
    from tests.decision.helpers import at

    state = LocalState(entitlements_at=at("2026-11-22T09:59:59+01:00"))
    assert check([member()], state=state).reason == "entitlements_stale"


def test_entitlements_exactly_max_offline_hours_old_are_not_stale():
    from tests.decision.helpers import at

    state = LocalState(entitlements_at=at("2026-11-22T10:00:00+01:00"))
    assert check([member()], state=state).reason == "ok"


def test_stale_entitlements_still_let_staff_in():
    from tests.decision.helpers import at

    state = LocalState(entitlements_at=at("2026-11-01T10:00:00+01:00"))
    assert check([STAFF], state=state).reason == "ok"


def test_null_max_offline_hours_never_goes_stale():
    from tests.decision.helpers import at

    state = LocalState(entitlements_at=at("2020-01-01T00:00:00+01:00"))
    assert check([member()], state=state, site_rules=rules(max_offline_hours=None)).reason == "ok"
