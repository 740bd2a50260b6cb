"""PROTOCOL.md, Check-ins and Events: what the central acknowledges is pruned, in steps.

Every ack prunes at once when nothing published is left unacknowledged; while a backlog
drains, the journal (a durable transaction a round trip away, in the doors' process) is
told a batch's worth at a time, never more than was acknowledged. A prune is not waited
for: the acks behind it, and the publishing they make room for, go on while the disk
takes its time; the prunes asked for meanwhile become one.

The journal, the broker and the outbox are the read-ahead tests' stand-ins (no clocks);
the broker's log is read from the outbox's connect on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.sync.envelopes import seal
from gateway.sync.outbox import Outbox
from tests.support.broker import eventually
from tests.sync.test_outbox_read_ahead import GW, SITE, Broker, Journal, outbox, until_idle

CENTRAL = Ed25519PrivateKey.generate()
ACK_TOPIC = f"acs/v1/{SITE}/gw/{GW}/checkin/ack"


class PrunedJournal(Journal):
    """The read-ahead tests' journal, keeping what it was told to prune; while ``slow`` is
    set, a prune takes until ``disk`` is set (an fsync the disk takes its time with)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.pruned: list[int] = []
        self.slow = False
        self.disk = asyncio.Event()

    async def ack(self, upto: int) -> int:
        self.pruned.append(upto)
        if self.slow:
            await self.disk.wait()
        return 0


async def ack(box: Outbox, upto: int) -> None:
    """Hand the outbox an ack; it takes it without waiting for the journal (a guard of 10 s
    turns a wait for a prune that never ends into a failure instead of a hung test)."""
    payload = seal("ack", SITE, {"upto": upto}, CENTRAL, datetime.now(UTC), GW)
    async with asyncio.timeout(10):
        assert await box.handle(ACK_TOPIC, payload)


async def test_a_draining_backlog_is_pruned_a_batch_at_a_time_and_all_at_its_end() -> None:
    journal, broker = PrunedJournal(20), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=5) as box:
        await eventually(lambda: len(broker.since_reconnect()) == 20)
        for upto in range(2, 21, 2):
            await ack(box, upto)
            await until_idle()  # each prune done before the next ack
        assert box.acked_upto == 20
        assert journal.pruned == [6, 12, 18, 20]  # 5 or more acked since the last; the end


async def test_an_ack_that_leaves_nothing_unacknowledged_prunes_at_once() -> None:
    journal, broker = PrunedJournal(1), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=500) as box:
        await eventually(lambda: broker.since_reconnect() == [1])
        await ack(box, 1)
        await eventually(lambda: journal.pruned == [1])
        journal.add()
        box.notify()
        await eventually(lambda: broker.since_reconnect() == [1, 2])
        await ack(box, 2)
        await eventually(lambda: journal.pruned == [1, 2])


async def test_an_ack_is_never_pruned_beyond_what_was_published() -> None:
    journal, broker = PrunedJournal(3), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=2) as box:
        await eventually(lambda: broker.since_reconnect() == [1, 2, 3])
        await ack(box, 99)
        await until_idle()
        assert journal.pruned == [3]


async def test_a_slow_prune_holds_back_neither_the_acks_nor_the_publishing() -> None:
    # Until 2026-12-03 each prune was waited for where the acks are taken: while the disk
    # took its time with one (an SD card, a busy virtual disk), no ack was taken, the window
    # filled, and the drain stopped. Here the first prune never ends until the test says.
    journal, broker = PrunedJournal(40), Broker()
    journal.slow = True
    async with outbox(journal, broker, CENTRAL.public_key(), batch=5, window=10) as box:
        await eventually(lambda: broker.since_reconnect() == list(range(1, 11)))
        await ack(box, 10)  # all published acknowledged: prune at once (and it hangs)
        await eventually(lambda: journal.pruned == [10])
        for upto in range(11, 41):
            await eventually(lambda upto=upto: len(broker.since_reconnect()) >= upto)
            await ack(box, upto)  # taken while the prune is under way
        assert box.acked_upto == 40
        assert broker.since_reconnect() == list(range(1, 41))  # the window moved on
        assert journal.pruned == [10]  # still the one prune: none started beside it
        journal.disk.set()
        await eventually(lambda: journal.pruned == [10, 40])  # what came meanwhile, at once
        await until_idle()
        assert journal.pruned == [10, 40]
