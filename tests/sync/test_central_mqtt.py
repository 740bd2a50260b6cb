"""The central simulator's MQTT client (simulators/central_mqtt.py): packets are taken whole
however the reads split them, and a message is acknowledged to the broker only once the
central took it."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import aiomqtt
import pytest

from simulators.central_mqtt import PUBLISH, CentralClient, _Connection, packet, text
from tests.support.broker import Broker


class Transport(asyncio.Transport):
    """Collects what is written; nothing goes anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def publish(name: str, payload: bytes, pid: int) -> bytes:
    return packet(PUBLISH | 0x02, text(name) + struct.pack(">H", pid) + payload)


async def test_packets_split_anywhere_across_reads_are_taken_whole_in_order_and_pubacked() -> None:
    # payload sizes whose remaining lengths take one, two and three bytes
    sizes = [0, 5, 120, 127, 128, 300, 16_383, 16_384, 70_000]
    sent = [(f"acs/v1/s/gw/g/checkin/{i}", bytes([i]) * n) for i, n in enumerate(sizes)]
    stream = b"".join(publish(name, body, i + 1) for i, (name, body) in enumerate(sent))
    rng = random.Random(7)
    for _ in range(20):
        got: list[tuple[str, bytes]] = []
        conn = _Connection(lambda name, body, got=got: got.append((name, body)))
        transport = Transport()
        conn.connection_made(transport)
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 7, 500, 40_000])
            conn.data_received(stream[pos : pos + step])
            pos += step
        assert got == sent
        acks = bytes(transport.written)
        assert acks == b"".join(b"\x40\x02" + struct.pack(">H", i + 1) for i in range(len(sent)))
        assert not conn.buffer and not conn.closed.done()


async def test_a_bad_remaining_length_ends_the_connection_with_a_reason() -> None:
    conn = _Connection(lambda name, body: None)
    conn.connection_made(Transport())
    conn.data_received(bytes([PUBLISH | 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    with pytest.raises(aiomqtt.MqttError, match="remaining length"):
        await conn.closed


async def test_a_message_is_pubacked_only_once_the_central_took_it(broker: Broker) -> None:
    """What the handler did not take comes again on the next connection of the session;
    what it took does not."""
    name = "acs/v1/s/gw/g/checkin"
    got: list[bytes] = []

    def take(_: str, body: bytes) -> None:
        if body == b"2" and b"2" not in got:
            got.append(body)
            raise RuntimeError("the central failed on this one")
        got.append(body)

    async with CentralClient("127.0.0.1", broker.port, "central-t", take, clean_session=False) as c:
        await c.subscribe(name)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="gw") as gw:
        for body in (b"1", b"2", b"3"):
            await gw.publish(name, body, qos=1)
    async with CentralClient("127.0.0.1", broker.port, "central-t", take, clean_session=False) as c:
        with pytest.raises(RuntimeError, match="failed on this one"):
            await c.closed()
    assert got == [b"1", b"2"]
    arrived = asyncio.Event()

    def wait_for_three(_: str, body: bytes) -> None:
        take(_, body)
        if body == b"3":
            arrived.set()

    async with CentralClient(
        "127.0.0.1", broker.port, "central-t", wait_for_three, clean_session=False
    ) as c:
        async with asyncio.timeout(10):
            await arrived.wait()
    assert got == [b"1", b"2", b"2", b"3"]  # 1 was taken and acked: it did not come again


async def test_a_lost_broker_ends_the_connection_with_mqtt_error(broker: Broker) -> None:
    seen: list[Any] = []
    async with CentralClient("127.0.0.1", broker.port, "central-t", lambda *a: seen.append(a)) as c:
        broker.stop()
        with pytest.raises(aiomqtt.MqttError):
            await c.closed()
        with pytest.raises(aiomqtt.MqttError, match="not connected"):
            await c.publish("acs/v1/s/time", b"{}")
    with pytest.raises(aiomqtt.MqttError, match="cannot connect"):
        async with CentralClient("127.0.0.1", broker.port, "central-t", seen.append):
            pass
