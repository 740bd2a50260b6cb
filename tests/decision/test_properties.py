"""Properties of the decision, over generated members, contracts, states and instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.decision import DoorContext, Presented, Request, decide
from gateway.state import Charge, LocalState, Passage
from tests.support.sets import MemorySet, rules

ZONES = ["gym", "spa", "pool", "squash-2", "sauna"]
DAYS = st.dates(min_value=datetime(2026, 1, 1).date(), max_value=datetime(2027, 12, 31).date())


@st.composite
def contracts(draw, index: int):
    type_ = draw(st.sampled_from(["recurring", "fixed", "clipcard"]))
    start = draw(DAYS)
    c = {
        "id": f"C{index}",
        "type": type_,
        "start": start.isoformat(),
        "end": draw(st.none() | DAYS.map(lambda d: d.isoformat())),
        "zones": draw(st.sampled_from([["*"], ["gym"], ["spa", "pool"], []])),
        "sites": draw(st.sampled_from([["*"], ["oslo-sentrum"], ["bergen"]])),
        "schedule": draw(st.sampled_from([None, "offpeak", "night"])),
    }
    if type_ == "clipcard":
        c["credits"] = draw(st.integers(0, 5))
    if draw(st.booleans()):
        c["max_visits"] = {
            "per": draw(st.sampled_from(["day", "week", "month"])),
            "count": draw(st.integers(0, 3)),
        }
    if draw(st.booleans()):
        f = draw(DAYS)
        c["freezes"] = [{"from": f.isoformat(), "to": (f + timedelta(days=10)).isoformat()}]
    return c


@st.composite
def members(draw):
    n = draw(st.integers(0, 4))
    return {
        "member": "M1",
        "display": "Kari",
        "role": draw(st.sampled_from(["member", "member", "staff"])),
        "credentials": [{"kind": "nfc", "uid": "04A1B2C3"}],
        "contracts": [draw(contracts(i)) for i in range(n)],
        "unpaid": draw(st.booleans()),
        "medical_until": draw(st.none() | DAYS.map(lambda d: d.isoformat())),
    }


INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@st.composite
def states(draw, now: datetime):
    state = LocalState(own_inside={z: draw(st.integers(0, 200)) for z in ZONES})
    for _ in range(draw(st.integers(0, 6))):
        ago = timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
        state.add_passage(
            Passage(
                "M1",
                draw(st.sampled_from(ZONES)),
                draw(st.sampled_from(["in", "out"])),
                now - ago,
                draw(st.sampled_from([None, "C0", "C1", "C2"])),
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        state.charges.append(
            Charge("M1", draw(st.sampled_from(["C0", "C1", "C2"])), draw(st.integers(1, 3)))
        )
    return state


def _site_rules(draw):
    return rules(
        unpaid=draw(st.sampled_from(["deny", "warn", "allow"])),
        medical=draw(st.sampled_from(["deny", "warn", "allow"])),
    )


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_exits_are_never_refused_for_a_known_member(data):
    now = data.draw(INSTANTS)
    view = MemorySet(_site_rules(data.draw), [data.draw(members())])
    state = data.draw(states(now))
    state.lockdown = data.draw(st.booleans())
    door = DoorContext("exit", data.draw(st.sampled_from(ZONES)), "out")
    result = decide(Request(Presented("nfc", "04A1B2C3"), door, now), view, state)
    assert (result.decision, result.reason, result.charged, result.contract) == (
        "granted",
        "ok",
        0,
        None,
    )


@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_denial_never_charges_and_names_no_contract(data):
    now = data.draw(INSTANTS)
    view = MemorySet(_site_rules(data.draw), [data.draw(members())])
    state = data.draw(states(now))
    door = DoorContext("in", data.draw(st.sampled_from(ZONES)), "in")
    result = decide(Request(Presented("nfc", "04A1B2C3"), door, now), view, state)
    if not result.granted:
        assert result.charged == 0 and result.contract is None
    else:
        assert result.reason == "ok"


@PROPERTY_SETTINGS
@given(data=st.data())
def test_the_same_input_always_gives_the_same_output(data):
    now = data.draw(INSTANTS)
    view = MemorySet(_site_rules(data.draw), [data.draw(members())])
    state = data.draw(states(now))
    door = DoorContext(
        "in", data.draw(st.sampled_from(ZONES)), data.draw(st.sampled_from(["in", "out"]))
    )
    request = Request(Presented("nfc", "04A1B2C3"), door, now)
    assert decide(request, view, state) == decide(request, view, state)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_time_based_contracts_are_chosen_before_clip_cards(data):
    now = data.draw(INSTANTS)
    record = data.draw(members())
    record["role"] = "member"
    view = MemorySet(rules(opening_schedule=None), [record])
    state = LocalState()
    door = DoorContext("in", data.draw(st.sampled_from(ZONES)), "in")
    result = decide(Request(Presented("nfc", "04A1B2C3"), door, now), view, state)
    if result.granted:
        used = {c["id"]: c for c in record["contracts"]}[result.contract]
        usable_time_based = [
            line
            for line in result.trace
            if line.endswith("(recurring): usable") or line.endswith("(fixed): usable")
        ]
        if used["type"] == "clipcard":
            assert usable_time_based == []
        else:
            assert result.charged == 0
