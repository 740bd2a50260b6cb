"""A gateway box for the restore tests: ``accessgw run`` in a process of its own (door-1,
web UI on a free port, a journal backlog, an OSDP key, an installer password), as systemd
would run it but without systemd, so a restore makes it start again by re-executing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.web.auth import set_password
from tests.ops.helpers import Daemon
from tests.web.harness import free_port
from tests.web.restore_support import Backup, other_gateway_backup

PASSWORD = "door one installer password"
OLD_OSDP = b"door one's reader key.........\n"


@dataclass
class Box:
    daemon: Daemon
    config: Path
    state: Path
    port: int
    backup: Backup  # door-2's, made for this box (its web UI on the same port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def box_config(state: Path, port: int) -> str:
    return (
        f'[gateway]\nid = "door-1"\nsite = "demo-club"\nstate_dir = "{state}"\n'
        f'clock = "trusted"\n[mqtt]\nenabled = false\n[web]\nport = {port}\n'
        '[[boards]]\nid = "relays"\nprofile = "fake-io"\n'
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "relays", index = 0 }\n'
    )


def answering(url: str, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/login", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def signed_in(url: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    client.get("/login")
    r = client.post("/login", data={"password": password, "csrf": client.cookies["agw_pre"]})
    assert r.status_code == 303, r.text
    home = client.get("/")
    client.headers["x-csrf-token"] = home.text.split('name="csrf" content="', 1)[1].split('"')[0]
    return client


@contextmanager
def running_box(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, systemd: bool = False
) -> Iterator[Box]:
    port = free_port()
    web = f"[web]\nport = {port}\n"  # door-2's UI was where door-1's is
    backup = other_gateway_backup(folder / "door-2", web=web)
    state, config = folder / "door-1" / "state", folder / "door-1" / "accessgw.toml"
    (state / "secrets" / "osdp").mkdir(parents=True)
    config.write_text(box_config(state, port))
    set_password(state / "secrets", PASSWORD)
    (state / "secrets" / "osdp" / "old-reader.scbk").write_bytes(OLD_OSDP)
    if systemd:  # as systemd sets it for a service: the gateway exits, Restart= starts it
        monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    else:  # run by hand: it re-executes itself
        monkeypatch.delenv("INVOCATION_ID", raising=False)
    daemon = Daemon(config, umask=0o077)
    try:
        daemon.wait_for("gateway door-1 of site demo-club started")
        assert answering(f"http://127.0.0.1:{port}")
        yield Box(daemon, config, state, port, backup)
    finally:
        daemon.stop()
