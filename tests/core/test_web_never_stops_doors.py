"""The web server never takes the doors down (issue 11, point 6).

A web port that is taken, or a UI that crashes, is logged (naming ``[web] port``), reported
(a ``component_failed`` event, the status's ``components``) and tried again with back-off;
the doors, the journal and the rest keep running, and the UI comes back once it can.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.supervisor import Backoff
from tests.support.ports import free_port

FAST = Backoff(initial=0.05, maximum=0.2, healthy_after=60)


def config_text(state: Path, port: int) -> str:
    return (
        f'[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state}"\nclock = "trusted"\n'
        f"[mqtt]\nenabled = false\n[web]\nport = {port}\n"
        '[[boards]]\nid = "io"\nprofile = "fake-io"\n'
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "io", index = 0 }\nunlock_seconds = 0.1\n'
    )


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Poll ``predicate`` until true (the UI restarts on its own thread)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


async def get_answers(port: int) -> bool:
    return await asyncio.to_thread(answers, port)


async def comes_up(port: int, within: float = 20.0) -> bool:
    """Whether the UI answers within ``within`` s (its process takes a moment to start)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await get_answers(port):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.fixture
async def taken_port() -> AsyncIterator[tuple[int, socket.socket]]:
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    try:
        yield port, sock
    finally:
        sock.close()


def _events(gateway: Gateway, type_: str) -> list[dict[str, Any]]:
    return [
        e for e in gateway.activity.since(-1) if e.get("kind") == "event" and e["type"] == type_
    ]


async def test_a_taken_web_port_is_reported_and_retried_while_the_doors_work(
    tmp_path: Path,
    taken_port: tuple[int, socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, blocker = taken_port
    caplog.set_level(logging.ERROR)
    gateway = Gateway(parse_config(config_text(tmp_path, port)), backoff=FAST)
    await gateway.start()  # the gateway starts although its UI cannot
    try:
        await wait_for(lambda: gateway.supervisor.status()["web"]["failures"] >= 2)
        web = gateway.status()["components"]["web"]
        assert web["state"] == "restarting"
        assert f"([web] port = {port})" in str(web["last_error"])
        assert "[web] port" in caplog.text and "Address already in use" in caplog.text
        failed = _events(gateway, "component_failed")
        assert failed and failed[0]["detail"]["component"] == "web"

        await gateway.open_once("main-in", 1)  # the door works meanwhile
        changes = gateway.boards["io"].history  # type: ignore[attr-defined]
        assert (0, True) in [(c.index, c.on) for c in changes]  # the lock was released
        # open answers once the lock moved; its check-in is final just after (no sensor)
        for _ in range(100):
            if await gateway.journal.pending_count() >= 1:
                break
            await asyncio.sleep(0.05)
        assert await gateway.journal.pending_count() >= 1

        blocker.close()  # the port is free: the UI comes back by itself
        await wait_for(lambda: gateway.supervisor.status()["web"]["state"] == "running")
        assert await comes_up(port)
    finally:
        await gateway.stop()
    assert not await get_answers(port)  # and stops with the gateway


async def test_a_crashing_ui_is_restarted_and_the_doors_never_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.ERROR)
    gateway = Gateway(parse_config(config_text(tmp_path, port)), backoff=FAST)
    await gateway.start()
    try:
        await wait_for(lambda: gateway._web is not None and gateway._web.process is not None)
        await wait_for(lambda: answers(port))
        first = gateway._web
        assert first is not None and first.process is not None
        first.process.kill()  # the UI's process dies (it runs apart from the doors)
        await wait_for(lambda: gateway.supervisor.status()["web"]["failures"] >= 1)
        await wait_for(lambda: gateway.supervisor.status()["web"]["state"] == "running")
        await wait_for(lambda: answers(port))
        web = gateway.status()["components"]["web"]
        assert "exit status -9" in str(web["last_error"])
        (failed,) = _events(gateway, "component_failed")
        assert "exit status -9" in failed["detail"]["error"]
        await gateway.open_once("main-in", 1)
        changes = gateway.boards["io"].history  # type: ignore[attr-defined]
        assert (0, True) in [(c.index, c.on) for c in changes]  # the lock was released
    finally:
        await gateway.stop()
