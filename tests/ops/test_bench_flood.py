"""The flood bench's schedule (bench/flood.py): idle, web and MQTT alternated, not in a row.

Every tap waits for an fsync and this machine's disk stalls in some minutes only: run one
after the other, a phase that met the bad minutes read 34 ms against an idle 10.9 on
2026-12-03. Alternated, every phase meets the disk's good and bad minutes alike.
"""

from __future__ import annotations

import itertools
from collections import Counter

from bench.disk import summary
from bench.flood import PHASES, schedule


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
