"""A real Mosquitto broker for tests: started on a free 127.0.0.1 port, stopped by pid."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from tests.support.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Broker:
    """One mosquitto process with a generated config. ``extra`` is appended to the config."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra: str = ""
    # as the shipped config (config/mosquitto/mosquitto.conf): sessions and their queued
    # messages survive a restart; off by default, where a test wants a broker that forgets
    persistence: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = self.extra or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(
            # As root, mosquitto would switch to the `mosquitto` user: no log file, no keys.
            f"{self._persistence()}user root\nlog_dest file {self.log}\nlog_type all\n{base}",
            encoding="utf-8",
        )

    def _persistence(self) -> str:
        if not self.persistence:
            return "persistence false\n"
        return f"persistence true\npersistence_location {self.workdir}/\n"

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until it accepts connections."""
        self.write_conf()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited: {err}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


def tls_listener(
    port: int,
    certs: Path,
    acl_file: Path | None = None,
    *,
    require_certificate: bool = True,
    password_file: Path | None = None,
) -> str:
    """Config text for a TLS listener on 127.0.0.1 with make_certs' files in ``certs``.

    With ``require_certificate`` the certificate CN becomes the username (as in
    config/mosquitto/mosquitto.conf); otherwise clients log in with ``password_file``.
    """
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"listener {port} 127.0.0.1",
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'server.crt'}",
        f"keyfile {certs / 'server.key'}",
    ]
    if require_certificate:
        lines += [
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
        ]
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


def plain_listener(
    port: int, password_file: Path | None = None, acl_file: Path | None = None
) -> str:
    """Config text for a plain listener on 127.0.0.1, anonymous unless ``password_file``."""
    lines = [f"listener {port} 127.0.0.1"]
    if password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made with ``mosquitto_passwd -b`` (users -> passwords)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    for user, password in users.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    return path


@dataclass(frozen=True)
class Seen:
    """One message a Watcher received."""

    topic: str
    payload: bytes
    retain: bool


class Watcher:
    """A plain aiomqtt client standing in for the central system: subscribes and records.

    ``async with Watcher(port, ["acs/v1/#"]) as w: await w.wait_for(lambda m: ...)``.
    """

    def __init__(
        self,
        port: int,
        filters: list[str],
        *,
        identifier: str = "central",
        tls: aiomqtt.TLSParameters | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.port = port
        self.filters = filters
        self.seen: list[Seen] = []
        self._arrived = asyncio.Event()
        self._kwargs = {"identifier": identifier, "tls_params": tls, **client_kwargs}
        self._kwargs.setdefault("protocol", aiomqtt.ProtocolVersion.V5)
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client

    async def __aenter__(self) -> Watcher:
        self.client = aiomqtt.Client("127.0.0.1", self.port, **self._kwargs)
        await self._stack.enter_async_context(self.client)
        for topic_filter in self.filters:
            await self.client.subscribe(topic_filter, qos=1)
        task = asyncio.create_task(self._pump())
        self._stack.callback(task.cancel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self._stack.aclose()

    async def _pump(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.seen.append(Seen(str(message.topic), payload, bool(message.retain)))
                self._arrived.set()

    def on(self, topic: str) -> list[Seen]:
        """Messages seen on exactly ``topic``."""
        return [m for m in self.seen if m.topic == topic]

    async def wait_for(self, topic: str, payload: bytes | None = None, within: float = 10) -> Seen:
        """The first message on ``topic`` (with ``payload`` if given), waiting if needed."""
        async with asyncio.timeout(within):
            while True:
                for m in self.on(topic):
                    if payload is None or m.payload == payload:
                        return m
                self._arrived.clear()
                await self._arrived.wait()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1."""
        await self.client.publish(topic, payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def running(coro: Any) -> Any:
    """Run ``coro`` (e.g. ``link.run()``) as a task for the block, cancel it after."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_certs_script() -> Any:
    """scripts/make_certs.py as a module (scripts/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "make_certs.py"
    spec = importlib.util.spec_from_file_location("make_certs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_certs", module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules["make_certs"])
    return sys.modules["make_certs"]


async def eventually(check: Any, within: float = 10, step: float = 0.02) -> None:
    """Wait until ``check()`` is true; TimeoutError after ``within`` seconds."""
    for _ in range(max(1, int(within / step))):
        if check():
            return
        await asyncio.sleep(step)
    if not check():
        raise TimeoutError(f"not true within {within} s: {check}")
