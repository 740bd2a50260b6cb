"""The boundary between gateway/sync/link.py and aiomqtt's private members (issue 9, point 8).

aiomqtt 2.x resolves ``publish`` on any PUBACK and hides its reason code, and exposes
neither the socket nor a way to tell a dead connection from a live one. The link therefore
reaches into a few private members. aiomqtt is pinned to its 2.5 series (pyproject.toml);
these tests pin what the link relies on, so that an upgrade that moves any of it fails
here, by name, rather than silently at a door.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.sync.link import _Client


async def test_the_private_members_the_link_uses_are_there_with_their_shapes() -> None:
    client = _Client("127.0.0.1", 1)  # not connected: nothing is sent
    assert isinstance(client._client, paho.Client)  # publish(), socket(), disconnect()
    assert isinstance(client._disconnected, asyncio.Future)
    assert client._client._ping_t == 0  # set when a PINGREQ leaves, 0 once answered
    assert paho.time_func is time.monotonic  # the clock _ping_t is read on
    params = list(inspect.signature(aiomqtt.Client._on_publish).parameters)
    assert params == ["self", "client", "userdata", "mid", "reason_code", "properties"]
    assert paho.Client.publish.__qualname__ == "Client.publish"


async def test_the_pubacks_reason_code_reaches_the_link_through_on_publish() -> None:
    client = _Client("127.0.0.1", 1)
    code = ReasonCode(PacketTypes.PUBACK, identifier=0x87)  # Not authorized (an ACL)
    waiter: asyncio.Future[ReasonCode] = asyncio.get_running_loop().create_future()
    client._acked[7] = waiter  # publish_acked waiting for message 7
    client._on_publish(client._client, None, 7, code, None)  # type: ignore[arg-type]
    assert waiter.result() == code and code.is_failure and 7 not in client._acked
    client._on_publish(client._client, None, 8, code, None)  # type: ignore[arg-type]
    assert client.puback.pop(8) == code  # acked before anyone waited: kept for the waiter
    with contextlib.suppress(Exception):
        client._client.disconnect()


class _Sent:
    """What paho's publish returns for a message handed to it (its MQTTMessageInfo)."""

    rc = paho.MQTT_ERR_SUCCESS

    def __init__(self, mid: int) -> None:
        self.mid = mid


async def test_a_publish_whose_puback_does_not_come_gives_up_at_its_own_deadline() -> None:
    client = _Client("127.0.0.1", 1)
    mids = iter(range(1, 10))
    client._client.publish = lambda *args: _Sent(next(mids))  # type: ignore[assignment, return-value]
    code = ReasonCode(PacketTypes.PUBACK, identifier=0)
    slow = asyncio.create_task(client.publish_acked("t", b"1", 1, False, 60.0))
    lost = asyncio.create_task(client.publish_acked("t", b"2", 1, False, 0.05))
    also_lost = asyncio.create_task(client.publish_acked("t", b"3", 1, False, 0.01))
    for task in (lost, also_lost):  # one timer for all: each fails at its own deadline
        try:
            await task
            raise AssertionError("no PUBACK came, yet the publish returned")
        except aiomqtt.MqttError as exc:
            assert "timed out" in str(exc)
    assert not slow.done()
    client._on_publish(client._client, None, 1, code, None)  # type: ignore[arg-type]
    assert await slow == code
    assert client._acked == {} and client._due == {} and client.puback == {}
    with contextlib.suppress(Exception):
        client._client.disconnect()


async def test_publishes_waiting_for_their_puback_fail_at_once_when_the_connection_is_lost():
    """Not at their deadline (``ack_timeout``, 30 s): each holds an outbox in-flight slot,
    and after a quick reconnect the outbox waited for those before publishing again."""
    client = _Client("127.0.0.1", 1)
    mids = iter(range(1, 10))
    client._client.publish = lambda *args: _Sent(next(mids))  # type: ignore[assignment, return-value]
    waiting = [asyncio.create_task(client.publish_acked("t", b"x", 1, False, 600.0))
               for _ in range(3)]  # fmt: skip
    await asyncio.sleep(0)  # each is waiting for its PUBACK
    assert not any(task.done() for task in waiting)
    lost = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
    client._on_disconnect(client._client, None, None, lost, None)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    for task in waiting:
        assert task.done()
        with pytest.raises(aiomqtt.MqttError, match="connection lost"):
            task.result()
    assert client._acked == {} and client._due == {} and client._expiry is None
    with contextlib.suppress(Exception):
        client._client.disconnect()


async def test_a_puback_that_comes_after_its_publish_gave_up_is_not_taken_by_a_later_one():
    """Message ids wrap at 65,535: a late PUBACK used to be kept as "came before anyone
    waited", and the next publish given that id returned at once with it (a refusal's
    reason code, too) without its own having come."""
    client = _Client("127.0.0.1", 1)
    mids = iter([5, 5, 6])  # the id comes round again
    client._client.publish = lambda *args: _Sent(next(mids))  # type: ignore[assignment, return-value]
    refused = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
    accepted = ReasonCode(PacketTypes.PUBACK, identifier=0)
    with pytest.raises(aiomqtt.MqttError, match="timed out"):
        await client.publish_acked("t", b"old", 1, False, 0.01)
    client._on_publish(client._client, None, 5, refused, None)  # type: ignore[arg-type]
    assert client.puback == {}  # dropped, not kept for whoever gets id 5 next
    reused = asyncio.create_task(client.publish_acked("t", b"new", 1, False, 60.0))
    await asyncio.sleep(0.01)
    assert not reused.done()  # waits for its own PUBACK
    client._on_publish(client._client, None, 5, accepted, None)  # type: ignore[arg-type]
    assert await reused == accepted
    assert client.puback == {} and client._abandoned == set() and client._acked == {}
    with contextlib.suppress(Exception):
        client._client.disconnect()


async def test_pubacks_owed_to_publishes_cut_off_by_a_lost_connection_or_cancelled_are_dropped():
    client = _Client("127.0.0.1", 1)
    mids = iter([1, 2, 3])
    client._client.publish = lambda *args: _Sent(next(mids))  # type: ignore[assignment, return-value]
    code = ReasonCode(PacketTypes.PUBACK, identifier=0)
    cut_off = asyncio.create_task(client.publish_acked("t", b"1", 1, False, 600.0))
    cancelled = asyncio.create_task(client.publish_acked("t", b"2", 1, False, 600.0))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    lost = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
    client._on_disconnect(client._client, None, None, lost, None)  # type: ignore[arg-type]
    with pytest.raises(aiomqtt.MqttError, match="connection lost"):
        await cut_off
    for mid in (1, 2):  # a resumed session may still bring them: not kept for anyone
        client._on_publish(client._client, None, mid, code, None)  # type: ignore[arg-type]
    assert client.puback == {} and client._abandoned == set()
    client._on_publish(client._client, None, 3, code, None)  # type: ignore[arg-type]
    assert client.puback == {3: code}  # one nobody gave up on: kept for its waiter
    with contextlib.suppress(Exception):
        client._client.disconnect()
