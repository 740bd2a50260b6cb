"""The web UI in a thread of its own, with its own event loop: it can never slow the doors.

The gateway's loop only starts and stops it; requests, templates, argon2 and SQLite reads
all run on the UI's loop (or its worker threads). What the UI needs of the gateway goes
through :class:`gateway.web.bridge.Bridge`. The listening socket is bound by the gateway
at start, so a port in use is reported at once, in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.config import WebSection
from gateway.errors import AccessGwError
from gateway.web.app import WebContext, create_app
from gateway.web.auth import InstallerAuth
from gateway.web.bridge import Bridge
from gateway.web.eventlog import EventLog
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
    """The installer UI of one gateway: started and stopped by the daemon."""

    def __init__(self, gateway: WebGateway, cfg: WebSection, state_dir: Path) -> None:
        self.gateway = gateway
        self.cfg = cfg
        self.state_dir = state_dir
        self.auth = InstallerAuth(state_dir / "secrets")
        self.events = EventLog(state_dir / "web-events.sqlite")
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.app: Any = None
        self.ctx: WebContext | None = None
        self._stopped = threading.Event()

    @property
    def scheme(self) -> str:
        """``https`` when TLS is on."""
        return "http" if self.cfg.tls == "off" else "https"

    def start(self) -> None:
        """Bind, then serve from a thread of its own (call on the gateway's loop)."""
        import uvicorn

        loop = asyncio.get_running_loop()
        code = self.auth.ensure_setup_code()
        sock = _bind(self.cfg.listen, self.cfg.port)
        self.port = int(sock.getsockname()[1])
        if code:
            log.warning(
                "no installer password yet: open %s://%s:%d/setup and enter the setup code %s "
                "(`accessgw setup-code` shows it again)",
                self.scheme, self.cfg.listen, self.port, code,
            )  # fmt: skip
        self.gateway.activity.listen(self.events.offer)
        ctx = WebContext(
            auth=self.auth,
            bridge=Bridge(GatewaySide(self.gateway), loop),
            events=self.events,
            hosts=allowed_hosts(self.cfg),
            secure_cookies=self.cfg.tls != "off",
        )
        self.ctx = ctx
        self.events.on_rows(ctx.rows_stored)
        self.events.start()
        ssl: dict[str, Any] = {}
        if self.cfg.tls != "off":
            cert, key = tls_files(self.cfg, self.state_dir)
            ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        self.app = create_app(ctx)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            limit_concurrency=64,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
            lifespan="on",
            **ssl,
        )
        self._server = _QuietServer(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="web-ui", daemon=True
        )
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException:  # SystemExit from uvicorn included: the doors go on regardless
            log.exception("the web UI stopped; the gateway goes on without it")
        finally:
            sock.close()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop serving and store the history's queue (call on the gateway's loop)."""
        if self.ctx is not None:
            self.ctx.close_streams()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        self.gateway.activity.unlisten(self.events.offer)
        await asyncio.to_thread(self.events.stop)


class _QuietServer:
    """uvicorn's server without its signal handling: the daemon owns SIGTERM/SIGINT."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Quiet(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AccessGwError(
            f"the web UI cannot listen on {host}:{port}: {exc.strerror}. Is another program "
            "using that port? Change web.port, or stop the other program."
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
