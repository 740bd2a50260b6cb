"""The benches' count of the time the host took (bench/host.py): the pinned cores' steal."""

from __future__ import annotations

from pathlib import Path

from bench.host import Steal, ticks


def stat(path: Path, cpu0: tuple[int, ...], cpu1: tuple[int, ...]) -> None:
    """A /proc/stat with two cores: user nice system idle iowait irq softirq steal guest."""
    rows = [("cpu", tuple(a + b for a, b in zip(cpu0, cpu1, strict=True))),
            ("cpu0", cpu0), ("cpu1", cpu1)]  # fmt: skip
    lines = [f"{name} {' '.join(map(str, values))}" for name, values in rows]
    path.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 99"]) + "\n")


def test_the_share_is_the_pinned_cores_steal_over_every_block(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    stat(path, (100, 0, 50, 800, 0, 0, 0, 50, 0), (10, 0, 0, 990, 0, 0, 0, 0, 0))
    steal = Steal({0}, path)
    with steal:
        stat(path, (150, 0, 60, 880, 0, 0, 0, 60, 0), (10, 0, 0, 2000, 0, 0, 0, 500, 0))
    stat(path, (500, 0, 60, 880, 0, 0, 0, 60, 0), (10, 0, 0, 2000, 0, 0, 0, 500, 0))
    with steal:  # a second block of the same phase adds to the first
        stat(path, (540, 0, 60, 880, 0, 0, 0, 120, 0), (10, 0, 0, 2000, 0, 0, 0, 500, 0))
    assert (steal.stolen, steal.every) == (10 + 60, 150 + 100)
    assert steal.share() == 70 / 250


def test_a_system_that_does_not_say_gives_no_share(tmp_path: Path) -> None:
    assert ticks({0}, tmp_path / "no such file") == (0, 0)
    with Steal({0}, tmp_path / "no such file") as steal:
        pass
    assert steal.share() != steal.share()  # nan: not measured, not zero
