"""PROTOCOL.md, the link: connect, subscribe to the own site, publish with QoS 1, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttSection
from gateway.errors import BadMessage, LinkError
from gateway.sync.link import Link, _coalesce_writes, _ReadBuffered, subscriptions
from tests.support.broker import Broker, Watcher, eventually, running
from tests.support.ports import free_port

SITE, GW = "oslo", "door-1"
STATUS = f"acs/v1/{SITE}/gw/{GW}/status"
ONLINE = {"state": "online", "software": "test"}
ROOT = Path(__file__).resolve().parents[2]


def make_link(port: int, **cfg: object) -> Link:
    """A link to 127.0.0.1:port with fast retries (and a keepalive of 5 s unless given)."""
    section = MqttSection.model_validate({"host": "127.0.0.1", "port": port, "keepalive": 5, **cfg})
    return Link(section, SITE, GW, status_payload=lambda: ONLINE, retry_base=0.1)


class Inbox:
    """Records what the link hands to its handlers."""

    def __init__(self, link: Link) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.bad: list[tuple[str, str]] = []
        self.connects = 0
        self.changed = asyncio.Event()
        link.on_message(self._message)
        link.on_bad_message(self._bad)
        link.on_connect(self._connect)

    async def _message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self.changed.set()

    async def _bad(self, topic: str, reason: str) -> None:
        self.bad.append((topic, reason))
        self.changed.set()

    async def _connect(self) -> None:
        self.connects += 1
        self.changed.set()

    async def until(self, check: object, within: float = 10) -> None:
        """Wait until ``check()`` is true (woken by the handlers, or every 50 ms)."""
        async with asyncio.timeout(within):
            while not check():  # type: ignore[operator]
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)


async def test_connected_link_publishes_its_status_retained(broker: Broker) -> None:
    link = make_link(broker.port)
    async with running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        assert link.connected
        async with Watcher(broker.port, [STATUS]) as central:
            seen = await central.wait_for(STATUS)
    assert seen.retain
    assert json.loads(seen.payload) == ONLINE
    # MQTT 5, no clean start (a persistent session), client id "{site}.{gw}"
    assert f"as {SITE}.{GW} (p5, c0, k5)" in broker.log.read_text()


async def test_publish_returns_after_the_broker_acknowledged_it(broker: Broker) -> None:
    link = make_link(broker.port)
    topic = f"acs/v1/{SITE}/gw/{GW}/checkin"
    async with Watcher(broker.port, [topic]) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await link.publish(topic, b'{"seq":1}')
        seen = await central.wait_for(topic)
    assert seen.payload == b'{"seq":1}'


async def test_publishing_while_offline_raises_at_once_and_never_waits() -> None:
    link = make_link(free_port())
    with pytest.raises(LinkError, match="not connected"):
        await asyncio.wait_for(link.publish(STATUS, b"{}"), 0.5)


async def test_gateway_subscribes_only_to_its_own_site(broker: Broker) -> None:
    assert all(f.startswith(f"acs/v1/{SITE}/") for f in subscriptions(SITE, GW))
    link = make_link(broker.port)
    inbox = Inbox(link)
    async with Watcher(broker.port, []) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await central.publish("acs/v1/bergen/time", b"other site")
        await central.publish(f"acs/v1/{SITE}/gw/door-2/cmd", b"other gateway's command")
        await central.publish(f"acs/v1/{SITE}/gw/{GW}/cmd", b"mine")
        await central.publish(f"acs/v1/{SITE}/gw/door-2/checkin", b"peer")
        await inbox.until(lambda: len(inbox.messages) >= 2)
        await asyncio.sleep(0.2)
    assert inbox.messages == [
        (f"acs/v1/{SITE}/gw/{GW}/cmd", b"mine"),
        (f"acs/v1/{SITE}/gw/door-2/checkin", b"peer"),
    ]


async def test_own_check_ins_do_not_come_back_from_the_broker_with_mqtt_5(broker: Broker) -> None:
    link = make_link(broker.port)
    inbox = Inbox(link)
    own, peer = f"acs/v1/{SITE}/gw/{GW}/checkin", f"acs/v1/{SITE}/gw/door-2/checkin"
    async with Watcher(broker.port, [own]) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await link.publish(own, b"ours")
        await central.wait_for(own)  # the broker has it and passes it on
        await central.publish(peer, b"peer")
        await inbox.until(lambda: len(inbox.messages) >= 1)
        await asyncio.sleep(0.2)
    assert inbox.messages == [(peer, b"peer")]


async def test_link_reconnects_and_resubscribes_after_a_broker_restart(broker: Broker) -> None:
    link = make_link(broker.port)
    inbox = Inbox(link)
    async with running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        broker.stop()
        await inbox.until(lambda: not link.connected)
        with pytest.raises(LinkError):
            await link.publish(STATUS, b"{}")
        broker.start()  # same port, and no persistence: the subscriptions are gone
        await inbox.until(lambda: link.connected and inbox.connects == 2, within=20)
        async with Watcher(broker.port, [STATUS]) as central:
            await central.publish(f"acs/v1/{SITE}/time", b"after restart")
            await inbox.until(lambda: inbox.messages)
            status = await central.wait_for(STATUS)
    assert inbox.messages == [(f"acs/v1/{SITE}/time", b"after restart")]
    assert json.loads(status.payload) == ONLINE and status.retain


CHILD = """
import asyncio, sys
from gateway.config import MqttSection
from gateway.sync.link import Link

async def main():
    cfg = MqttSection(host="127.0.0.1", port=int(sys.argv[1]), keepalive=5)
    link = Link(cfg, "oslo", "door-1", status_payload=lambda: {"state": "online"})
    task = asyncio.create_task(link.run())
    await link.wait_connected()
    print("connected", flush=True)
    await task

asyncio.run(main())
"""


async def test_messages_sent_while_the_gateway_was_away_arrive_on_reconnect(
    broker: Broker,
) -> None:
    first = make_link(broker.port)
    async with running(first.run()):
        await asyncio.wait_for(first.wait_connected(), 10)
    cmd = f"acs/v1/{SITE}/gw/{GW}/cmd"
    async with Watcher(broker.port, []) as central:
        await central.publish(cmd, b"queued while away")
    again = make_link(broker.port)  # same client id: the broker kept the session
    inbox = Inbox(again)
    async with running(again.run()):
        await inbox.until(lambda: inbox.messages)
    assert inbox.messages == [(cmd, b"queued while away")]


async def test_will_says_offline_when_the_gateway_vanishes_without_disconnecting(
    broker: Broker,
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(broker.port), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"connected"
        async with Watcher(broker.port, [STATUS]) as central:
            await central.wait_for(STATUS, b'{"state":"online"}')
            child.kill()  # SIGKILL: no DISCONNECT, so the broker publishes the will
            await central.wait_for(STATUS, b'{"state":"offline"}')
        async with Watcher(broker.port, [STATUS], identifier="late") as late:
            retained = await late.wait_for(STATUS)
        assert retained.retain and json.loads(retained.payload) == {"state": "offline"}
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def test_stopping_the_link_leaves_an_offline_status(broker: Broker) -> None:
    link = make_link(broker.port)
    async with running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
    assert not link.connected
    async with Watcher(broker.port, [STATUS]) as central:
        seen = await central.wait_for(STATUS)
    assert json.loads(seen.payload) == {"state": "offline"}


async def test_oversized_messages_are_dropped_with_a_reason(broker: Broker) -> None:
    link = make_link(broker.port)
    inbox = Inbox(link)
    cmd = f"acs/v1/{SITE}/gw/{GW}/cmd"
    delta = f"acs/v1/{SITE}/entitlements/delta"
    async with Watcher(broker.port, []) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await central.publish(cmd, b"x" * (64 * 1024 + 1))
        await central.publish(delta, b"y" * (16 * 2**20 + 1))
        await central.publish(cmd, b"z" * (64 * 1024))
        await inbox.until(lambda: len(inbox.bad) == 2 and inbox.messages, within=20)
    assert [t for t, _ in inbox.bad] == [cmd, delta]
    assert all("too large" in reason for _, reason in inbox.bad)
    assert inbox.messages == [(cmd, b"z" * (64 * 1024))]


async def test_a_handler_raising_bad_message_is_reported_and_the_link_goes_on(
    broker: Broker,
) -> None:
    link = make_link(broker.port)
    inbox = Inbox(link)

    async def refuse(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise BadMessage("bad signature", topic)

    link.on_message(refuse)
    time_topic = f"acs/v1/{SITE}/time"
    async with Watcher(broker.port, []) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await central.publish(time_topic, b"bad")
        await central.publish(time_topic, b"good")
        await inbox.until(lambda: len(inbox.messages) == 2)
    assert inbox.bad == [(time_topic, "bad signature")]
    assert [payload for _, payload in inbox.messages] == [b"bad", b"good"]


async def test_mqtt_311_fallback_connects_and_publishes(broker: Broker) -> None:
    link = make_link(broker.port, protocol="3.1.1")
    inbox = Inbox(link)
    topic = f"acs/v1/{SITE}/gw/{GW}/event"
    async with Watcher(broker.port, [topic]) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await link.publish(topic, b'{"seq":7}')
        seen = await central.wait_for(topic)
        await central.publish(f"acs/v1/{SITE}/time", b"tick")
        await inbox.until(lambda: inbox.messages)
    assert seen.payload == b'{"seq":7}'
    assert inbox.messages == [(f"acs/v1/{SITE}/time", b"tick")]
    assert f"as {SITE}.{GW} (p2, c0" in broker.log.read_text()  # MQTT 3.1.1, persistent session


async def test_nothing_listening_is_reported_as_connection_refused() -> None:
    link = make_link(free_port())
    async with running(link.run()):
        await eventually(lambda: link.last_error is not None, within=10)
    assert "nothing accepts connections" in str(link.last_error)
    assert "127.0.0.1" in str(link.last_error)


async def test_an_unknown_broker_name_is_reported_as_dns() -> None:
    section = MqttSection(host="no-such-broker.invalid", port=1883)
    link = Link(section, SITE, GW, status_payload=lambda: ONLINE, retry_base=0.1)
    async with running(link.run()):
        await eventually(lambda: link.last_error is not None, within=10)
    assert "cannot resolve" in str(link.last_error)
    assert "no-such-broker.invalid" in str(link.last_error)


async def test_a_hung_broker_counts_as_no_link_once_the_keepalive_has_run_out(
    broker: Broker,
) -> None:
    """Clarifications, Status: a broker that hangs with the TCP connection open is no link
    once the keepalive (5 s here) has run out, before paho closes the socket (a keepalive
    after its unanswered ping): check-ins decided meanwhile say ``offline``."""
    link = make_link(broker.port)
    assert broker.process is not None
    async with running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        broker.process.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: not link.connected, within=20)
            assert link._connected.is_set()  # the session is still up: the keepalive decided
            with pytest.raises(LinkError, match="not connected"):
                await link.publish(STATUS, b"{}")
        finally:
            broker.process.send_signal(signal.SIGCONT)
        await eventually(lambda: link.connected, within=30)  # and back once it answers


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_whose_hold_fails_is_not_acknowledged_and_the_broker_sends_it_again(
    broker: Broker, protocol: str
) -> None:
    link = make_link(broker.port, protocol=protocol)
    topic = f"acs/v1/{SITE}/gw/door-2/checkin"
    seen: list[bytes] = []
    holds: list[asyncio.Future[None]] = []

    async def keep(name: str, payload: bytes) -> asyncio.Future[None] | None:
        if name != topic:
            return None
        seen.append(payload)
        hold = asyncio.get_running_loop().create_future()
        holds.append(hold)
        return hold

    link.on_message(keep)
    async with Watcher(broker.port, []) as peer, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await peer.publish(topic, b"first")
        await eventually(lambda: len(holds) == 1)
        holds[0].set_exception(OSError("disk full"))  # not kept: no PUBACK, the session ends
        await eventually(lambda: len(holds) == 2)  # the broker's own redelivery, next session
        holds[1].set_result(None)  # kept: acknowledged
        await peer.publish(topic, b"second")
        await eventually(lambda: len(holds) == 3)
        holds[2].set_result(None)
        await asyncio.sleep(0.5)
    assert seen == [b"first", b"first", b"second"]  # each again only while not acknowledged


async def test_stopping_the_link_while_a_hold_fails_stops_it(broker: Broker) -> None:
    link = make_link(broker.port)
    topic = f"acs/v1/{SITE}/gw/door-2/checkin"
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def keep(name: str, payload: bytes) -> asyncio.Future[None] | None:
        return hold if name == topic else None

    link.on_message(keep)
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_connected(), 10)
        async with Watcher(broker.port, []) as peer:
            await peer.publish(topic, b"x")
        await eventually(lambda: len(hold._callbacks or ()) > 0)
        hold.set_exception(OSError("the gateway is gone"))  # as the wire process stops
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)  # not on into a new connection
    finally:
        task.cancel()


async def test_a_handler_that_returns_a_value_is_not_taken_for_a_hold(broker: Broker) -> None:
    """The snapshot bench's handler returns what ``EntitlementSync.handle`` does (a bool):
    taken for a hold, the message was refused its PUBACK, sent again, forever."""
    link = make_link(broker.port)
    topic = f"acs/v1/{SITE}/time"
    seen: list[bytes] = []

    async def handle(name: str, payload: bytes) -> bool:
        if name == topic:
            seen.append(payload)
        return True

    link.on_message(handle)
    async with Watcher(broker.port, []) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await central.publish(topic, b"tick")
        await eventually(lambda: seen)
        await asyncio.sleep(1.0)
        assert link.connections == 1  # the link stayed up
    assert seen == [b"tick"]  # acknowledged once, not sent again


async def test_messages_that_arrive_together_are_all_taken_with_nothing_after_them(
    broker: Broker,
) -> None:
    """The link reads the socket 64 KiB at a time and paho takes one packet a read: what
    one read brought beyond it is taken at once, not when the next bytes come (the next
    PINGRESP, half a minute later here, or never)."""
    link = make_link(broker.port, keepalive=60)
    inbox = Inbox(link)
    cmd = f"acs/v1/{SITE}/gw/{GW}/cmd"

    def publish_while_the_link_waits() -> None:
        async def publish() -> None:
            async with Watcher(broker.port, []) as central:
                for i in range(60):
                    await central.publish(cmd, b"%d" % i)

        asyncio.run(publish())

    async with running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        publisher = threading.Thread(target=publish_while_the_link_waits)
        publisher.start()
        publisher.join()  # the link's loop is held: what the broker sends piles up unread
        await inbox.until(lambda: len(inbox.messages) >= 60)
    assert [payload for _, payload in inbox.messages] == [b"%d" % i for i in range(60)]


def test_the_read_buffer_serves_paho_s_small_reads_from_one_receive() -> None:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    buffered = _ReadBuffered(ours)
    with pytest.raises(BlockingIOError):  # nothing there: paho waits for the socket
        buffered.recv(1)
    broker.sendall(b"\x40\x02\x00\x01" + b"\x30\x05abcde")  # a PUBACK and a PUBLISH
    assert buffered.recv(1) == b"\x40"
    assert buffered.pending() == 10  # the rest came with it
    assert [buffered.recv(1), buffered.recv(2)] == [b"\x02", b"\x00\x01"]
    assert [buffered.recv(1), buffered.recv(1)] == [b"\x30", b"\x05"]
    assert buffered.recv(10) == b"abcde"  # what there is, as a socket's recv gives it
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)
    broker.sendall(b"\xd0\x00")  # read from the socket as it is, when it fits
    assert buffered.recv(2) == b"\xd0\x00" and buffered.pending() == 0
    broker.close()
    assert buffered.recv(1) == b""  # the broker closed the connection
    assert buffered.fileno() == ours.fileno()
    ours.close()


def written(packets: list[tuple[int, int, bytes, Any]], send_buffer: int) -> tuple[bytes, int]:
    """What a paho client with joined writes sends of ``packets`` (command, qos, bytes,
    info) through a socket with that send buffer, and in how many sends."""
    client = paho.Client(CallbackAPIVersion.VERSION2)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    broker.settimeout(0.2)
    client._sock = ours
    _coalesce_writes(client)
    sends = 0
    send = client._sock_send

    def counted(buf: bytes | bytearray) -> int:
        nonlocal sends
        sends += 1
        return send(buf)

    client._sock_send = counted  # type: ignore[method-assign]
    for command, qos, data, info in packets:
        packet = {"command": command, "mid": 1, "qos": qos, "pos": 0,
                  "to_process": len(data), "packet": data, "info": info}  # fmt: skip
        client._out_packet.append(packet)  # type: ignore[arg-type]
    received = bytearray()
    with ours, broker:
        while client._out_packet:
            client._packet_write()  # as aiomqtt has paho write when the socket is writable
            with contextlib.suppress(TimeoutError):
                received += broker.recv(1 << 20)
    return bytes(received), sends


def test_queued_packets_go_out_joined_in_order() -> None:
    """paho's queue is written in as few sends as the socket takes; a QoS 0 PUBLISH (paho
    reports it published once written) and a DISCONNECT go out alone, in their place."""
    qos0 = paho.MQTTMessageInfo(9)
    packets: list[tuple[int, int, bytes, Any]]
    packets = [(paho.PUBLISH | 2, 1, b"publish %d" % i, None) for i in range(20)]
    packets += [(paho.PUBLISH, 0, b"qos 0", qos0), (paho.PUBACK, 0, b"puback", None)]
    packets += [(paho.PINGREQ, 0, b"ping", None), (paho.DISCONNECT, 0, b"bye", None)]
    received, sends = written(packets, 1 << 16)
    assert received == b"".join(data for _, _, data, _ in packets)
    assert sends == 4  # the 20 publishes; the QoS 0 one; the PUBACK and PINGREQ; DISCONNECT
    assert qos0.is_published()


def test_joined_packets_written_in_part_go_on_where_they_stopped() -> None:
    packets: list[tuple[int, int, bytes, Any]]
    packets = [(paho.PUBLISH | 2, 1, bytes([i]) * 3000, None) for i in range(1, 41)]
    received, sends = written(packets, 4096)  # 120 KB through a few KiB at a time
    assert received == b"".join(data for _, _, data, _ in packets)
    assert sends > 2  # it did take partial writes
