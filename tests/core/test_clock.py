"""The clock gate: passes are timed only while the clock is known good (PASSES.md, Clock;
PROTOCOL.md, Clarifications: Time)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.clock import LAPSE_S, ClockTrust, ntp_synchronised

NOW = datetime.fromisoformat("2026-11-25T10:00:00+01:00")


class Clocks:
    """A wall clock the test steps and a monotonic clock that only runs on."""

    def __init__(self) -> None:
        self.wall, self.mono = NOW.timestamp(), 1000.0
        self.changes: list[tuple[bool, str]] = []

    def run(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def trust(self, mode: str = "central", ntp: bool = False) -> ClockTrust:
        trust = ClockTrust(
            mode, wall=lambda: self.wall, monotonic=lambda: self.mono, ntp_check=lambda: ntp
        )
        trust.on_change = lambda synced, why: self.changes.append((synced, why))
        return trust

    def now(self, offset_s: float = 0) -> datetime:
        return datetime.fromtimestamp(self.wall + offset_s, UTC)


def test_timesyncd_flag_file_means_synchronised(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    assert ntp_synchronised(flag)


def test_trusted_clock_needs_no_ntp():
    assert ClockTrust("trusted").synced()


def test_central_time_within_the_window_confirms_the_clock():
    clocks = Clocks()
    trust = clocks.trust()
    assert not trust.synced()
    assert trust.confirm(clocks.now(10), 30)
    assert trust.synced() and clocks.changes == [(True, "synced")]


def test_central_time_far_from_ours_does_not_confirm_it():
    clocks = Clocks()
    trust = clocks.trust()
    assert not trust.confirm(clocks.now(300), 30)
    assert not trust.synced()


def test_a_disagreeing_time_withdraws_the_trust_at_once():
    clocks = Clocks()
    trust = clocks.trust()
    trust.confirm(clocks.now(), 30)
    clocks.run(60)
    assert not trust.confirm(clocks.now(-3600), 30)
    assert not trust.synced()
    assert clocks.changes[-1][0] is False and "from ours" in clocks.changes[-1][1]


def test_central_trust_lapses_after_three_minutes_without_time():
    clocks = Clocks()
    trust = clocks.trust()
    trust.confirm(clocks.now(), 30)
    clocks.run(LAPSE_S - 1)
    assert trust.check()
    clocks.run(2)
    assert not trust.check()
    assert "no time" in clocks.changes[-1][1]


def test_a_stepped_wall_clock_withdraws_central_trust_and_an_agreeing_time_restores_it():
    for step in (-3600, 3600, 365 * 86400, -NOW.timestamp()):  # -1 h, +1 h, +1 year, 1970
        clocks = Clocks()
        trust = clocks.trust()
        trust.confirm(clocks.now(), 30)
        clocks.run(5)
        assert trust.check()
        clocks.wall += step  # the monotonic clock runs on undisturbed
        assert not trust.check(), step
        assert "stepped" in clocks.changes[-1][1]
        assert not trust.confirm(datetime.fromtimestamp(clocks.wall - step, UTC), 30)
        assert not trust.synced()


def test_with_ntp_a_central_time_never_overrides_a_lost_sync():
    clocks = Clocks()
    trust = clocks.trust("ntp", ntp=False)
    assert trust.confirm(clocks.now(), 30)  # it agrees...
    assert not trust.synced()  # ...and still NTP decides
