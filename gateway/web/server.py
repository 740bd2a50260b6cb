"""The web UI as a process of its own beside the gateway: it can never slow the doors.

The gateway binds the listening socket (a port in use is reported at once, in words),
makes the setup code on first start, and starts ``python -m gateway.web.process`` with
the socket and one end of a socket pair. On its own loop it only answers the UI's calls
and forwards activity (gateway.web.channel). A UI process that dies ends this server
(``wait_stopped`` says why): the daemon's supervisor reports it and starts a new one with
back-off, while the doors go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.config import WebSection
from gateway.errors import AccessGwError
from gateway.web.auth import InstallerAuth
from gateway.web.channel import GatewayEnd
from gateway.web.gateway_side import GatewaySide, WebGateway
from gateway.web.tls import tls_files

log = logging.getLogger("accessgw.web")


def allowed_hosts(cfg: WebSection) -> frozenset[str]:
    """Host names the UI answers to: loopback names, the listen address, the box's names."""
    names = {"localhost", "127.0.0.1", "[::1]", *(h.lower() for h in cfg.hosts)}
    if cfg.listen not in ("0.0.0.0", "::", ""):
        names.add(cfg.listen.lower() if ":" not in cfg.listen else f"[{cfg.listen.lower()}]")
    host = socket.gethostname().lower()
    names |= {host, f"{host}.local"}
    return frozenset(names)


class WebServer:
    """The installer UI of one gateway: started and stopped by the daemon (on its loop)."""

    def __init__(self, gateway: WebGateway, cfg: WebSection, state_dir: Path) -> None:
        self.gateway = gateway
        self.cfg = cfg
        self.state_dir = state_dir
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._listen: socket.socket | None = None
        self._task: asyncio.Task[str | None] | None = None
        self._stopping = False

    @property
    def scheme(self) -> str:
        """``https`` when TLS is on."""
        return "http" if self.cfg.tls == "off" else "https"

    def start(self) -> None:
        """Bind, make the setup code if needed, and start the UI process."""
        code = InstallerAuth(self.state_dir / "secrets").ensure_setup_code()
        self._listen = _bind(self.cfg.listen, self.cfg.port)
        self.port = int(self._listen.getsockname()[1])
        if code:
            log.warning(
                "no installer password yet: open %s://%s:%d/setup and enter the setup code %s "
                "(`accessgw setup-code` shows it again)",
                self.scheme, self.cfg.listen, self.port, code,
            )  # fmt: skip
        self._settings = self._process_settings()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="web ui")

    def _process_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "hosts": sorted(allowed_hosts(self.cfg)),
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        }
        if self.cfg.tls != "off":
            cert, key = tls_files(self.cfg, self.state_dir)
            settings |= {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        return settings

    async def _run(self) -> str | None:
        """One life of the UI process; why it ended (None when asked to stop)."""
        try:
            await self._run_once()
        except Exception as exc:
            if self._stopping:
                return None
            log.exception("the web UI failed")
            return f"{type(exc).__name__}: {exc}"
        if self._stopping:
            return None
        return f"the web UI process ended (exit status {self._exit_code()})"

    async def wait_stopped(self) -> str | None:
        """Wait until the UI ends: why it did (None when asked to stop)."""
        if self._task is None:
            return "it was never started"
        return await asyncio.shield(self._task)

    def _exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    async def _run_once(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = await asyncio.to_thread(self._spawn, theirs)  # fork/exec off the loop
        finally:
            theirs.close()
        end = GatewayEnd(GatewaySide(self.gateway), ours)
        self.gateway.activity.listen(end.offer)
        try:
            await end.run()
        finally:
            self.gateway.activity.unlisten(end.offer)
            await asyncio.to_thread(self._reap, 5.0)

    def _spawn(self, channel: socket.socket) -> subprocess.Popen[bytes]:
        assert self._listen is not None
        listen_fd, channel_fd = self._listen.fileno(), channel.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.web.process",
             "--listen-fd", str(listen_fd), "--channel-fd", str(channel_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(listen_fd, channel_fd),
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(json.dumps(self._settings).encode() + b"\n")
        process.stdin.close()
        return process

    def _reap(self, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def stop(self) -> None:
        """Stop the UI process (it ends when its channel closes) and release the port."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # _run reports any other end
                await self._task
        await asyncio.to_thread(self._reap, 5.0)
        if self._listen is not None:
            self._listen.close()
            self._listen = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AccessGwError(
            f"the web UI cannot listen on {host}:{port} ([web] port = {port}): {exc.strerror}. "
            "Is another program using that port? Change [web] port, or stop the other "
            "program; the doors work meanwhile and the UI is tried again."
        ) from exc
    sock.listen(128)
    return sock
