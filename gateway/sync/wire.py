"""The MQTT wire in a process of its own: the link, its signing and the outbox's pipeline.

A gateway back from a day offline drains its backlog as fast as the broker acknowledges:
thousands of check-ins a second, each encoded, signed (Ed25519) and handed to paho, and as
many PUBACKs read back. In the doors' process that work took turns of several milliseconds
on their loop, and even on a thread of its own it held the interpreter's lock as long:
every tap waited behind it (loop lag p99 14-18 ms, tap to relay p99 20-33 ms under the
bench's load). In a process of its own it runs on another core, and on one core the
kernel's scheduler, not the GIL, gives a waking door its turn.

The wire process (:mod:`gateway.sync.wire_child`) runs the :class:`~gateway.sync.link.Link`
and the :class:`~gateway.sync.outbox.Outbox`, and verifies the central's acks. Everything
that changes the gateway's state stays in the doors' process: the journal (the outbox asks
for records and reports acks), peers' check-ins, entitlements, commands. What comes in is
checked there first where that is cheap, so that a flood of junk stays out of the doors'
process: peers' messages are verified (and trusted only with the key the current set
has), and the central system's messages that do not open are refused with the gateway's
own check, reason and log line (what opens crosses as it came and is verified again).
The two talk over a socket pair with a :class:`Channel`: calls that get an answer and
plain notices.

When the wire process dies, :meth:`WireEnd.run` raises and the sync is restarted by the
supervisor with back-off; when the doors' process dies, the wire process reads the end of
the channel and leaves (saying ``offline`` first).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import pickle
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.config import Config
from gateway.errors import LinkError
from gateway.identity import Identity
from gateway.logs import cleanup

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 2**20  # a 16 MiB delta with room to spare; more is a bug, not a message
BEHIND = 32 * 2**20  # bytes queued to the other side before inbound messages are dropped

Call = Callable[..., Awaitable[Any]]
Notice = Callable[..., None]


class ChannelClosed(LinkError):
    """The other process is gone (or going)."""


class Channel:
    """Length-prefixed pickled frames over a stream, both ways.

    ``call(name, *args)`` waits for the other side's answer (its ``calls[name]``); a failure
    there comes back as :class:`LinkError` with its text. ``notify(name, *args)`` runs the
    other side's ``notices[name]`` in the order sent, with no answer. Both ends are this
    gateway's own processes: the frames carry nothing from outside that was not already
    bounded by the link.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        calls: Mapping[str, Call],
        notices: Mapping[str, Notice],
        name: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._calls = calls
        self._notices = notices
        self.name = name
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self.closed = False

    def behind(self) -> bool:
        """Whether the other side has fallen far behind reading what this side sent."""
        return self._writer.transport.get_write_buffer_size() > BEHIND

    def notify(self, name: str, *args: Any) -> None:
        """Run ``name(*args)`` on the other side, in order; no answer."""
        self._send(("notice", 0, name, args))

    async def drain(self) -> None:
        """Wait until what was sent has left (before this process exits)."""
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def call(self, name: str, *args: Any) -> Any:
        """Run ``name(*args)`` on the other side and return its result."""
        return await self.request(name, *args)

    def request(self, name: str, *args: Any) -> asyncio.Future[Any]:
        """:meth:`call`, sent now (in order with the notices around it): the future holds
        the other side's answer (:class:`ChannelClosed` once closed)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed:
            waiter.set_exception(ChannelClosed(f"{self.name}: closed"))
            return waiter
        self._next_id += 1
        ident = self._next_id
        self._waiting[ident] = waiter
        waiter.add_done_callback(lambda _: self._waiting.pop(ident, None))
        self._send(("call", ident, name, args))
        return waiter

    def _send(self, frame: tuple[str, int, str, Any]) -> None:
        if self.closed:
            return
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(len(data).to_bytes(4, "big") + data)

    async def run(self) -> None:
        """Read and act on frames until the other side closes; then fail what waits."""
        try:
            while True:
                try:
                    head = await self._reader.readexactly(4)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                size = int.from_bytes(head, "big")
                if size > MAX_FRAME:
                    raise LinkError(f"{self.name}: a frame of {size} bytes (a bug)")
                kind, ident, name, args = pickle.loads(await self._reader.readexactly(size))
                if kind == "notice":
                    try:
                        self._notices[name](*args)
                    except Exception:  # one notice's bug must not end the channel
                        log.exception("%s: notice %s failed", self.name, name)
                elif kind == "call":
                    # called now, in order with the notices around it (a plain function
                    # returning a future acts at once; a coroutine function in its task)
                    task = asyncio.create_task(self._answer(ident, name, self._start(name, args)))
                    self._answering.add(task)
                    task.add_done_callback(self._answering.discard)
                else:
                    waiter = self._waiting.get(ident)
                    if waiter is not None and not waiter.done():
                        if kind == "ok":
                            waiter.set_result(args)
                        else:
                            waiter.set_exception(LinkError(str(args)))
        finally:
            self.close()

    def _start(self, name: str, args: tuple[Any, ...]) -> Awaitable[Any]:
        try:
            return self._calls[name](*args)
        except Exception as exc:  # answered as the coroutine's failure would be
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _answer(self, ident: int, name: str, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            if not isinstance(exc, LinkError):
                log.exception("%s: call %s failed", self.name, name)
            self._send(("error", ident, name, str(exc) or type(exc).__name__))
        else:
            self._send(("ok", ident, name, result))

    def close(self) -> None:
        """Close the stream; whatever waits for an answer fails with ChannelClosed."""
        if self.closed:
            return
        self.closed = True
        for task in self._answering:
            task.cancel()
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ChannelClosed(f"{self.name}: the other side is gone"))
        with cleanup(log, f"channel to {self.name}: closing it", logging.DEBUG):
            self._writer.close()


async def _uncancellable(work: Awaitable[Any]) -> None:
    """Wait for ``work`` to the end even when cancelled meanwhile (cancelled twice while
    stopping, the wire process would be left running): ``work`` is bounded in time."""
    future = asyncio.ensure_future(work)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)
    future.result()


# --- the doors' side --------------------------------------------------------------------


@dataclass
class LinkState:
    """The link as the wire process last reported it."""

    connected: bool = False
    last_error: str | None = None
    connections: int = 0
    client_id: str = ""
    acked_upto: int = 0
    published_upto: int = 0
    in_flight: int = 0


class LinkMirror:
    """The link as the doors' process sees it: its state, and publishing through the wire.

    What reads ``connected`` (every check-in's ``offline``) reads the last report, at most a
    tenth of a second old (the wire process reports each change as it sees it).
    """

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.state = LinkState()
        self.channel: Channel | None = None

    @property
    def connected(self) -> bool:
        return self.channel is not None and self.state.connected

    @property
    def last_error(self) -> LinkError | None:
        error = self.state.last_error
        return None if error is None else LinkError(error)

    @property
    def connections(self) -> int:
        return self.state.connections

    @property
    def client_id(self) -> str:
        return self.state.client_id

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish through the wire process (signed there); LinkError as the link's."""
        channel = self.channel
        if channel is None or not self.connected:
            raise LinkError(f"not connected to the MQTT broker {self.broker}: {topic} not sent")
        await channel.call("publish", topic, payload, qos, retain)


class OutboxMirror:
    """The outbox as the doors' process sees it (the status and tests read it)."""

    def __init__(self, link: LinkMirror) -> None:
        self._link = link

    @property
    def acked_upto(self) -> int:
        return self._link.state.acked_upto

    @property
    def published_upto(self) -> int:
        return self._link.state.published_upto

    @property
    def in_flight(self) -> int:
        return self._link.state.in_flight

    def notify(self) -> None:
        """A journal record became final: wake the outbox."""
        channel = self._link.channel
        if channel is not None:
            channel.notify("notify")


class WireEnd:
    """Starts the wire process and serves its calls, for one life of the sync."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        *,
        calls: Mapping[str, Call],
        notices: Mapping[str, Notice],
    ) -> None:
        self.config = config
        self.identity = identity
        self.calls = calls
        self.notices: dict[str, Notice] = {**notices, "state": self._state, "failed": self._failed}
        self._failure: str | None = None  # why the wire process said it ends
        self.link = LinkMirror(f"{config.mqtt.host}:{config.mqtt.port}")
        self.outbox = OutboxMirror(self.link)
        self.process: subprocess.Popen[bytes] | None = None
        # the registered gateways' keys (rules.gateways): peers are verified in the wire
        self.peer_keys: Callable[[], dict[str, str] | None] = lambda: None
        self._told_keys: dict[str, str] | None = None

    def peers_changed(self) -> None:
        """A new entitlement set: tell the wire process its peers' keys if they changed."""
        keys = self.peer_keys()
        channel = self.link.channel
        if channel is not None and keys is not None and keys != self._told_keys:
            channel.notify("peer_keys", keys)
            self._told_keys = keys

    def _state(self, state: dict[str, Any]) -> None:
        self.link.state = LinkState(**state)

    def _failed(self, why: str) -> None:
        self._failure = why

    async def run(self) -> None:
        """Run one wire process until cancelled; LinkError when it ends by itself."""
        ours, theirs = socket.socketpair()
        try:
            try:
                self.process = await asyncio.to_thread(self._spawn, theirs)  # off the loop
            finally:
                theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            raise
        channel = Channel(
            reader, writer, calls=self.calls, notices=self.notices, name="MQTT wire process"
        )
        self.link.channel = channel
        self._failure = None
        self.peers_changed()  # the keys of the set as it is at the start
        try:
            await channel.run()
            code = await asyncio.to_thread(self._reap, 5.0)
            why = f": {self._failure}" if self._failure else ""
            raise LinkError(f"the MQTT wire process ended (exit status {code}){why}")
        finally:
            self.link.channel = None
            self._told_keys = None
            self.link.state = LinkState(**{**vars(self.link.state), "connected": False})
            channel.close()  # the wire process reads the end, says offline and leaves
            await _uncancellable(asyncio.to_thread(self._reap, 5.0))

    def _settings(self) -> dict[str, Any]:
        cfg = self.config
        seed = self.identity.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        return {
            "site": self.identity.site,
            "gw": self.identity.gw,
            "seed": base64.b64encode(seed).decode("ascii"),  # on the pipe, never in argv
            "central_key": cfg.central.public_key,
            "mqtt": cfg.mqtt.model_dump(mode="json"),
            "log": {**cfg.log.model_dump(mode="json"), "level": level},
        }

    def _spawn(self, channel: socket.socket) -> subprocess.Popen[bytes]:
        fd = channel.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.sync.wire_child", "--channel-fd", str(fd)],
            stdin=subprocess.PIPE,
            pass_fds=(fd,),
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(self._settings()).encode() + b"\n")
        process.stdin.close()
        return process

    def _reap(self, timeout: float) -> int | None:
        process = self.process
        if process is None:
            return None
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the MQTT wire process did not stop within %g s: terminated", timeout)
            process.kill()
            return process.wait()
