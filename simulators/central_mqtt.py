"""The central simulator's MQTT client: MQTT 3.1.1 over TCP, what the simulator uses and
no more (CONNECT with or without a clean session, SUBSCRIBE, PUBLISH at QoS 1 both ways,
PINGREQ).

Receiving is the simulator's hot path: a drain brings thousands of check-ins a second, and
through aiomqtt and paho each cost the central about 120 us of CPU before its own work
began (paho reads a packet in four or five ``recv`` calls and writes each PUBACK with a
``send`` of its own, aiomqtt queues each message for a task to take), close to a core at
the drain's rate on a machine the gateway shares. Here what one read brings is parsed in
one go, each message is handed to the handler as it is parsed, and the PUBACKs leave in one
write after the handler took them: a message is acknowledged to the broker only once the
central has it, so with a persistent session what it had not taken when the connection
dropped comes again.

Errors are aiomqtt's :class:`aiomqtt.MqttError`, as before this client: the simulator's
handling of a lost connection (reconnect, acks sent again) did not change with it. The
gateway's own side keeps aiomqtt (:mod:`gateway.sync.link`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from aiomqtt import MqttError

Handler = Callable[[str, bytes], None]

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
MAX_PACKET = 268_435_455  # the largest remaining length MQTT can state (4 bytes of it)


def packet(first: int, body: bytes) -> bytes:
    """A whole packet: the fixed header's first byte, the remaining length, ``body``."""
    head, n = bytearray([first]), len(body)
    while True:
        n, digit = divmod(n, 128)
        head.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(head) + body


def text(value: str) -> bytes:
    """A UTF-8 string as MQTT puts it: two bytes of length first."""
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


class _Connection(asyncio.Protocol):
    """One TCP connection to the broker: parses what comes, resolves what waits for it."""

    def __init__(self, on_message: Handler) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: dict[tuple[int, int], asyncio.Future[Any]] = {}  # (type, id) -> answer
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pong = True  # the last PINGREQ was answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = MqttError(f"connection to the broker lost: {exc or 'closed'}")
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(lost)
        self.waiting.clear()
        if not self.closed.done():
            self.closed.set_exception(lost)

    def fail(self, exc: BaseException | None) -> None:
        """End the connection: with ``exc`` raised to whoever waits for it to close, or,
        with None, as the caller's own close (nothing raised)."""
        if not self.closed.done():
            if exc is None:
                self.closed.set_result(None)
            else:
                self.closed.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        acks: list[bytes] = []
        pos, end = 0, len(buf)
        failure: Exception | None = None
        try:
            while end - pos >= 2:
                length, shift, i = 0, 0, pos + 1
                while i < end and shift <= 21:
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        break
                else:
                    if shift > 21:
                        raise MqttError("malformed remaining length from the broker")
                    break  # the length itself is not all here yet
                if end - i < length:
                    break
                self._packet(buf[pos], bytes(buf[i : i + length]), acks)
                pos = i + length
        except Exception as exc:  # a bad packet, or the handler's own failure: raised to the
            failure = exc  # caller of closed(), as a failing message loop was before
        del buf[:pos]
        if acks and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(acks))  # what was taken before a failure, too
        if failure is not None:
            self.fail(failure)

    def _packet(self, first: int, body: bytes, acks: list[bytes]) -> None:
        kind = first & 0xF0
        if kind == PUBLISH:
            qos = (first >> 1) & 3
            if qos > 1:  # subscribed at QoS 1: the broker never sends more
                raise MqttError(f"QoS {qos} message from the broker")
            size = int.from_bytes(body[:2], "big")
            name = body[2 : 2 + size].decode()
            start = 2 + size + (2 if qos else 0)
            self.on_message(name, body[start:])
            if qos:
                acks.append(b"\x40\x02" + body[2 + size : start])  # PUBACK, once taken
        elif kind in (PUBACK, SUBACK):
            future = self.waiting.pop((kind, int.from_bytes(body[:2], "big")), None)
            if future is not None and not future.done():
                future.set_result(body[2:])
        elif kind == CONNACK:
            future = self.waiting.pop((CONNACK, 0), None)
            if future is not None and not future.done():
                future.set_result(body)
        elif kind == PINGRESP:
            self.pong = True


class CentralClient:
    """``async with CentralClient(...) as client``: connected (CONNACK accepted) inside."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        on_message: Handler,
        *,
        clean_session: bool = True,
        keepalive: int = 60,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.on_message = on_message
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._ids = 0
        self._pinging: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CentralClient:
        loop = asyncio.get_running_loop()
        try:  # asyncio turns Nagle off on TCP connections: small packets are not held back
            _, self._conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self.on_message), self.host,
                                       self.port), self.timeout,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise MqttError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        flags = 0x02 if self.clean_session else 0x00
        body = text("MQTT") + bytes([4, flags]) + struct.pack(">H", self.keepalive)
        try:
            connack = await self._ask((CONNACK, 0), packet(CONNECT, body + text(self.client_id)))
            if len(connack) < 2 or connack[1] != 0:
                raise MqttError(f"the broker refused the connection: {connack.hex()}")
        except BaseException:
            self._close()
            raise
        self._pinging = asyncio.create_task(self._ping())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(bytes([DISCONNECT, 0]))
        self._close()

    def _close(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.fail(None)
            if not conn.closed.cancelled():
                conn.closed.exception()  # retrieved: how it ended is no news on the way out

    def _next_id(self) -> int:
        assert self._conn is not None
        waiting = self._conn.waiting
        for _ in range(65535):
            self._ids = self._ids % 65535 + 1
            if (PUBACK, self._ids) not in waiting and (SUBACK, self._ids) not in waiting:
                return self._ids
        raise MqttError("no packet id free: 65,535 publishes await their PUBACK")

    async def _ask(self, key: tuple[int, int], data: bytes) -> bytes:
        """Send ``data`` and wait for the answer ``key`` names (MqttError if the link goes)."""
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            raise MqttError("not connected to the broker")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.waiting[key] = future
        conn.transport.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError as exc:  # as aiomqtt said it: callers handle MqttError
            raise MqttError(f"no answer from the broker within {self.timeout:g} s") from exc
        finally:
            conn.waiting.pop(key, None)

    async def subscribe(self, name: str, qos: int = 1) -> None:
        """Subscribe to ``name``; MqttError if the broker refuses it."""
        pid = self._next_id()
        body = struct.pack(">H", pid) + text(name) + bytes([qos])
        codes = await self._ask((SUBACK, pid), packet(SUBSCRIBE, body))
        if not codes or codes[0] == 0x80:
            raise MqttError(f"the broker refused the subscription to {name}")

    async def publish(self, name: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        if len(payload) + len(name) + 4 > MAX_PACKET:
            raise MqttError(f"a message of {len(payload):,} bytes is over MQTT's limit")
        pid = self._next_id()
        body = text(name) + struct.pack(">H", pid) + payload
        await self._ask((PUBACK, pid), packet(PUBLISH | 0x02, body))

    async def closed(self) -> None:
        """Wait until the connection is lost: raises MqttError then (or what the handler
        raised, if that ended it)."""
        assert self._conn is not None
        await self._conn.closed

    async def _ping(self) -> None:
        """A PINGREQ every half keepalive; a broker that did not answer the last one by the
        next is taken as gone (the connection is closed, and made again by the caller)."""
        assert self._conn is not None
        conn = self._conn
        while True:
            await asyncio.sleep(self.keepalive / 2)
            if not conn.pong:
                conn.fail(MqttError(f"no PINGRESP within {self.keepalive / 2:g} s"))
                return
            conn.pong = False
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(bytes([PINGREQ, 0]))
