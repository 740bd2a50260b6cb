"""PROTOCOL.md, Check-ins and Events: the outbox reads the journal ahead of publishing.

A backlog's next batch is read while the current one is published (the journal is a round
trip away, in the doors' process). What was read ahead never changes what goes out: seq
order, everything unacknowledged again from the oldest after a restart, nothing twice in
one epoch, and no more than one batch held beyond what is being published.

The journal and the broker here are stand-ins that the test steps by hand (no clocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.sync.outbox import Outbox
from tests.support.broker import eventually

SITE, GW = "oslo", "door-1"
RECONNECTED = -1  # the mark in the broker's log where publishing started over


class Journal:
    """Final records 1..n, answered as the journal answers ``unacked(raw=True)``.

    ``hold[k]``: the k-th call's answer (made at once, as the journal's thread makes it) is
    handed back only once that event is set."""

    def __init__(self, n: int) -> None:
        self.last = n
        self.calls: list[tuple[int, int]] = []  # (after, limit)
        self.handed = 0  # records answered so far
        self.hold: dict[int, asyncio.Event] = {}

    def add(self) -> None:
        self.last += 1

    async def unacked(
        self, after_seq: int = 0, limit: int = 500, *, raw: bool = False
    ) -> list[dict[str, Any]]:
        assert raw
        self.calls.append((after_seq, limit))
        seqs = range(after_seq + 1, min(self.last, after_seq + limit) + 1)
        answer = [{"kind": "checkin", "seq": s, "body": json.dumps({"seq": s}), "signed": True}
                  for s in seqs]  # fmt: skip
        self.handed += len(answer)
        held = self.hold.get(len(self.calls))
        if held is not None:
            await held.wait()
        return answer

    async def ack(self, upto: int) -> int:
        return 0


class Broker:
    """Takes every publish at once (PUBACK), or waits on ``hold[seq]`` first."""

    def __init__(self) -> None:
        self.log: list[int] = []
        self.hold: dict[int, asyncio.Event] = {}

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        signed: bool = False,
    ) -> None:  # fmt: skip
        seq = int(json.loads(payload)["seq"])
        self.log.append(seq)
        held = self.hold.get(seq)
        if held is not None:
            await held.wait()

    def since_reconnect(self) -> list[int]:
        return self.log[len(self.log) - self.log[::-1].index(RECONNECTED) :]


@contextlib.asynccontextmanager
async def outbox(
    journal: Journal, broker: Broker, central: Ed25519PublicKey | None = None, **kw: Any
) -> AsyncIterator[Outbox]:
    """A connected outbox; only the test acks it, signed with ``central``'s key (by default a
    key nobody signs with: nothing is acknowledged)."""
    key = central if central is not None else Ed25519PrivateKey.generate().public_key()
    box = Outbox(journal, broker, site=SITE, gw=GW, public_key=key, **kw)
    running = asyncio.create_task(box.run())
    broker.log.append(RECONNECTED)
    await box.on_connect()
    try:
        yield box
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def until_idle() -> None:
    """Let the outbox run until it has nothing left to do: the stand-ins answer at once, so
    a few dozen turns of the loop are far more than anything still due needs."""
    for _ in range(50):
        await asyncio.sleep(0)


async def reconnect(box: Outbox, broker: Broker) -> None:
    box.on_disconnect()
    broker.log.append(RECONNECTED)
    await box.on_connect()


async def test_a_backlog_goes_out_in_seq_order_across_batches_read_ahead() -> None:
    journal, broker = Journal(23), Broker()
    async with outbox(journal, broker, batch=5, inflight=3):
        await eventually(lambda: len(broker.log) == 24)
        assert broker.log == [RECONNECTED, *range(1, 24)]
        assert [after for after, _ in journal.calls[:5]] == [0, 5, 10, 15, 20]


async def test_a_read_under_way_when_publishing_starts_over_is_not_published() -> None:
    journal, broker = Journal(10), Broker()
    journal.hold[2] = second = asyncio.Event()  # the read of 6..10
    async with outbox(journal, broker, batch=5) as box:
        await eventually(lambda: len(journal.calls) == 2 and len(broker.log) == 6)
        await reconnect(box, broker)  # none acknowledged: 1..5 go out again, first
        second.set()
        await eventually(lambda: len(broker.since_reconnect()) >= 10)
        await until_idle()  # a duplicate would come now
        assert broker.since_reconnect() == list(range(1, 11))
        assert broker.log[:6] == [RECONNECTED, 1, 2, 3, 4, 5]


async def test_a_read_of_the_last_few_under_way_when_publishing_starts_over_is_dropped() -> None:
    journal, broker = Journal(7), Broker()  # 1..5, then 6..7 read ahead: the end, for now
    broker.hold[6] = sixth = asyncio.Event()
    async with outbox(journal, broker, batch=5, inflight=1) as box:
        await eventually(lambda: broker.log[-1] == 6)
        for _ in range(3):
            journal.add()  # 8..10 became final
        journal.hold[3] = third = asyncio.Event()  # the read of 8..10, once 7 is out
        sixth.set()
        await eventually(lambda: len(journal.calls) == 3)
        await reconnect(box, broker)
        third.set()
        await eventually(lambda: len(broker.since_reconnect()) >= 10)
        await until_idle()
        assert broker.since_reconnect() == list(range(1, 11))


async def test_a_full_window_stops_the_reading_one_batch_ahead() -> None:
    journal, broker = Journal(50), Broker()
    async with outbox(journal, broker, batch=5, window=5):
        await eventually(lambda: len(broker.log) == 6)
        await until_idle()  # no ack comes: nothing more is read or published
        assert broker.log == [RECONNECTED, 1, 2, 3, 4, 5]
        assert journal.handed <= 5 + 5


async def test_an_empty_read_ahead_does_not_hide_a_record_that_became_final_after_it() -> None:
    journal, broker = Journal(5), Broker()
    broker.hold[4] = fourth = asyncio.Event()  # publishing stays in its batch meanwhile
    async with outbox(journal, broker, batch=5, inflight=1) as box:
        await eventually(lambda: len(journal.calls) == 2 and broker.log[-1] == 4)
        assert journal.calls[1] == (5, 5)  # read ahead, answered: nothing after 5 yet
        journal.add()  # seq 6 became final, and the outbox is told
        box.notify()
        fourth.set()
        await eventually(lambda: broker.log[-1] == 6)
        assert broker.log == [RECONNECTED, 1, 2, 3, 4, 5, 6]
