"""Running ``accessgw`` as the service would: a child process, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UID, NAME = "04A1B2C3D4E5F6", "Kari Nordmann"
SITE = "club"


def gateway_config(
    tmp_path: Path, broker_port: int, key: str, board_port: int, nfc_path: str, extra: str = ""
) -> str:
    """A gateway on the test broker with a Modbus TCP board and a PN532 reader."""
    return f"""
[gateway]
id = "gw-1"
site = "{SITE}"
state_dir = "{tmp_path / "state"}"
clock = "trusted"
[central]
public_key = "{key}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
reconnect_max = 1
[web]
enabled = false
[[boards]]
id = "relays"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {board_port}
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = {{ board = "relays", index = 0 }}
unlock_seconds = 0.5
[[readers]]
id = "nfc-in"
profile = "pn532-hsu"
door = "in"
port = "{nfc_path}"
repeat_guard = 0.5
{extra}"""


MEMBER = {
    "member": "M1",
    "display": NAME,
    "credentials": [{"kind": "nfc", "uid": UID}],
    "contracts": [{"id": "C1", "type": "recurring", "start": "2026-01-01"}],
}


def minimal_config(state_dir: Path, extra: str = "") -> str:
    """A gateway with no hardware and no broker: enough to create its state."""
    return (
        f'[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state_dir}"\n'
        f'clock = "trusted"\n[mqtt]\nenabled = false\n[web]\nenabled = false\n{extra}'
    )


class Daemon:
    """``accessgw run CONFIG`` in a child process, its stderr collected line by line."""

    def __init__(self, config: Path, *args: str, umask: int = 0o022) -> None:
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(config), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.umask(umask),  # the umask a careless shell would give
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _find(self, text: str, after: int) -> int | None:
        for i in range(after, len(self.lines)):
            if text in self.lines[i]:
                return i
        return None

    def wait_for(self, text: str, within: float = 30.0, after: int = 0) -> int:
        """The index of the first stderr line (from ``after``) containing ``text``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self._find(text, after)
            if found is not None:
                return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged; got:\n" + "\n".join(self.lines[-40:]))

    async def wait_for_async(self, text: str, within: float = 30.0, after: int = 0) -> int:
        """:meth:`wait_for` without blocking the event loop (simulators run on it)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self._find(text, after)
            if found is not None:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} not logged; got:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> int:
        """SIGTERM, then the exit code; the rest of stderr is kept."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode
