"""The benches' fsync probe (bench/disk.py): it measures while it runs and leaves nothing."""

from __future__ import annotations

import time
from pathlib import Path

from bench.disk import INTERVAL_S, FsyncProbe


def test_the_probe_fsyncs_while_it_runs_and_removes_its_file(tmp_path: Path) -> None:
    with FsyncProbe(tmp_path) as probe:
        time.sleep(INTERVAL_S * 6)
    assert len(probe.ms) >= 2
    assert all(ms >= 0 for ms in probe.ms)
    assert list(tmp_path.iterdir()) == []
    assert probe.summary().startswith("a bare fsync on this disk meanwhile: p50 ")


def test_a_probe_stopped_at_once_says_it_measured_nothing(tmp_path: Path) -> None:
    with FsyncProbe(tmp_path) as probe:
        pass
    assert probe.ms == []
    assert "not measured" in probe.summary()
