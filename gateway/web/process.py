"""The web UI's own process: ``python -m gateway.web.process`` started by the gateway.

It runs at a lower CPU priority (gateway.niceness) with its own interpreter, and takes on
average at most a quarter of a core (gateway.web.cpu_budget), so neither the interpreter
lock nor the CPU it takes under a flood of requests can slow the doors. The gateway binds
the listening socket and hands it over with a socket pair to talk on (gateway.web.channel);
the UI exits when that pair closes (the gateway stopped or died).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway import niceness
from gateway.logs import cleanup
from gateway.web.app import WebContext, create_app
from gateway.web.auth import InstallerAuth
from gateway.web.bridge import Bridge
from gateway.web.channel import UiEnd
from gateway.web.cpu_budget import Budgeted, CpuBudget
from gateway.web.eventlog import EventLog

log = logging.getLogger("accessgw.web")


async def serve(listen: socket.socket, channel: socket.socket, settings: dict[str, Any]) -> None:
    """Serve the UI on ``listen`` until the gateway closes ``channel``."""
    import uvicorn

    state_dir = Path(settings["state_dir"])
    events = EventLog(state_dir / "web-events.sqlite")
    ui = UiEnd(channel, events.offer)
    ctx = WebContext(
        auth=InstallerAuth(state_dir / "secrets"),
        bridge=Bridge(ui.call),
        events=events,
        hosts=frozenset(settings["hosts"]),
        secure_cookies=bool(settings.get("ssl_certfile")),
        loop=asyncio.get_running_loop(),
    )
    events.on_rows(ctx.rows_stored)
    events.start()
    ssl = {k: settings[k] for k in ("ssl_certfile", "ssl_keyfile") if settings.get(k)}

    class Quiet(uvicorn.Server):
        """uvicorn without its own signal handling: the gateway decides when the UI stops."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        Budgeted(create_app(ctx), CpuBudget()),  # a flood of requests waits, not the doors
        log_level="warning",
        limit_concurrency=64,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=2,
        **ssl,
    )
    server = Quiet(config)
    reading = asyncio.create_task(ui.run(), name="channel")
    serving = asyncio.create_task(server.serve(sockets=[listen]), name="uvicorn")
    await asyncio.wait([reading, serving], return_when=asyncio.FIRST_COMPLETED)
    ctx.close_streams()
    server.should_exit = True
    with cleanup(log, "web UI: stopping its server within 5 s", logging.WARNING):
        await asyncio.wait_for(serving, 5)
    reading.cancel()
    await asyncio.to_thread(events.stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the UI process (the gateway passes the fds and settings)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.web.process")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C at a terminal reaches the whole process group: the gateway decides when its UI
    # stops (it closes the channel, then terminates), so the UI does not die mid-reply first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = json.loads(sys.stdin.readline())
    logging.basicConfig(
        level=settings.get("log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    niceness.lower_own_priority("web UI", niceness.BACKGROUND)
    listen = socket.socket(fileno=args.listen_fd)
    channel = socket.socket(fileno=args.channel_fd)
    asyncio.run(serve(listen, channel, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
