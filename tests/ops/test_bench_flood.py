"""The flood bench's schedule (bench/flood.py): idle, web and MQTT alternated, not in a row.

Every tap waits for an fsync and this machine's disk stalls in some minutes only: run one
after the other, a phase that met the bad minutes read 34 ms against an idle 10.9 on
2026-12-03. Alternated, every phase meets the disk's good and bad minutes alike.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter
from typing import Any

from bench.disk import summary
from bench.flood import PHASES, less_commit, rows, schedule


def test_every_phase_gets_its_taps_in_as_many_blocks_as_rounds() -> None:
    blocks = schedule(1000, 10)
    assert len(blocks) == 30
    taps: Counter[str] = Counter()
    for phase, n in blocks:
        taps[phase] += n
    assert taps == {"idle": 1000, "web": 1000, "mqtt": 1000}
    assert {n for _, n in blocks} == {100}


def test_the_phases_alternate_and_their_order_turns_each_round() -> None:
    blocks = schedule(9, 3)
    assert [phase for phase, _ in blocks] == [
        "idle", "web", "mqtt",
        "web", "mqtt", "idle",
        "mqtt", "idle", "web",
    ]  # fmt: skip
    # no phase twice in a row: each block sees the disk at another time than the last
    assert all(a[0] != b[0] for a, b in itertools.pairwise(blocks))
    # and each phase comes first, second and last once: none always follows a flood
    for phase in PHASES:
        assert sorted(i % 3 for i, (p, _) in enumerate(blocks) if p == phase) == [0, 1, 2]


def test_taps_that_do_not_divide_evenly_are_all_run() -> None:
    blocks = schedule(10, 3)
    assert sum(n for p, n in blocks if p == "web") == 10
    assert sorted(n for p, n in blocks if p == "web") == [3, 3, 4]
    assert schedule(2, 3) == [("idle", 1), ("web", 1), ("mqtt", 1),
                              ("web", 1), ("mqtt", 1), ("idle", 1)]  # fmt: skip


def test_the_disk_summary_takes_several_probes_fsyncs_together() -> None:
    assert summary([]) == "a bare fsync on this disk meanwhile: not measured"
    text = summary([1.0] * 98 + [50.0, 700.0])
    assert text == "a bare fsync on this disk meanwhile: p50 1.00 ms, p99 50.0 ms, max 700 ms"


def measured(idle: list[tuple[float, float]], web: list[tuple[float, float]]) -> dict[str, Any]:
    """What :func:`bench.flood.measure` returns, from (tap ms, commit ms) pairs."""
    phases = {"idle": idle, "web": web, "mqtt": idle}
    return {**{k: [t for t, _ in v] for k, v in phases.items()},
            "commit": {k: [c for _, c in v] for k, v in phases.items()},
            "disk": dict.fromkeys(phases, summary([])), "ui_cpu_share": 0.2,
            "steal": {"idle": 0.01, "web": 0.05, "mqtt": 0.01}}  # fmt: skip


ARGS = argparse.Namespace(rounds=10, flood_rate=2000.0)


def test_a_disk_stall_in_one_phase_is_the_disks_not_the_load_s() -> None:
    # idle: quick commits; web: the same taps but the disk stalled under five of them
    idle = [(3.0, 1.0)] * 100
    web = [(3.0, 1.0)] * 95 + [(43.0, 41.0)] * 5
    web_row, _, whole_web, _ = rows(measured(idle, web), ARGS)
    assert whole_web.value == 43.0 and whole_web.holds is None  # shown, not judged
    assert web_row.value == 2.0 and web_row.floor == 2.0 and web_row.holds
    assert "the commit's p99 41.0 ms (idle 1.0)" in web_row.note
    assert "the host took 5.0% of the cores' time (idle 1.0%)" in web_row.note


def test_a_load_that_slows_the_rest_of_the_tap_misses_the_target() -> None:
    idle = [(3.0, 1.0)] * 100
    web = [(3.0, 1.0)] * 95 + [(8.0, 1.0)] * 5  # the loop late, the disk quick
    web_row = rows(measured(idle, web), ARGS)[0]
    assert (web_row.value, web_row.floor, web_row.holds) == (7.0, 2.0, False)


def test_a_tap_that_did_not_open_counts_in_neither() -> None:
    nan = float("nan")
    assert less_commit(measured([(3.0, 1.0), (nan, nan)], [(3.0, 1.0)] * 2), "idle")[0] == 2.0
    web_row = rows(measured([(3.0, 1.0), (nan, nan)], [(4.0, 1.0), (nan, nan)]), ARGS)[0]
    assert (web_row.value, web_row.floor) == (3.0, 2.0)
