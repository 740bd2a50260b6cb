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
        self._ended: asyncio.Future[str | None] | None = None

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
        self._ended = loop.create_future()
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
            target=self._serve, args=(sock, loop), name="web-ui", daemon=True
        )
        self._thread.start()

    def _serve(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        cause: str | None = None
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
            if not self._server.should_exit:
                cause = "its server ended by itself"
        except BaseException as exc:  # SystemExit from uvicorn included: the doors go on
            log.exception("the web UI stopped; the gateway goes on without it")
            cause = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()
            self._stopped.set()
            with contextlib.suppress(RuntimeError):  # the gateway's loop is closed already
                loop.call_soon_threadsafe(self._end, cause)

    def _end(self, cause: str | None) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(cause)

    async def wait_stopped(self) -> str | None:
        """Wait until the UI's thread ends: why it did (None when asked to stop)."""
        if self._ended is None:
            return "it was never started"
        return await asyncio.shield(self._ended)

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
            f"the web UI cannot listen on {host}:{port} ([web] port = {port}): {exc.strerror}. "
            "Is another program using that port? Change [web] port, or stop the other "
            "program; the doors work meanwhile and the UI is tried again."
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
