"""The supervisor: a failing part is logged, reported and restarted with back-off."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.supervisor import Backoff, Failure, Supervisor

FAST = Backoff(initial=0.01, maximum=0.04, healthy_after=10)


async def until(condition, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_backoff_doubles_to_its_maximum_and_resets_after_a_healthy_run():
    b = Backoff(initial=1, maximum=60, healthy_after=60)
    delays = [None]
    for _ in range(8):
        delays.append(b.next(delays[-1], ran_for=0.5))
    assert delays[1:] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.next(60, ran_for=61) == 1  # ran long enough: healthy again


async def test_a_failing_part_is_logged_with_its_cause_reported_and_restarted(caplog):
    failures: list[Failure] = []
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise OSError(5, "reader unplugged")
        await asyncio.Event().wait()

    sup = Supervisor(failures.append, backoff=FAST)
    with caplog.at_level(logging.ERROR, logger="gateway.supervisor"):
        sup.start("reader r1", part)
        await until(lambda: runs == 3)
    assert [f.failures for f in failures] == [1, 2]
    assert failures[0].component == "reader r1"
    assert "reader unplugged" in failures[0].error and "OSError" in failures[0].error
    assert [f.restart_in for f in failures] == [0.01, 0.02]  # doubling
    logged = [r for r in caplog.records if "reader r1 failed" in r.getMessage()]
    assert len(logged) == 2 and logged[0].exc_info is not None  # the traceback is in the log
    assert sup.status()["reader r1"] == {
        "state": "running",
        "failures": 2,
        "last_error": failures[1].error,
    }
    await sup.stop()
    assert sup.status()["reader r1"]["state"] == "stopped"


async def test_a_part_that_ends_by_itself_is_a_failure_too():
    failures: list[Failure] = []
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor(failures.append, backoff=FAST)
    sup.start("housekeeping", part)
    await until(lambda: runs >= 2)
    await sup.stop()
    assert "ended although it should run" in failures[0].error


async def test_one_part_failing_never_stops_another():
    ticks = 0

    async def steady() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async def broken() -> None:
        raise RuntimeError("bug")

    sup = Supervisor(backoff=FAST)
    sup.start("door a", steady)
    sup.start("door b", broken)
    await until(lambda: sup.status()["door b"]["failures"] >= 3)
    before = ticks
    await until(lambda: ticks > before + 5)
    assert sup.status()["door a"] == {"state": "running", "failures": 0, "last_error": None}
    await sup.stop()


async def test_a_broken_report_does_not_stop_the_restart(caplog):
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first")
        await asyncio.Event().wait()

    def bad_sink(failure: Failure) -> None:
        raise ValueError("sink bug")

    sup = Supervisor(bad_sink, backoff=FAST)
    sup.start("sync", part, on_failure=lambda exc: None)
    await until(lambda: runs == 2)
    await sup.stop()
    assert any("reporting its failure failed" in r.getMessage() for r in caplog.records)


async def test_finish_lets_a_part_end_by_itself_without_a_restart():
    done = asyncio.Event()
    runs = 0

    async def server() -> None:
        nonlocal runs
        runs += 1
        await done.wait()

    sup = Supervisor(backoff=FAST)
    sup.start("web", server)
    await until(lambda: runs == 1)
    done.set()  # as a server told to exit returns
    await sup.finish("web", 1)
    assert runs == 1 and sup.status()["web"]["state"] == "stopped"


async def test_an_error_while_stopping_is_logged_not_swallowed(caplog):
    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("could not let go of the port")

    sup = Supervisor(backoff=FAST)
    sup.start("reader r2", stubborn)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR):
        await sup.stop()
    assert any("could not let go of the port" in r.getMessage() for r in caplog.records)


async def test_a_part_cannot_be_supervised_twice():
    sup = Supervisor()
    sup.start("web", asyncio.Event().wait)
    with pytest.raises(ValueError, match="supervised already"):
        sup.start("web", asyncio.Event().wait)
    await sup.stop()
