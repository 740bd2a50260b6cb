"""A flood of refused messages costs a bounded number of events (gateway/event_throttle.py)."""

from __future__ import annotations

from pathlib import Path

from gateway import metrics
from gateway.event_throttle import EventThrottle
from tests.supervision.helpers import events, offline_config, running, until


def refused_counted() -> float:
    """All ``bad_message`` counted by the metrics, whatever the labels."""
    [family] = [f for f in metrics.BAD_MESSAGES.collect()]
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_reports_its_burst_then_is_held_back_and_counted() -> None:
    clock = Clock()
    throttle = EventThrottle(burst=3, per_second=1.0, clock=clock)
    assert [throttle.admit(("t", "r")) for _ in range(5)] == [0, 0, 0, None, None]
    clock.now = 1.0  # one token back: the next event carries the two held back
    assert throttle.admit(("t", "r")) == 2
    assert throttle.admit(("t", "r")) is None
    assert throttle.held_back() == [(("t", "r"), 1)]
    assert throttle.held_back() == []  # counted once


def test_keys_are_apart_but_share_an_overall_bound() -> None:
    clock = Clock()
    throttle = EventThrottle(burst=2, per_second=0.0, total_burst=3, total_per_second=0.0,
                             clock=clock)  # fmt: skip
    assert throttle.admit(("a", "x")) == 0 and throttle.admit(("a", "x")) == 0
    assert throttle.admit(("a", "x")) is None  # its own burst is spent
    assert throttle.admit(("b", "x")) == 0  # another key still reports ...
    assert throttle.admit(("c", "x")) is None  # ... until the overall bound is reached


def test_the_table_of_keys_is_bounded() -> None:
    throttle = EventThrottle(max_keys=10, clock=Clock())
    for n in range(1_000):
        throttle.admit((f"topic-{n}", "reason"))
    assert len(throttle._keys) <= 10


async def test_a_flood_of_bad_messages_journals_a_few_events_and_counts_every_one(
    tmp_path: Path,
) -> None:
    async with running(offline_config(tmp_path / "state")) as gw:
        before = refused_counted()
        for _ in range(1_000):
            gw.record_event("bad_message", None, {"topic": "acs/v1/oslo/time",
                                                   "reason": "bad signature"})  # fmt: skip
        gw.record_event("bad_message", None, {"topic": "acs/v1/oslo/time", "reason": "unsigned"})
        await until(lambda: not gw._event_tasks)
        journalled = await events(gw, "bad_message")
        assert 2 <= len(journalled) <= 25, len(journalled)  # a burst, not a thousand fsyncs
        assert {"topic": "acs/v1/oslo/time", "reason": "unsigned"} in [
            {k: e["detail"][k] for k in ("topic", "reason")} for e in journalled
        ]  # another reason is not held back by the flood
        assert refused_counted() - before == 1_001  # the metrics count every refused message
        gw._report_held_back()  # what housekeeping does once a minute
        await until(lambda: not gw._event_tasks)
        summary = (await events(gw, "bad_message"))[-1]["detail"]
        shown = sum(1 for e in journalled if e["detail"]["reason"] == "bad signature")
        assert summary == {"topic": "acs/v1/oslo/time", "reason": "bad signature",
                           "suppressed": 1_000 - shown}  # fmt: skip


def test_refused_messages_counted_together_are_one_event_to_admit() -> None:
    """The wire process tells the gateway of a flood's refused messages by the hundred: an
    admitted count is one event carrying the rest; a held-back count is held back whole."""
    clock = Clock()
    throttle = EventThrottle(burst=1, per_second=1.0, clock=clock)
    assert throttle.admit(("t", "r"), 40) == 39
    assert throttle.admit(("t", "r"), 25) is None
    assert throttle.admit(("t", "r")) is None
    clock.now = 1.0
    assert throttle.admit(("t", "r"), 10) == 26 + 9
    assert throttle.held_back() == []


async def test_refused_messages_told_by_the_count_are_each_counted_and_carried(
    tmp_path: Path,
) -> None:
    async with running(offline_config(tmp_path / "state")) as gw:
        before = refused_counted()
        detail = {"topic": "acs/v1/oslo/time", "reason": "bad signature"}
        for _ in range(10):
            gw.record_refused(detail, 100)
        await until(lambda: not gw._event_tasks)
        journalled = await events(gw, "bad_message")
        assert refused_counted() - before == 1_000
        gw._report_held_back()
        await until(lambda: not gw._event_tasks)
        every = await events(gw, "bad_message")
        assert len(every) <= len(journalled) + 1
        assert (
            sum(1 + e["detail"].get("suppressed", 0) for e in journalled)
            + sum(e["detail"]["suppressed"] for e in every[len(journalled) :])
            == 1_000
        )  # every refused message is in an event or in a count one carries
