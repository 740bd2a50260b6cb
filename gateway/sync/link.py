"""The MQTT link to the broker (PROTOCOL.md): connect, stay connected, subscribe, publish.

One :class:`Link` per gateway. ``run()`` connects (MQTT 5, or 3.1.1 by config), with TLS and a
client certificate or username/password, as a persistent session with a stable client id and a
retained ``{"state": "offline"}`` will on ``gw/{gw}/status``; it subscribes to the gateway's own
site only, publishes the retained status, tells the ``on_connect`` handlers, and passes every
inbound message to the ``on_message`` handler. When the connection fails it logs one clear line
saying why (refused, TLS/certificate, DNS, timeout...) and tries again with capped exponential
back-off and jitter. aiomqtt 2.x does not reconnect by itself: this loop is the reconnection.

The link never blocks a door decision: :meth:`Link.publish` raises :class:`LinkError` at once
when there is no connection, and nothing on the decision path waits for the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttSection
from gateway.errors import BadMessage, LinkError
from gateway.logs import cleanup
from gateway.state_dir import StateDir
from gateway.supervisor import describe
from gateway.sync.envelopes import MAX_COMMAND, MAX_PAYLOAD
from gateway.sync.status import encode
from gateway.sync.topics import gw_topic, max_bytes, topic

log = logging.getLogger(__name__)

# Brokers drop bigger packets for us (MQTT 5): the 16 MiB limit plus room for topic and
# properties, so anything just over the limit still arrives and is reported as too large.
MAX_PACKET = MAX_PAYLOAD + MAX_COMMAND
STABLE_AFTER = 10.0  # a connection that lived this long resets the back-off
SOCKET_BULK = 64 * 1024  # bytes the link reads from, and joins to write to, the broker at once

# A handler may return a hold: the message is acknowledged to the broker (PUBACK) only once
# it finishes, so that what the gateway must keep is kept before the broker forgets it.
Hold = Awaitable[object]
MessageHandler = Callable[[str, bytes], Awaitable[object]]  # a hold, or anything else
ConnectHandler = Callable[[], Awaitable[None]]
BadMessageHandler = Callable[[str, str], Awaitable[None]]


def subscriptions(site: str, gw: str) -> list[str]:
    """The topic filters a gateway subscribes to: its own site only (PROTOCOL.md, Topics)."""
    return [
        topic(site, "entitlements", "delta"),
        topic(site, "time"),
        *(gw_topic(site, gw, kind) for kind in ("delta", "snapshot", "cmd", "checkin/ack")),
        topic(site, "gw", "+", "checkin"),
        topic(site, "gw", "+", "occupancy"),
    ]


class _ReadBuffered:
    """paho's socket, read 64 KiB at a time.

    paho reads a packet in at least three ``recv`` calls (its type, each byte of its
    length, its body), each a system call, and one more that finds nothing: a drain's
    thousands of PUBACKs a second cost the wire process that many system calls. Here one
    ``recv`` takes what the kernel has and paho's small reads are served from it.
    :meth:`pending` says what is left: aiomqtt reads again while it is not 0 (as for TLS),
    so no packet waits in the buffer for the socket to become readable again."""

    __slots__ = ("_at", "_data", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._data = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        at, data = self._at, self._data
        if at >= len(data):
            data = self._sock.recv(SOCKET_BULK)  # BlockingIOError when there is nothing: paho waits
            if len(data) <= size:
                return data
            self._data, at = data, 0
        part = data[at : at + size]
        self._at = at + len(part)
        return part

    def pending(self) -> int:
        return len(self._data) - self._at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _coalesce_writes(client: paho.Client) -> None:
    """Have paho send what it has queued in as few ``send`` calls as the socket takes.

    paho writes each packet with a ``send`` of its own: in a drain, a hundred PUBLISHes a
    turn of the loop, each a system call that also wakes the broker (17,078 sends in 4 s
    of a drain, 1,668 joined). Before paho writes, runs of queued packets are joined into
    one each (up to 64 KiB), which paho then writes as any packet, a partial write
    included. Only packets paho does nothing for once written are joined: a QoS 0 PUBLISH
    (its publish is then reported done) and a DISCONNECT stay packets of their own, in
    their place."""
    write = client._packet_write

    def joined_then_written() -> MQTTErrorCode:
        out = client._out_packet
        if len(out) > 1:
            queued = []
            # popleft and extendleft only: paho's connect thread may append meanwhile
            with contextlib.suppress(IndexError):
                while True:
                    queued.append(out.popleft())
            out.extendleft(reversed(_joined_runs(queued)))
        return write()

    client._packet_write = joined_then_written  # type: ignore[method-assign]


def _joined_runs(packets: list[Any]) -> list[Any]:
    joined: list[Any] = []
    run: list[Any] = []
    size = 0

    def close_run() -> None:
        nonlocal size
        if len(run) == 1:
            joined.append(run[0])
        elif run:
            data = b"".join(p["packet"][p["pos"] :] for p in run)
            head = run[0]  # a plain packet: nothing is done once it is written
            joined.append({**head, "pos": 0, "to_process": len(data), "packet": data, "info": None})
        run.clear()
        size = 0

    for packet in packets:
        kind = packet["command"] & 0xF0
        if (kind == paho.PUBLISH and packet["qos"] == 0) or kind == paho.DISCONNECT:
            close_run()
            joined.append(packet)
            continue
        if size >= SOCKET_BULK:
            close_run()
        run.append(packet)
        size += packet["to_process"]
    close_run()
    return joined


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the PUBACK reason code so a refused publish is not lost.

    aiomqtt 2.x resolves ``publish`` on any PUBACK; with MQTT 5 Mosquitto answers a publish
    that its ACL denies with reason 0x87 (Not authorized), which the outbox must see.

    :meth:`publish_acked` waits on a future of its own, resolved with the reason code: the
    outbox drains thousands of check-ins a second on the doors' event loop, and aiomqtt's
    way (an Event, a task for ``wait_for``, and two walks over every pending call to check
    a message id and count them) cost more than the publish itself. Waiters give up at
    their deadline by one timer for them all (:meth:`_expire`), not a timer each: a drain
    made and cancelled one ``asyncio.timeout`` a check-in, a twentieth of the wire
    process's time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _coalesce_writes(self._client)
        self.puback: dict[int, ReasonCode] = {}  # acks that came before anyone waited
        # Publishes that gave up on their PUBACK (deadline, connection lost, cancelled): a
        # PUBACK that comes for one later is dropped, not kept as "came before anyone
        # waited", where the next publish given the same message id (they wrap at 65,535)
        # would take it for its own. Bounded by the ids there are.
        self._abandoned: set[int] = set()
        self._acked: dict[int, asyncio.Future[ReasonCode]] = {}  # mid -> its waiter
        self._due: dict[int, float] = {}  # mid -> when its waiter gives up (loop time)
        self._expiry: asyncio.TimerHandle | None = None  # at the earliest deadline, or None
        self.on_lost: Callable[[], None] | None = None  # the connection is gone (see Link)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if type(sock) is socket.socket:  # plain TCP; TLS reads from its own buffer already
            sock = client._sock = _ReadBuffered(sock)
        super()._on_socket_open(client, userdata, sock)

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        # The first sign of a lost connection: the link says so before aiomqtt has wound
        # the session down (a few turns of the loop), so no check-in in between says online.
        if self.on_lost is not None:
            self.on_lost()
        # Publishes waiting for their PUBACK never get one now (the next connection is
        # another client): they fail at once, not at their deadline (``ack_timeout``, 30 s).
        # Each holds one of the outbox's in-flight slots, and after a quick reconnect the
        # outbox would wait for those slots before publishing anything again.
        self._fail_waiters()
        super()._on_disconnect(*args, **kwargs)

    def _fail_waiters(self) -> None:
        waiters, self._acked = self._acked, {}
        self._due.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for mid, waiter in waiters.items():
            self._abandoned.add(mid)  # a session resumed may yet bring its PUBACK
            if not waiter.done():
                waiter.set_exception(aiomqtt.MqttError("connection lost before the PUBACK"))

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        waiter = self._acked.pop(mid, None)
        if waiter is None:
            if mid in self._abandoned:
                self._abandoned.discard(mid)  # too late: its publish gave up on it
            else:
                self.puback[mid] = reason_code
        elif not waiter.done():
            waiter.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(
        self, topic: str, payload: bytes, qos: int, retain: bool, wait_s: float
    ) -> ReasonCode | None:
        """Publish and wait for the broker's acknowledgement; its reason code (MQTT 5)."""
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        mid = info.mid
        # The id is this publish's now: a PUBACK still owed to an earlier one that gave up
        # on it cannot be told apart from this one's (MQTT has only the id).
        self._abandoned.discard(mid)
        if qos == 0:
            self.puback.pop(mid, None)  # paho calls on_publish once a QoS 0 one is sent
            return None
        if mid in self.puback:  # acknowledged already
            return self.puback.pop(mid)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[ReasonCode] = loop.create_future()
        self._acked[mid] = waiter
        self._due[mid] = due = loop.time() + wait_s
        expiry = self._expiry
        if expiry is None or due < expiry.when():
            if expiry is not None:
                expiry.cancel()
            self._expiry = loop.call_at(due, self._expire)
        try:
            return await waiter
        finally:
            self._due.pop(mid, None)
            self._acked.pop(mid, None)
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                self._abandoned.add(mid)  # gave up: its PUBACK, if it comes, is dropped

    def _expire(self) -> None:
        """Fail the waiters whose deadline has come; the timer again for the next one."""
        loop = asyncio.get_running_loop()
        self._expiry = None
        now = loop.time() + 0.001  # a timer may run a hair before its time
        soonest: float | None = None
        for mid, due in list(self._due.items()):
            if due <= now:
                del self._due[mid]
                waiter = self._acked.pop(mid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(aiomqtt.MqttError("Operation timed out"))
            elif soonest is None or due < soonest:
                soonest = due
        if soonest is not None:
            self._expiry = loop.call_at(soonest, self._expire)


class _PahoLog(logging.Handler):
    """Forwards paho's log lines and remembers its last socket error.

    A TLS connection that the broker refuses (no or unknown client certificate) never gets a
    CONNACK: paho only logs the TLS alert and aiomqtt times out. Seeing that line lets the
    link stop waiting at once and say what is wrong.
    """

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self.on_error = on_error

    def emit(self, record: logging.LogRecord) -> None:
        log.log(min(record.levelno, logging.DEBUG), "paho: %s", record.getMessage())
        if record.levelno >= logging.ERROR:
            self.on_error(record.getMessage())


class _StaleSocketFilter(logging.Filter):
    """Turns asyncio's reports of paho's stale socket callbacks into one debug line.

    When a TLS connection dies during the handshake (e.g. the broker wants a client
    certificate), paho has already asked, from its connect thread, to watch a socket that is
    closed by the time the loop runs the request: asyncio then logs a storm of "Invalid file
    descriptor: -1" / "not registered" errors. They are harmless; the link reports the cause.
    """

    CALLS = ("add_writer", "add_reader", "remove_writer", "remove_reader")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if (
            message.startswith("Exception in callback")
            and any(call in message for call in self.CALLS)
            and isinstance(exc, ValueError | KeyError | OSError)
        ):
            log.debug("MQTT: stale socket callback ignored: %s", exc)
            return False
        return True


_STALE_SOCKETS = _StaleSocketFilter()


class Link:
    """The gateway's connection to the broker, kept up until ``run()`` is cancelled."""

    def __init__(
        self,
        cfg: MqttSection,
        site: str,
        gw: str,
        *,
        status_payload: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]],
        state_dir: StateDir | None = None,
        signer: Callable[[str, bytes], bytes] | None = None,
        connect_timeout: float = 10.0,
        retry_base: float = 0.5,
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.gw = gw
        self.status_payload = status_payload
        self.state_dir = state_dir  # accepted for the agreed API; the link keeps no state
        self.signer = signer  # signs what the gateway publishes (gateway.identity)
        self.connect_timeout = connect_timeout
        self.retry_base = retry_base
        # Stable, and unique even when sites share gateway ids. Where the broker knows the
        # gateway by its certificate (or username), the id is that identity: the shipped
        # Mosquitto config sets it so whatever we send (use_username_as_clientid), so that
        # no other certificate can take this gateway's session over.
        self.default_client_id = f"{site}.{gw}"
        self.client_id = self.default_client_id
        self.status_topic = gw_topic(site, gw, "status")
        self.cmd_topic = gw_topic(site, gw, "cmd")
        self.last_error: LinkError | None = None
        self.connections = 0  # sessions that got as far as connected (metrics: reconnects)
        self._message_handlers: list[MessageHandler] = []
        self._connect_handlers: list[ConnectHandler] = []
        self._bad_handlers: list[BadMessageHandler] = []
        self._client: _Client | None = None
        self._connected = asyncio.Event()
        self._socket_error: str | None = None
        self._socket_failed: asyncio.Event | None = None
        self.on_change: Callable[[], None] | None = None  # connected or not, as it changes

    # -- handlers -------------------------------------------------------------------------

    def on_message(self, handler: MessageHandler) -> None:
        """Call ``handler(topic, payload)`` for every inbound message within the size limits.

        A handler may raise :class:`BadMessage`: the link then tells the bad-message handlers.
        Messages on the gateway's own ``checkin``/``occupancy`` topics come back too.

        A handler may return a *hold* (an awaitable): the message's PUBACK then waits until
        it finishes (acks leave in the order the messages came, as MQTT asks). A hold that
        fails ends the connection unacknowledged: the broker sends the message again in the
        next one (the session is persistent). Every other message is acknowledged as soon
        as its handlers returned.
        """
        self._message_handlers.append(handler)

    def on_connect(self, handler: ConnectHandler) -> None:
        """Call ``handler()`` after every (re)connect, once subscribed and status published.

        Handlers run one after the other, alongside message delivery (so they may wait for
        answers), and are cancelled when the connection drops.
        """
        self._connect_handlers.append(handler)

    def on_bad_message(self, handler: BadMessageHandler) -> None:
        """Call ``handler(topic, reason)`` for every inbound message that was dropped."""
        self._bad_handlers.append(handler)

    # -- state ----------------------------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        if up:
            self._connected.set()
        else:
            self._connected.clear()
        if self.on_change is not None:  # the wire process tells the gateway at once
            self.on_change()

    @property
    def connected(self) -> bool:
        """True while connected and subscribed, and the broker has not gone quiet past the
        keepalive (Clarifications, Status: a broker that hangs with the TCP connection open
        counts as no link once the keepalive has run out; check-ins then say ``offline``)."""
        return self._connected.is_set() and not self._keepalive_lapsed()

    def _keepalive_lapsed(self) -> bool:
        """Whether a PINGREQ has gone unanswered for half a keepalive: paho sends one after a
        keepalive of silence, so the broker has then said nothing for 1.5 keepalives (the
        MQTT server's own rule). paho would close the socket only a keepalive after its
        ping; until then decisions must not claim a link that is not there."""
        client = self._client
        if client is None:
            return False
        pinged_at = client._client._ping_t  # paho: when the unanswered PINGREQ left (0: none)
        return bool(pinged_at) and paho.time_func() - pinged_at > self.cfg.keepalive / 2

    async def wait_connected(self) -> None:
        """Wait until the link is connected and subscribed."""
        await self._connected.wait()

    @property
    def broker(self) -> str:
        """``host:port`` for messages."""
        return f"{self.cfg.host}:{self.cfg.port}"

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        signed: bool = False,
    ) -> None:
        """Publish ``payload`` on the full ``topic``; return once the broker acknowledged it.

        ``signed``: the payload is a journal record signed with this gateway's key when it
        became final (gateway.journal.RecordSigner), to go out as it is.
        Raises LinkError at once when not connected, when the broker refuses the message
        (e.g. its ACL), or when no acknowledgement came within ``ack_timeout``.
        """
        client = self._client
        if client is None or not self.connected:
            raise LinkError(f"not connected to the MQTT broker {self.broker}: {topic} not sent")
        if self.signer is not None and not signed:  # every publisher passes through here
            payload = self.signer(topic, payload)
        try:
            code = await client.publish_acked(topic, payload, qos, retain, self.cfg.ack_timeout)
        except aiomqtt.MqttError as exc:
            raise LinkError(f"publish on {topic} to {self.broker} failed: {exc}") from None
        if code is not None and code.is_failure:
            raise LinkError(
                f"the broker {self.broker} refused the message on {topic}: {code} "
                f"(does its ACL let this gateway publish under acs/v1/{self.site}/gw/{self.gw}/?)"
            )

    # -- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with back-off, until cancelled."""
        logging.getLogger("asyncio").addFilter(_STALE_SOCKETS)  # a set: added once
        attempt = 0
        last_said = ""
        while True:
            started = time.monotonic()
            connections = self.connections
            try:
                await self._session()
            except LinkError as exc:
                self.last_error = exc
            except Exception as exc:  # a bug must not end the link: log it, connect again
                self.last_error = LinkError(f"MQTT link to {self.broker} failed: {exc!r}")
                log.exception("MQTT: unexpected error in the link to %s", self.broker)
            finally:
                self._set_connected(False)
                self._client = None
            if time.monotonic() - started >= STABLE_AFTER:
                attempt = 0
            delay = self._backoff(attempt)
            attempt += 1
            # one line per retry; a warning only when the link's state or its reason changed
            if self.connections != connections:
                last_said = ""  # it was up: going down is news
            said = str(self.last_error)
            level = logging.DEBUG if said == last_said else logging.WARNING
            log.log(level, "%s; next connection attempt in %.1f s", said, delay)
            last_said = said
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Capped exponential back-off with jitter (half to full of the step)."""
        step = min(float(self.cfg.reconnect_max), self.retry_base * 2.0 ** min(attempt, 30))
        return step * random.uniform(0.5, 1.0)

    async def _session(self) -> None:
        """One connection: connect, subscribe, announce, then pump messages until it drops."""
        client = await self._connect()
        no_delay(client)
        acks: asyncio.Queue[tuple[int, int, list[Hold]]] = asyncio.Queue()
        try:
            await self._subscribe(client)
            self._client = client
            client.on_lost = lambda: self._set_connected(False)
            self._set_connected(True)
            self.last_error = None
            self.connections += 1
            log.info("MQTT: connected to %s as %s", self.broker, self.client_id)
            await self._announce()
            await _until_one_fails(
                self._run_connect_handlers(),
                self._pump(client, acks),
                self._acknowledge(client, acks),
            )
        except aiomqtt.MqttError as exc:
            raise LinkError(explain_drop(self.broker, exc)) from None
        finally:
            self._set_connected(False)
            await self._close(client)

    async def _close(self, client: _Client) -> None:
        """Leave cleanly when stopping: say offline first (a clean DISCONNECT sends no will)."""
        if client._disconnected.done():  # the connection is already gone
            return
        with cleanup(log, "saying offline before leaving (the broker's will says it then)"):
            offline = b'{"state":"offline"}'
            await asyncio.wait_for(
                client.publish_acked(self.status_topic, offline, 1, True, 1.0), 1.5
            )
        with cleanup(log, "MQTT: disconnecting", logging.DEBUG):
            await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)

    async def _connect(self) -> _Client:
        """Open the connection or raise LinkError saying why not."""
        await self._resolve()
        identity = await asyncio.to_thread(broker_identity, self.cfg)
        self.client_id = identity or self.default_client_id
        kwargs = self._client_kwargs()
        kwargs.update(await asyncio.to_thread(self._credentials))
        self._socket_error = None
        self._socket_failed = asyncio.Event()
        kwargs["logger"] = self._paho_logger(asyncio.get_running_loop())
        client = _Client(self.cfg.host, self.cfg.port, **kwargs)
        client._client.manual_ack_set(True)  # PUBACK once handled (:meth:`_acknowledge`)
        # aiomqtt warns on every publish beyond 10 awaiting PUBACK; the outbox keeps up to
        # ``inflight`` of them on purpose
        client.pending_calls_threshold = self.cfg.inflight + 10
        enter = asyncio.ensure_future(client.__aenter__())
        failed = asyncio.ensure_future(self._socket_failed.wait())
        try:
            await asyncio.wait({enter, failed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # stopping while connecting: leave no connection behind
            enter.cancel()
            if enter.done() and not enter.cancelled() and enter.exception() is None:
                client._client.disconnect()
            raise
        finally:
            failed.cancel()
        if not enter.done():  # paho saw a fatal socket error before any CONNACK
            enter.cancel()
            with contextlib.suppress(BaseException):
                await enter
            with cleanup(log, "MQTT: disconnecting after a failed connect", logging.DEBUG):
                client._client.disconnect()
            raise LinkError(explain_connect_failure(self, None, self._socket_error))
        try:
            enter.result()
        except aiomqtt.MqttError as exc:
            raise LinkError(explain_connect_failure(self, exc, self._socket_error)) from None
        return client

    async def _resolve(self) -> None:
        """Resolve the broker's name first, so that a DNS failure is reported as one."""
        loop = asyncio.get_running_loop()
        try:
            await loop.getaddrinfo(self.cfg.host, self.cfg.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise LinkError(
                f"cannot resolve the MQTT broker host {self.cfg.host!r}: {exc.strerror}. "
                "Check mqtt.host and this gateway's DNS settings."
            ) from None

    def _client_kwargs(self) -> dict[str, Any]:
        """aiomqtt.Client arguments: protocol, persistent session, will, limits."""
        v5 = self.cfg.protocol == "5"
        kwargs: dict[str, Any] = {
            "identifier": self.client_id,
            "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            "will": aiomqtt.Will(self.status_topic, b'{"state":"offline"}', qos=1, retain=True),
            "keepalive": self.cfg.keepalive,
            "timeout": self.connect_timeout,
            "max_inflight_messages": self.cfg.inflight,
        }
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry
            props.MaximumPacketSize = MAX_PACKET
            kwargs.update(clean_start=False, properties=props)
        else:
            kwargs["clean_session"] = False
        return kwargs

    def _credentials(self) -> dict[str, Any]:
        """Password and TLS context, read from disk at every attempt (in a worker thread)."""
        return broker_credentials(self.cfg)

    def _paho_logger(self, loop: asyncio.AbstractEventLoop) -> logging.Logger:
        """A private logger for this connection's paho client (not in the global registry).

        paho logs every packet at debug level; those lines are only made when the link's
        own log is at debug, since making them costs more than sending the packet.
        """
        level = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING
        paho_log = logging.Logger(f"{__name__}.paho", level)
        paho_log.propagate = False

        def on_error(message: str) -> None:  # paho may log from the connect thread
            loop.call_soon_threadsafe(self._socket_failed_cb, message)

        paho_log.addHandler(_PahoLog(on_error))
        return paho_log

    def _socket_failed_cb(self, message: str) -> None:
        self._socket_error = message
        if self._socket_failed is not None:
            self._socket_failed.set()

    async def _subscribe(self, client: _Client) -> None:
        """Subscribe to the site's topics (again after every reconnect).

        With MQTT 5 the broker is asked not to send our own publications back (no local):
        the ``gw/+/checkin`` filter would otherwise echo every check-in of ours, doubling
        the traffic of a backlog drain. With 3.1.1 they come back and are ignored.
        """
        v5 = self.cfg.protocol == "5"
        for topic_filter in subscriptions(self.site, self.gw):
            if v5:
                options = SubscribeOptions(qos=1, noLocal=True)
                granted = await client.subscribe(topic_filter, options=options)
            else:
                granted = await client.subscribe(topic_filter, qos=1)
            code = granted[0] if granted else 0x80
            if (code.value if isinstance(code, ReasonCode) else code) >= 0x80:
                raise LinkError(
                    f"the broker {self.broker} refused the subscription to {topic_filter}: "
                    f"{code}. Check that its ACL lets this gateway read its site"
                )

    async def _announce(self) -> None:
        """Replace the retained will (offline) with the current status."""
        try:
            status = self.status_payload()
            if inspect.isawaitable(status):  # built on the doors' loop (gateway.sync.wire)
                status = await status
            await self.publish_status(status)
        except LinkError as exc:  # connected, but e.g. the ACL refuses: say so in the status UI
            self.last_error = exc
            log.error("MQTT: status not published: %s", exc)

    async def publish_status(self, status: dict[str, Any]) -> None:
        """Publish ``status`` retained on ``gw/{gw}/status``."""
        await self.publish(self.status_topic, encode(status), retain=True)

    async def _run_connect_handlers(self) -> None:
        for handler in self._connect_handlers:
            try:
                await handler()
            except LinkError as exc:
                log.warning("MQTT: on-connect handler stopped: %s", exc)
            except Exception:
                log.exception("MQTT: on-connect handler %r failed", handler)

    async def _pump(
        self, client: _Client, acks: asyncio.Queue[tuple[int, int, list[Hold]]]
    ) -> None:
        """Hand every inbound message to the handlers, in arrival order; its PUBACK to
        :meth:`_acknowledge`, behind the holds they returned."""
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            holds = await self.deliver(topic, bytes(payload))
            if message.qos > 0:  # bounded: the broker sends only so many unacknowledged
                acks.put_nowait((message.mid, message.qos, holds))

    async def _acknowledge(
        self, client: _Client, acks: asyncio.Queue[tuple[int, int, list[Hold]]]
    ) -> None:
        """Acknowledge inbound messages in their order, each once its holds finished."""
        while True:
            mid, qos, holds = await acks.get()
            for hold in holds:
                try:
                    await hold
                except Exception as exc:
                    raise LinkError(
                        f"an inbound message could not be kept ({describe(exc)}): "
                        f"left unacknowledged, the broker {self.broker} sends it again"
                    ) from exc
            client._client.ack(mid, qos)

    async def deliver(self, topic: str, payload: bytes) -> list[Hold]:
        """Check the size limit and pass one message to the handlers; never raises. Returns
        the holds the handlers gave: what the message's acknowledgement waits for."""
        limit = max_bytes(topic)  # before anything parses it (Size before parsing)
        if len(payload) > limit:
            await self._bad(topic, f"too large: {len(payload)} bytes, the limit is {limit}")
            return []
        holds: list[Hold] = []
        for handler in self._message_handlers:
            try:
                hold = await handler(topic, payload)
            except BadMessage as exc:
                await self._bad(topic, exc.reason)
            except Exception:
                log.exception("MQTT: handler for %s failed (message dropped)", topic)
            else:
                if inspect.isawaitable(hold):  # a handler's other result is not a hold
                    holds.append(hold)
        return holds

    async def _bad(self, topic: str, reason: str) -> None:
        log.warning("MQTT: message on %s dropped: %s", topic, reason)
        for handler in self._bad_handlers:
            try:
                await handler(topic, reason)
            except Exception:
                log.exception("MQTT: bad-message handler failed for %s", topic)


async def _until_one_fails(*parts: Coroutine[Any, Any, None]) -> None:
    """Run ``parts`` until one fails, then stop the others and raise its error.

    Not a TaskGroup: in Python 3.11 a group whose task fails while the group's own task is
    being cancelled raises that failure and loses the cancellation, and the link's loop
    would then connect again after it was told to stop."""
    tasks = [asyncio.ensure_future(part) for part in parts]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


def broker_identity(cfg: MqttSection) -> str | None:
    """Who the broker takes this gateway for: its client certificate's CN, else its
    username; None when neither is configured (or the certificate cannot be read: the TLS
    set-up reports that). Blocking (reads the certificate): call it in a worker thread."""
    tls = cfg.tls
    if tls is not None and tls.cert_file is not None:
        try:
            cert = x509.load_pem_x509_certificate(Path(tls.cert_file).read_bytes())
        except (OSError, ValueError):
            return None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names:
            value = names[0].value
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cfg.username


# -- why a connection failed, in words an installer can act on -----------------------------

_REFUSED_V5 = {
    0x84: 'it does not speak MQTT 5: set mqtt.protocol = "3.1.1"',
    0x85: "it does not accept the client id {client_id}",
    0x86: "bad username or password: check mqtt.username and mqtt.password_file",
    # Mosquitto answers a wrong password with this code too, not with 0x86.
    0x87: "not authorised: check mqtt.username and mqtt.password_file, or the client "
    "certificate, and that the broker's users/ACL know this gateway",
    0x88: "the server is unavailable: try later, or check the broker's log",
    0x89: "the server is busy: try later",
    0x8A: "this client is banned: ask the broker's administrator",
    0x8C: "bad authentication method",
}
_REFUSED_V311 = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_TLS_REFUSED = ("certificate required", "handshake failure", "bad certificate", "unknown ca",
                "certificate unknown", "access denied", "alert")  # fmt: skip


def explain_connect_failure(
    link: Link, exc: aiomqtt.MqttError | None, socket_error: str | None
) -> str:
    """One line saying why connecting failed and what to check."""
    where = f"MQTT broker {link.broker}"
    if isinstance(exc, MqttConnectError):
        return f"{where} refused the connection: {_refused(link, exc.rc)}"
    error = socket_error or ""
    if link.cfg.tls is not None and any(s in error.lower() for s in _TLS_REFUSED):
        return (
            f"{where} refused this gateway's TLS client certificate ({error}): set "
            "mqtt.tls.cert_file/key_file to a certificate signed by the broker's CA with "
            f"CN {link.site}/gw/{link.gw}"
        )
    text = str(exc) if exc is not None else error
    return f"{where}: {_explain_text(link, text)}"


def _refused(link: Link, rc: int | ReasonCode | None) -> str:
    value = rc.value if isinstance(rc, ReasonCode) else rc
    if link.cfg.protocol != "5" and isinstance(value, int):
        value = _REFUSED_V311.get(value, value)
    template = _REFUSED_V5.get(value or 0)
    if template is None:
        return f"reason {rc}"
    return template.format(client_id=link.client_id, status_topic=link.status_topic)


def _explain_text(link: Link, text: str) -> str:
    low = text.lower()
    if "connection refused" in low:
        return "nothing accepts connections there: is the broker running, and mqtt.port right?"
    if "certificate verify failed" in low:
        return (
            f"the broker's TLS certificate was not accepted ({text}): is it signed by the CA "
            f"in mqtt.tls.ca_file, and issued for the name {link.cfg.host!r}?"
        )
    if "wrong version number" in low or "record layer" in low or "[ssl" in low:
        return f"TLS handshake failed ({text}): is mqtt.port the broker's TLS port?"
    if "timed out" in low:
        hint = (
            "is it a TLS port (then configure mqtt.tls)?"
            if link.cfg.tls is None
            else "is it the TLS port, and does the broker want a client certificate?"
        )
        return (
            f"no answer within {link.connect_timeout:g} s ({text}): {hint} "
            "Or a firewall drops the packets"
        )
    if "unreachable" in low or "no route" in low:
        return f"network unreachable ({text}): check this gateway's network and mqtt.host"
    if "name or service" in low or "name resolution" in low:
        return f"cannot resolve {link.cfg.host!r} ({text}): check mqtt.host and DNS"
    return f"connection failed: {text}"


def explain_drop(broker: str, exc: BaseException) -> str:
    """One line saying why an established connection ended."""
    cause = exc.__cause__ or exc
    rc = getattr(exc, "rc", None) or getattr(cause, "rc", None)
    if isinstance(rc, ReasonCode) and rc.value == 0x8E:
        return (
            f"MQTT broker {broker} closed the connection: another client connected with the "
            "same client id (two gateways configured with the same site and id?)"
        )
    return f"connection to the MQTT broker {broker} lost: {cause}"


def no_delay(client: aiomqtt.Client) -> None:
    """Turn off Nagle's algorithm on the broker connection.

    Check-ins, acks and PUBACKs are small: with Nagle, each small PUBLISH waits until the
    previous segment is acknowledged, and the peer delays that acknowledgement, so a
    pipelined backlog drain runs at a fraction of its rate. aiomqtt does not expose the
    socket; paho does.
    """
    sock = client._client.socket()
    if isinstance(sock, _ReadBuffered):
        sock = sock._sock
    if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def broker_credentials(cfg: MqttSection) -> dict[str, Any]:
    """Password and TLS context for a connection to the broker (read from disk: call it
    in a worker thread, at every attempt, so a renewed certificate is picked up)."""
    kwargs: dict[str, Any] = {}
    if cfg.username is not None:
        kwargs.update(username=cfg.username, password=_password(cfg))
    if cfg.tls is not None:
        kwargs["tls_context"] = _tls_context(cfg)
    return kwargs


def _password(cfg: MqttSection) -> str | None:
    """The password from ``mqtt.password_file`` (first line), read at every connect."""
    path = cfg.password_file
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise LinkError(
            f"mqtt.password_file {path} cannot be read ({exc}): create it with the "
            "broker password on its first line, readable by the gateway's user"
        ) from None


def _tls_context(cfg: MqttSection) -> ssl.SSLContext:
    """A TLS context trusting ``tls.ca_file``, with the client certificate if configured."""
    tls = cfg.tls
    assert tls is not None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise LinkError(
            f"mqtt.tls.ca_file {tls.ca_file} cannot be loaded ({exc}): "
            "it must be the PEM certificate of the CA that signed the broker's certificate"
        ) from None
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise LinkError(
                f"client certificate {tls.cert_file} / key {tls.key_file} cannot be "
                f"loaded ({exc}): are both PEM files present, readable and a pair?"
            ) from None
    return ctx
