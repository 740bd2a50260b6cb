"""The interpreter lock's switch interval: short while a store thread computes, the doors'
otherwise, and never left short by threads that overlap."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from gateway import gil


@pytest.fixture(autouse=True)
def interval_kept() -> Iterator[None]:
    was = sys.getswitchinterval()
    yield
    sys.setswitchinterval(was)


def test_short_inside_and_the_doors_interval_back_after() -> None:
    gil.use_doors_interval()
    assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)
    with gil.short_turns_while_computing():
        assert sys.getswitchinterval() == pytest.approx(gil.COMPUTING_S)
    assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)


def test_back_after_a_failure_inside() -> None:
    gil.use_doors_interval()
    with pytest.raises(RuntimeError), gil.short_turns_while_computing():
        raise RuntimeError("a delta refused half-way")
    assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)


def test_overlapping_threads_leave_it_short_until_the_last_one_leaves() -> None:
    gil.use_doors_interval()
    first_in, second_in, first_may_leave, first_left = (threading.Event() for _ in range(4))
    seen: list[float] = []

    def first() -> None:
        with gil.short_turns_while_computing():
            first_in.set()
            first_may_leave.wait(5)
        first_left.set()

    def second() -> None:
        first_in.wait(5)
        with gil.short_turns_while_computing():
            second_in.set()
            first_left.wait(5)
            seen.append(sys.getswitchinterval())  # the first has left, this one has not

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    second_in.wait(5)
    first_may_leave.set()
    for t in threads:
        t.join(5)
    assert seen == [pytest.approx(gil.COMPUTING_S)]
    assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)


def test_the_doors_interval_set_while_computing_takes_effect_when_it_ends() -> None:
    sys.setswitchinterval(0.005)  # CPython's default, before the gateway starts
    with gil.short_turns_while_computing():
        gil.use_doors_interval()
        assert sys.getswitchinterval() == pytest.approx(gil.COMPUTING_S)
    assert sys.getswitchinterval() == pytest.approx(gil.DOORS_S)
