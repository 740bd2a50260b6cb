"""The clock gate: passes are timed only once the clock is known good."""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.clock import ClockTrust, ntp_synchronised

NOW = datetime.fromisoformat("2026-11-25T10:00:00+01:00")


def test_timesyncd_flag_file_means_synchronised(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    assert ntp_synchronised(flag)


def test_trusted_clock_needs_no_ntp():
    assert ClockTrust("trusted").synced()


def test_central_time_within_the_window_confirms_the_clock():
    trust = ClockTrust("central")
    assert not trust.synced()
    assert trust.confirm(NOW + timedelta(seconds=10), NOW, 30)
    assert trust.synced()


def test_central_time_far_from_ours_does_not_confirm_it():
    trust = ClockTrust("central")
    assert not trust.confirm(NOW + timedelta(minutes=5), NOW, 30)
    assert not trust.synced()
