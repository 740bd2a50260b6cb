"""PROTOCOL.md, Check-ins and Events: what the central acknowledges is pruned, in steps.

Every ack prunes at once when nothing published is left unacknowledged; while a backlog
drains, the journal (a durable transaction a round trip away, in the doors' process) is
told a batch's worth at a time, never more than was acknowledged.

The journal, the broker and the outbox are the read-ahead tests' stand-ins (no clocks);
the broker's log is read from the outbox's connect on.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.sync.envelopes import seal
from gateway.sync.outbox import Outbox
from tests.support.broker import eventually
from tests.sync.test_outbox_read_ahead import GW, SITE, Broker, Journal, outbox

CENTRAL = Ed25519PrivateKey.generate()
ACK_TOPIC = f"acs/v1/{SITE}/gw/{GW}/checkin/ack"


class PrunedJournal(Journal):
    """The read-ahead tests' journal, keeping what it was told to prune."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.pruned: list[int] = []

    async def ack(self, upto: int) -> int:
        self.pruned.append(upto)
        return 0


async def ack(box: Outbox, upto: int) -> None:
    payload = seal("ack", SITE, {"upto": upto}, CENTRAL, datetime.now(UTC), GW)
    assert await box.handle(ACK_TOPIC, payload)


async def test_a_draining_backlog_is_pruned_a_batch_at_a_time_and_all_at_its_end() -> None:
    journal, broker = PrunedJournal(20), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=5) as box:
        await eventually(lambda: len(broker.since_reconnect()) == 20)
        for upto in range(2, 21, 2):
            await ack(box, upto)
        assert box.acked_upto == 20
        assert journal.pruned == [6, 12, 18, 20]  # 5 or more acked since the last; the end


async def test_an_ack_that_leaves_nothing_unacknowledged_prunes_at_once() -> None:
    journal, broker = PrunedJournal(1), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=500) as box:
        await eventually(lambda: broker.since_reconnect() == [1])
        await ack(box, 1)
        assert journal.pruned == [1]
        journal.add()
        box.notify()
        await eventually(lambda: broker.since_reconnect() == [1, 2])
        await ack(box, 2)
        assert journal.pruned == [1, 2]


async def test_an_ack_is_never_pruned_beyond_what_was_published() -> None:
    journal, broker = PrunedJournal(3), Broker()
    async with outbox(journal, broker, CENTRAL.public_key(), batch=2) as box:
        await eventually(lambda: broker.since_reconnect() == [1, 2, 3])
        await ack(box, 99)
        assert journal.pruned == [3]
