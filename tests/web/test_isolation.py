"""Issue 14 point 4 and issue 9 point 5 (web part): the UI never shares the doors' loop.

The UI runs in a process of its own; it never reads the gateway's objects, it is sent
plain data. So a hung gateway loop leaves the UI answering (saying the gateway is stale),
and activity added on the loop while the UI is busy is never iterated by another thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from tests.web.harness import Site, eventually, signed_in


def test_the_ui_is_a_process_of_its_own_and_answers_while_the_gateway_hangs(gw: Site) -> None:
    client = signed_in(gw)
    web = gw.gateway._web
    assert web is not None and web.process is not None and web.process.pid != os.getpid()
    assert client.get("/api/status").json()["stale"] is False
    gw.hang(8)  # the gateway's loop blocks (a hung gateway, not a dead one)
    time.sleep(1.2)  # past the shared snapshot's second
    started = time.monotonic()
    assert client.get("/api/events").status_code == 200  # the history needs no gateway
    assert time.monotonic() - started < 3
    status = client.get("/api/status").json()  # the last snapshot, marked stale
    assert status["stale"] is True and "did not answer" in status["stale_reason"]
    assert status["doors"]  # the installer still sees the last known state
    assert eventually(lambda: client.get("/api/status").json()["stale"] is False, 15)


def test_the_ui_process_runs_behind_the_doors(gw: Site) -> None:
    """It lowers its own CPU priority (gateway.niceness): under a flood of requests the
    doors' process still gets a core first."""
    from gateway import niceness

    web = gw.gateway._web
    assert web is not None and web.process is not None
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness.BACKGROUND)
    assert eventually(lambda: os.getpriority(os.PRIO_PROCESS, web.process.pid) == expected, 10)


def test_activity_added_on_the_loop_while_the_ui_polls_reaches_the_history(gw: Site) -> None:
    client = signed_in(gw)
    errors: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for path in ("/api/status", "/api/events?limit=200", "/"):
                code = client.get(path).status_code
                if code != 200:
                    errors.append(code)

    async def flood() -> None:
        for i in range(5000):
            gw.gateway.activity.add("event", type="flood_test", door="main-in", detail={"n": i})
            if i % 500 == 0:
                await asyncio.sleep(0)

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for p in pollers:
        p.start()
    gw.call(flood())
    rows = eventually(
        lambda: len(client.get("/api/events", params={"reason": "flood_test", "limit": 500})
                    .json()) == 500, 20)  # fmt: skip
    stop.set()
    for p in pollers:
        p.join(20)
    assert rows and not errors
