"""``--cpus N`` (bench/figures.py): the bench's processes and the kernel's unbound workers on
the same cores while it runs, the workers given their cores back when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned(workers: Path) -> list[str]:
    """What a process pinned to one core printed: its line, then the workers' mask meanwhile."""
    code = (
        "import os; from pathlib import Path; from bench.figures import pin_cpus; "
        f"w = Path({str(workers)!r}); print(pin_cpus(1, w)); "
        "print(w.read_text().strip() if w.is_file() else '-'); "
        "print(sorted(os.sched_getaffinity(0)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    return done.stdout.splitlines()


def test_the_workers_share_the_pinned_core_and_get_theirs_back_at_the_end(
    tmp_path: Path,
) -> None:
    workers = tmp_path / "cpumask"
    workers.write_text("3\n")
    line, meanwhile, cores = pinned(workers)
    assert line.endswith("(the kernel's unbound workers: moved there from mask 3 until the "
                         "bench ends)")  # fmt: skip
    first = int(cores.strip("[]"))
    assert meanwhile == f"{1 << first:x}"
    assert workers.read_text() == "3"


def test_workers_there_already_are_left_alone(tmp_path: Path) -> None:
    first = min(os.sched_getaffinity(0))
    workers = tmp_path / "cpumask"
    workers.write_text(f"{1 << first:x}\n")
    line, _, _ = pinned(workers)
    assert line.endswith("there already)")
    assert workers.read_text() == f"{1 << first:x}\n"


def test_a_system_that_will_not_say_leaves_the_workers_where_they_are(tmp_path: Path) -> None:
    line, meanwhile, _ = pinned(tmp_path / "no such file")
    assert "where the kernel puts them (No such file or directory)" in line
    assert meanwhile == "-"
