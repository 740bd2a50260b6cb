"""The wire between the gateway and its web UI process: JSON lines over a socket pair.

The UI process asks (``{"id", "call", "args"}``) and the gateway answers (``{"id", "ok"}``
or ``{"id", "refused"}``); the gateway also sends each new activity item
(``{"activity": ...}``) for the UI's history and live views. On the gateway's side only
:class:`GatewayEnd` runs: it reads on the gateway's loop without blocking, calls the named
:class:`~gateway.web.gateway_side.GatewaySide` method (a fixed list), and sends activity
from a bounded buffer, so a stuck UI can never hold the doors up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from gateway.logs import cleanup
from gateway.web.gateway_side import GatewaySide, InstallerRefused

log = logging.getLogger("accessgw.web")

LINE_LIMIT = 4 * 1024 * 1024
ACTIVITY_BUFFER = 10_000
CALLS = frozenset(
    {"snapshot", "pulse", "door_test", "resync", "next_card", "enroll", "try_credential",
     "member", "what_if", "installer_event",
     # device and MQTT set-up (gateway.web.config_side)
     "config_view", "config_put", "config_remove", "config_rollback", "config_mqtt",
     "config_upload", "mqtt_test", "backup",
     # restore from the browser (gateway.backup: checked, staged, applied at the next start)
     "restore_upload_path", "restore_check", "restore_plan", "restore_confirm", "restore_cancel",
     "restore_status"}
)  # fmt: skip


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(message, default=str, separators=(",", ":")).encode() + b"\n"


class GatewayEnd:
    """The gateway's end: answers the UI's calls and sends it the activity (gateway loop)."""

    def __init__(self, side: GatewaySide, sock: socket.socket) -> None:
        self.side = side
        self.sock = sock
        self._outbox: deque[bytes] = deque(maxlen=ACTIVITY_BUFFER)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0

    def offer(self, item: Mapping[str, Any]) -> None:
        """A new activity item (on the loop; the oldest goes when the UI falls behind)."""
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        try:
            self._outbox.append(encode({"activity": item}))
        except (TypeError, ValueError):
            log.warning("activity item %s could not be sent to the web UI", item.get("kind"))
            return
        self._wake.set()

    async def run(self) -> None:
        """Serve the UI until it goes away."""
        reader, writer = await asyncio.open_connection(sock=self.sock, limit=LINE_LIMIT)
        sender = asyncio.create_task(self._send(writer), name="web ui sender")
        try:
            while line := await reader.readline():
                self._start(line, writer)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("the web UI's channel failed: %s", exc)
        finally:
            sender.cancel()
            for task in list(self._tasks):
                task.cancel()
            writer.close()
            with cleanup(log, "the web UI's channel: closing it", logging.DEBUG):
                await writer.wait_closed()

    def _start(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._answer(line, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(line)
            call, args, call_id = request["call"], list(request.get("args", [])), request["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("the web UI sent a malformed request")
            return
        if call not in CALLS:
            reply: dict[str, Any] = {"id": call_id, "refused": f"unknown call {call!r}"}
        else:
            try:
                reply = {"id": call_id, "ok": await getattr(self.side, call)(*args)}
            except InstallerRefused as exc:
                reply = {"id": call_id, "refused": str(exc)}
            except Exception as exc:  # told to the installer; the gateway goes on
                log.exception("web UI call %s failed", call)
                reply = {"id": call_id, "refused": f"{call} failed: {exc}"}
        self._outbox.appendleft(encode(reply))  # answers go before queued activity
        self._wake.set()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                writer.write(self._outbox.popleft())
                if writer.transport.get_write_buffer_size() > 1024 * 1024:
                    await writer.drain()
            await writer.drain()


class UiEnd:
    """The UI's end (in the UI process): calls into the gateway, receives its activity."""

    def __init__(self, sock: socket.socket, on_activity: Callable[[dict[str, Any]], None]) -> None:
        self.sock = sock
        self.on_activity = on_activity
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()

    async def run(self) -> None:
        """Read answers and activity until the gateway goes away."""
        reader, self._writer = await asyncio.open_connection(sock=self.sock, limit=LINE_LIMIT)
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if "activity" in message:
                    self.on_activity(message["activity"])
                    continue
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    if "refused" in message:
                        future.set_exception(InstallerRefused(message["refused"]))
                    else:
                        future.set_result(message.get("ok"))
        except (ConnectionError, ValueError) as exc:
            log.warning("the channel to the gateway failed: %s", exc)
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the gateway went away"))

    async def call(self, name: str, *args: Any) -> Any:
        """Call ``name`` on the gateway and wait for its answer."""
        if self._writer is None or self.closed.is_set():
            raise ConnectionError("not connected to the gateway")
        self._next += 1
        call_id = self._next
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            self._writer.write(encode({"id": call_id, "call": name, "args": list(args)}))
            await self._writer.drain()
            return await future
        finally:
            self._pending.pop(call_id, None)
