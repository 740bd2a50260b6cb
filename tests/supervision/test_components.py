"""A crash injected into each long-lived part: logged, reported, restarted; others go on.

Before supervision, a reader loop or door task that raised vanished without a log line
and ``release()`` said "door is not running" for good (issue 9, defect 1).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.doors import Door
from tests.supervision.helpers import (
    ScriptedReader,
    events,
    load_members,
    offline_config,
    running,
    until,
)


async def test_a_reader_loop_that_raises_is_restarted_and_reported(tmp_path, caplog):
    async with running(offline_config(tmp_path)) as gw:
        load_members(gw, 1)
        reader = ScriptedReader("r1", gw)
        gw.attach_reader(reader, "in", 0)
        await until(lambda: reader.loops == 1)
        with caplog.at_level(logging.ERROR):
            reader.queue.put_nowait(OSError(19, "No such device"))
            await until(lambda: reader.loops == 2)
        assert any(
            "reader r1 failed" in r.getMessage() and "No such device" in r.getMessage()
            for r in caplog.records
        )
        [failed] = await until_events(gw, "component_failed")
        assert failed["door"] == "in"
        assert failed["detail"]["component"] == "reader r1"
        assert "No such device" in failed["detail"]["error"]
        assert await events(gw, "reader_offline")  # the reader showed offline meanwhile
        assert gw.status()["components"]["reader r1"]["failures"] == 1
        reader.nfc("04000001")  # the restarted loop still decides
        await until(lambda: reader.feedbacks == [True])


async def test_a_door_task_that_raises_is_restarted_and_the_other_door_goes_on(tmp_path):
    async with running(offline_config(tmp_path)) as gw:
        load_members(gw, 1, 2)
        door_in: Door = gw.doors["in"]
        real_apply = door_in._apply
        crashes = 0

        async def crashing_apply() -> None:
            nonlocal crashes
            if crashes == 0:
                crashes += 1
                raise RuntimeError("injected door bug")
            await real_apply()

        door_in._apply = crashing_apply  # type: ignore[method-assign]
        door_in._wake.set()
        await until(lambda: gw.status()["components"]["door in"]["failures"] == 1)
        out = ScriptedReader("r-out")
        gw.attach_reader(out, "out", 0)
        out.nfc("04000002")
        await until(lambda: out.feedbacks == [True])  # the other door was never down
        reader = ScriptedReader("r-in")
        gw.attach_reader(reader, "in", 0)
        await until(lambda: gw.status()["components"]["door in"]["state"] == "running")
        reader.nfc("04000001")
        await until(lambda: reader.feedbacks == [True])  # restarted: it releases again
        [failed] = await until_events(gw, "component_failed")
        assert failed["door"] == "in" and "injected door bug" in failed["detail"]["error"]
        await until(lambda: gw.doors["in"].status()["lock"] == "locked")  # relocks on time


async def test_housekeeping_that_raises_is_restarted_and_reported(tmp_path):
    async with running(offline_config(tmp_path), housekeeping_every=0.02) as gw:
        real_prune = gw.history.prune
        calls = 0

        def crashing_prune(now):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError(28, "No space left on device")
            return real_prune(now)

        gw.history.prune = crashing_prune  # type: ignore[method-assign]
        await until(lambda: calls >= 3)  # ran again after the failure
        [failed] = await until_events(gw, "component_failed")
        assert failed["detail"]["component"] == "housekeeping"
        assert failed["door"] is None


async def test_the_web_ui_failing_to_listen_is_a_failed_component_not_the_gateway(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    text = offline_config(tmp_path).replace(
        "[web]\nenabled = false", f'[web]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}'
    )
    try:
        async with running(text) as gw:
            load_members(gw, 1)
            reader = ScriptedReader("r1")
            gw.attach_reader(reader, "in", 0)
            reader.nfc("04000001")
            await until(lambda: reader.feedbacks == [True])  # the doors do not care
            [failed, *_] = await until_events(gw, "component_failed")
            assert failed["detail"]["component"] == "web"
    finally:
        taken.close()


async def test_stop_logs_a_failure_instead_of_swallowing_it(tmp_path, caplog):
    async with running(offline_config(tmp_path)) as gw:
        reader = ScriptedReader("r1")

        async def broken_close() -> None:
            raise OSError(5, "Input/output error on close")

        reader.close = broken_close  # type: ignore[method-assign]
        gw.attach_reader(reader, "in", 0)
        caplog.set_level(logging.ERROR)
    assert any(
        "closing reader r1 failed" in r.getMessage() and "Input/output error" in r.getMessage()
        for r in caplog.records
    )


async def until_events(gw, type_: str, count: int = 1, within: float = 10.0):  # type: ignore[no-untyped-def]
    found: list = []

    async def enough() -> bool:
        found[:] = await events(gw, type_)
        return len(found) >= count

    await until(enough, within)
    await asyncio.sleep(0)
    return found
