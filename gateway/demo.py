"""``accessgw demo``: the real gateway on simulated hardware, talking to a simulated central.

What runs: a Mosquitto broker on a free loopback port (when installed), the central
simulator with a few members, a PN532 NFC reader and a QR scanner simulated on ptys
(the gateway's real drivers read them), and a fake relay/input board under a turnstile
and an exit door. A short scripted scenario shows grants and refusals with their
reasons; then the gateway keeps running with its web UI until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.identity import load_identity
from gateway.passes import make_pass, public_key_b64

SITE, GW = "demo-club", "door-1"
PHONE = Ed25519PrivateKey.generate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int | None]:
    """A broker on a free loopback port, or None when mosquitto is not installed."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        print("mosquitto is not installed: the demo runs without the central system")
        yield None
        return
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    # a session of its own: Ctrl-C stops the gateway first, then the demo stops the broker
    proc = subprocess.Popen(
        [exe, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def members(today: datetime) -> list[dict[str, Any]]:
    """The demo club's members and one event ticket."""
    recurring = {"id": "C1", "type": "recurring", "start": "2026-01-01", "end": None}
    start = (today - timedelta(days=10)).date().isoformat()
    return [
        {"member": "M1", "display": "Kari N.", "contracts": [recurring],
         "credentials": [{"kind": "nfc", "uid": "04A1B2C3D4E5F6"},
                         {"kind": "phone", "device": "kari-phone",
                          "key": public_key_b64(PHONE),
                          "bound_at": (today - timedelta(days=3)).isoformat()}]},
        {"member": "M2", "display": "Ola T.", "credentials": [{"kind": "nfc", "uid": "04B2C3D4"}],
         "contracts": [{"id": "K1", "type": "clipcard", "start": start, "end": None,
                        "credits": 2}]},
        {"member": "M3", "display": "Per S.", "credentials": [{"kind": "nfc", "uid": "04C3D4E5"}],
         "contracts": [{**recurring, "freezes": [{"from": start,
                                                  "to": (today + timedelta(days=20)).date()
                                                  .isoformat()}]}]},
        {"ticket": "T-100", "code": "EVT-100-XK", "valid_from": (today - timedelta(hours=1))
         .isoformat(), "valid_to": (today + timedelta(hours=5)).isoformat(), "zones": ["gym"]},
    ]  # fmt: skip


def config_text(
    state_dir: Path,
    port: int | None,
    public_key: str | None,
    nfc_port: str,
    qr_port: str,
    web_port: int,
) -> str:
    """The demo gateway's config: one turnstile in, one exit door, two readers."""
    mqtt = (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nack_timeout = 5\n'
        if port
        else "[mqtt]\nenabled = false\n"
    )
    central = f'[central]\npublic_key = "{public_key}"\n' if public_key else ""
    return f"""
[gateway]
id = "{GW}"
site = "{SITE}"
state_dir = "{state_dir}"
language = "en"
clock = "trusted"
{central}
{mqtt}
[web]
port = {web_port}

[[boards]]
id = "io"
profile = "fake-io"

[[doors]]
id = "turnstile-in"
zone = "gym"
direction = "in"
kind = "turnstile"
lock = {{ board = "io", index = 0 }}
passage = {{ board = "io", index = 0 }}
pass_timeout = 3

[[doors]]
id = "exit"
zone = "gym"
direction = "out"
lock = {{ board = "io", index = 1 }}
unlock_seconds = 2

[[readers]]
id = "nfc-in"
profile = "pn532-hsu"
door = "turnstile-in"
port = "{nfc_port}"
repeat_guard = 1.0

[[readers]]
id = "qr-in"
profile = "newland-fm430"
door = "turnstile-in"
port = "{qr_port}"
repeat_guard = 1.0
"""


class Scenario:
    """Presents credentials to the simulated readers and prints what the gateway decided."""

    def __init__(self, gateway: Gateway, nfc: Any, qr: Any, board: Any) -> None:
        self.gateway = gateway
        self.nfc = nfc
        self.qr = qr
        self.board = board
        self.seen = -1

    async def decision(self, within: float = 8.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for item in self.gateway.activity.since(self.seen):
                self.seen = max(self.seen, item["n"])
                if item["kind"] == "decision":
                    return item
            await asyncio.sleep(0.05)
        return None

    def show(self, what: str, item: dict[str, Any] | None) -> None:
        if item is None:
            print(f"  {what:<44} -> (no decision seen)")
            return
        who = item.get("member") or item.get("ticket") or "-"
        extra = f", charged {item['charged']}" if item.get("charged") else ""
        passed = (
            ""
            if item["decision"] == "denied"
            else (", walked through" if item.get("passed") else ", nobody walked through")
        )
        print(f"  {what:<44} -> {item['decision']:<7} {item['reason']:<20} {who}{extra}{passed}")

    async def walk_through(self) -> None:
        """Once the turnstile is released, a person pushes it: the rotation input pulses."""
        deadline = time.monotonic() + 8
        while not self.board.output_state(0):
            if time.monotonic() > deadline:
                return  # never released (refused): nobody pushes a locked turnstile
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        self.board.set_input(0, True)
        await asyncio.sleep(0.1)
        self.board.set_input(0, False)

    async def tap(self, what: str, uid: str, walk: bool = True) -> None:
        self.nfc.place(uid)
        walker = asyncio.create_task(self.walk_through()) if walk else None
        item = await self.decision()
        if walker is not None and (item is None or item["decision"] == "denied"):
            walker.cancel()  # a refused person walks away: no push at the next grant
        self.nfc.remove()
        self.show(what, item)
        await asyncio.sleep(1.2)

    async def scan(self, what: str, code: str, walk: bool = True) -> None:
        self.qr.scan(code)
        walker = asyncio.create_task(self.walk_through()) if walk else None
        item = await self.decision()
        if walker is not None and (item is None or item["decision"] == "denied"):
            walker.cancel()
        self.show(what, item)
        await asyncio.sleep(1.2)

    async def run(self, central: Any) -> None:
        print("\nscenario (turnstile into the gym):")
        await self.tap("Kari taps her card (recurring contract)", "04A1B2C3D4E5F6")
        await self.tap("Ola taps his clip card (2 visits left)", "04B2C3D4")
        await self.tap("Per taps (contract frozen)", "04C3D4E5")
        await self.tap("an unknown card", "04FFFFFF")
        token = make_pass(PHONE, "M1", "kari-phone", int(time.time()))
        await self.scan("Kari shows her phone pass (QR)", token)
        await self.scan("the same phone pass again (replayed)", token)
        await self.scan("an event ticket (QR)", "EVT-100-XK")
        await self.scan("the same ticket again", "EVT-100-XK")
        await self.tap("Ola taps, but does not walk through", "04B2C3D4", walk=False)
        if central is not None:
            await central.block(
                "M2",
                datetime.now(UTC) - timedelta(minutes=1),
                datetime.now(UTC) + timedelta(days=1),
            )
            await asyncio.sleep(1.5)
            await self.tap("the central system blocks Ola; he taps", "04B2C3D4")


async def run_demo_async(state_dir: Path, web_port: int, seconds: float | None) -> None:
    """Start everything, run the scenario, keep running for ``seconds`` (None: until Ctrl-C)."""
    from simulators.pn532 import Pn532Simulator
    from simulators.scanner import ScannerSimulator

    today = datetime.now(UTC)
    with mosquitto(state_dir) as port, Pn532Simulator() as nfc, ScannerSimulator() as qr:
        central_cm: Any = contextlib.nullcontext(None)
        if port is not None:
            from simulators.central import CentralSimulator

            # The demo gateway's key pair, made now (as on its first start) and registered
            # with the central system, which then takes only messages it signed.
            identity = load_identity(GW, SITE, state_dir / "gateway")
            central_cm = CentralSimulator(
                "127.0.0.1",
                port,
                SITE,
                records=members(today),
                gateways={GW: identity.public_key_b64},
            )
        async with central_cm as central:
            key = central.public_key_b64 if central is not None else None
            text = config_text(state_dir / "gateway", port, key, nfc.path, qr.path, web_port)
            gateway = Gateway(parse_config(text, "demo config"))
            await gateway.start()
            try:
                if central is None:
                    _load_locally(gateway, today)
                await _wait_for_set(gateway)
                print(
                    f"gateway {GW} of site {SITE}: entitlements v{gateway.store.version}, "
                    f"{gateway.store.record_count} records; web UI: http://127.0.0.1:{web_port}/"
                )
                board: Any = gateway.boards["io"]  # the demo's fake-io board (set_input)
                board.set_input(0, False)  # the turnstile's rotation sensor at rest
                await Scenario(gateway, nfc, qr, board).run(central)
                if central is not None:
                    await asyncio.sleep(1)
                    got = central.received[GW]
                    print(
                        f"\nthe central system received {len(got.checkins)} signed check-ins "
                        f"from {GW} ({len(got.refused)} refused)"
                    )
                print(
                    "\nthe gateway keeps running"
                    + (f" for {seconds:.0f} s" if seconds else "; Ctrl-C stops it")
                )
                await asyncio.sleep(seconds if seconds is not None else float("inf"))
            finally:
                await gateway.stop()


def _load_locally(gateway: Gateway, today: datetime) -> None:
    """Without a broker, load the demo set straight into the store."""
    from gateway.entitlements import parse_records, parse_rules
    from simulators.central import default_rules

    rules = parse_rules(default_rules(SITE))
    gateway.store.replace(1, rules, parse_records(members(today), rules), {}, today)


async def _wait_for_set(gateway: Gateway, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while gateway.store.version is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


def run_demo(args: Any) -> int:
    """``accessgw demo``."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="accessgw-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    print(f"accessgw demo: state in {state_dir}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo_async(state_dir, args.port, args.seconds))
    return 0
