"""A whole gateway with its web UI for the web tests: real drivers on simulated hardware.

The gateway runs on a loop in a thread of its own (as in ``accessgw run``); the web UI in
its own process beside it. Hardware: a Modbus TCP relay board simulator (door ``main-in``),
a second board that is not there (door ``side-out``: its board is unreachable), a PN532
NFC reader and a QR scanner on ptys at ``main-in``. No MQTT.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.entitlements import parse_records, parse_rules
from gateway.web.auth import read_setup_code
from simulators.pn532 import Pn532Simulator
from simulators.relay_board import RelayBoardSim
from simulators.scanner import ScannerSimulator

T = TypeVar("T")
PASSWORD = "correct horse battery"
CARD_UID = "04A1B2C3D4E5F6"
QR_CODE = "EVT-100-XK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def members(today: datetime) -> list[dict[str, Any]]:
    """Kari (a card), Ola (expired), and a ticket with a QR code."""
    recurring = {"id": "C1", "type": "recurring", "start": "2026-01-01", "end": None}
    old = {"id": "C2", "type": "recurring", "start": "2025-01-01", "end": "2025-12-31"}
    return [
        {"member": "M1001", "display": "Kari Nordmann", "contracts": [recurring],
         "credentials": [{"kind": "nfc", "uid": CARD_UID}]},
        {"member": "M1002", "display": "Ola Hansen", "contracts": [old],
         "credentials": [{"kind": "nfc", "uid": "04B2C3D4"}]},
        {"ticket": "T-100", "code": QR_CODE, "zones": ["gym"], "uses": 5,
         "valid_from": (today - timedelta(hours=1)).isoformat(),
         "valid_to": (today + timedelta(hours=5)).isoformat()},
    ]  # fmt: skip


RULES = {
    "site": "demo-club",
    "timezone": "Europe/Oslo",
    "schedules": {},
    "opening_schedule": None,
    "zones": {"gym": {}},
    "reentry_free_minutes": 0,
}


def config_text(state: Path, web_port: int, relay_port: int, dead_port: int, nfc: str, qr: str,
                web_extra: str = "", language: str = "en") -> str:  # fmt: skip
    return f"""
[gateway]
id = "door-1"
site = "demo-club"
state_dir = "{state}"
clock = "trusted"
language = "{language}"
[mqtt]
enabled = false
[web]
port = {web_port}
{web_extra}
[[boards]]
id = "relays"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {relay_port}
[[boards]]
id = "far"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {dead_port}
[[doors]]
id = "main-in"
zone = "gym"
direction = "in"
lock = {{ board = "relays", index = 0 }}
unlock_seconds = 1
pass_timeout = 1
[[doors]]
id = "side-out"
zone = "gym"
direction = "out"
lock = {{ board = "far", index = 0 }}
[[readers]]
id = "nfc-in"
profile = "pn532-hsu"
door = "main-in"
port = "{nfc}"
repeat_guard = 0.5
[[readers]]
id = "qr-in"
profile = "newland-fm430"
door = "main-in"
port = "{qr}"
repeat_guard = 0.5
"""


class Site:
    """The running gateway, its simulators and the web UI's address."""

    def __init__(self, state: Path, web_extra: str = "", language: str = "en") -> None:
        self.state = state
        self.relays = RelayBoardSim().start_tcp()
        self.nfc = Pn532Simulator().start()
        self.qr = ScannerSimulator().start()
        self.web_port = free_port()
        text = config_text(state, self.web_port, self.relays.port, free_port(),
                           self.nfc.path, self.qr.path, web_extra, language)  # fmt: skip
        self.config = parse_config(text, "web test config")
        # a config file the UI's device and MQTT set-up can change (gateway.config_apply)
        self.config_path = state.with_name(state.name + "-accessgw.toml")
        self.config_path.write_text(text, encoding="utf-8")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self.thread.start()
        self.gateway = Gateway(self.config, config_path=self.config_path)
        self.call(self.gateway.start())
        today = datetime.now(UTC)
        rules = parse_rules(RULES)
        self.gateway.store.replace(1, rules, parse_records(members(today), rules), {}, today)
        self.running = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        """Run a coroutine on the gateway's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def setup_code(self) -> str:
        code = read_setup_code(self.state / "secrets")
        assert code, "the gateway made no setup code"
        return code

    def stop(self) -> None:
        """Stop the gateway (and its web UI)."""
        if self.running:
            self.running = False
            self.call(self.gateway.stop())

    def hang(self, seconds: float) -> None:
        """The gateway's loop stops answering for a while (a hung gateway, not a dead one)."""
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.nfc.stop()
        self.qr.stop()
        self.relays.close()


@contextmanager
def site(state: Path, web_extra: str = "", language: str = "en") -> Iterator[Site]:
    s = Site(state, web_extra, language)
    try:
        yield s
    finally:
        s.close()


def eventually(check: Callable[[], T], within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def signed_in(s: Site) -> httpx.Client:
    """An HTTP client signed in as the installer (sets the password on first use)."""
    client = httpx.Client(base_url=s.url, follow_redirects=False, timeout=20)
    page = client.get("/setup")
    if page.status_code == 200:
        pre = client.cookies["agw_pre"]
        r = client.post("/setup", data={"code": s.setup_code(), "password": PASSWORD,
                                        "again": PASSWORD, "csrf": pre})  # fmt: skip
        assert r.status_code == 303, r.text
    else:
        client.get("/login")
        r = client.post("/login", data={"password": PASSWORD, "csrf": client.cookies["agw_pre"]})
        assert r.status_code == 303, r.text
    home = client.get("/")
    assert home.status_code == 200
    csrf = home.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
    client.headers["x-csrf-token"] = csrf
    return client
