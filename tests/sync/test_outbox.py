"""PROTOCOL.md, Check-ins and Events: at-least-once delivery in seq order, kept until acked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import MqttSection
from gateway.journal import Journal
from gateway.sync.envelopes import load_public_key, seal
from gateway.sync.link import Link
from gateway.sync.outbox import Outbox
from simulators.central import CentralSimulator
from tests.support.broker import Broker, eventually

SITE, GW = "oslo", "door-1"
AT = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def decision(member: str = "M1", **kw: Any) -> dict[str, Any]:
    """A check-in as the entry pipeline hands it to the journal (before id/seq/gw)."""
    out = {"at": AT.isoformat(), "door": "main-in", "zone": "gym", "direction": "in",
           "credential": "nfc", "member": member, "ticket": None, "decision": "granted",
           "reason": "ok", "contract": "C1", "charged": 0, "passed": False, "warnings": [],
           "offline": False, "entitlements_version": 1}  # fmt: skip
    out.update(kw)
    return out


@dataclass
class Gateway:
    """A gateway's outbound side: the real journal, link and outbox."""

    journal: Journal
    link: Link
    outbox: Outbox
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def connect(self) -> None:
        """Start the link (again)."""
        self.tasks.append(asyncio.create_task(self.link.run()))

    async def disconnect(self) -> None:
        """Stop the link."""
        task = self.tasks.pop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def write(self, n: int, *, final: bool = True) -> list[int]:
        """``n`` check-ins (every tenth an event), final unless told; their seqs."""
        seqs = []
        for i in range(n):
            if i % 10 == 9:
                entry = await self.journal.record_event("door_closed", door="main-in",
                                                        detail={}, at=AT)  # fmt: skip
            else:
                entry = await self.journal.record_decision(decision(f"M{i}"))
                if final:
                    await self.journal.finalise(entry.seq, passed=True, charged=0)
            seqs.append(entry.seq)
        self.outbox.notify()
        return seqs


@contextlib.asynccontextmanager
async def gateway(
    broker: Broker, central: CentralSimulator, path: Path, *, connect: bool = True, **kw: Any
) -> AsyncIterator[Gateway]:
    """A connected gateway whose outbox runs."""
    journal = await Journal.open(path / "journal.sqlite", GW)
    cfg = MqttSection(host="127.0.0.1", port=broker.port, keepalive=5, reconnect_max=0.5)
    link = Link(cfg, SITE, GW, status_payload=lambda: {"state": "online"}, retry_base=0.1)
    gw = Gateway(journal, link, None)  # type: ignore[arg-type]
    gw.outbox = Outbox(
        journal, link, site=SITE, gw=GW, public_key=load_public_key(central.public_key_b64),
        on_event=lambda t, d: gw.events.append((t, d)), **kw,
    )  # fmt: skip

    async def deliver(topic: str, payload: bytes) -> None:
        await gw.outbox.handle(topic, payload)

    link.on_message(deliver)
    link.on_connect(gw.outbox.on_connect)
    runner = asyncio.create_task(gw.outbox.run())
    if connect:
        gw.connect()
        await asyncio.wait_for(link.wait_connected(), 10)
    try:
        yield gw
    finally:
        runner.cancel()
        for task in gw.tasks:
            task.cancel()
        await asyncio.gather(runner, *gw.tasks, return_exceptions=True)
        await journal.close()


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[CentralSimulator]:
    """A central simulator that acks every 20 ms."""
    async with CentralSimulator(port=broker.port, site=SITE, time_interval=None) as c:
        yield c


# --- delivery -----------------------------------------------------------------------------------


async def test_final_records_are_published_in_seq_order_and_pruned_once_acked(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        seqs = await gw.write(30)
        await eventually(lambda: central.received[GW].upto == 30)
        await eventually(lambda: gw.outbox.acked_upto == 30)
        await eventually(lambda: gw.outbox.journal_pruned_upto == 30)  # pruned beside the acks
        assert await gw.journal.pending_count() == 0
    got = central.received[GW]
    assert [m["seq"] for m in got.checkins] == [s for s in seqs if s % 10]
    assert [m["seq"] for m in got.events] == [10, 20, 30]
    assert got.arrivals == seqs  # one stream, in seq order
    assert all(m["gw"] == GW and m["passed"] for m in got.checkins)


async def test_a_record_not_yet_final_does_not_hold_back_the_ones_after_it(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        first = await gw.journal.record_decision(decision())
        await gw.write(3)
        await eventually(lambda: central.received[GW].arrivals == [2, 3, 4])
        await gw.journal.finalise(first.seq, passed=False, charged=0)
        gw.outbox.notify()  # the open one follows when final, and the central acks all
        await eventually(lambda: central.received[GW].arrivals == [2, 3, 4, 1])
        await eventually(lambda: gw.outbox.acked_upto == 4)
        assert central.received[GW].duplicates == 0


async def test_a_new_final_record_is_published_as_soon_as_the_outbox_is_notified(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        await gw.write(1)
        await eventually(lambda: central.received[GW].arrivals == [1])
        await asyncio.sleep(0.2)  # the outbox is idle now
        await gw.write(1)
        await eventually(lambda: central.received[GW].arrivals == [1, 2], within=1.0)


@pytest.mark.slow
async def test_after_an_outage_every_record_arrives_once_in_seq_order_and_is_pruned(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    n = 5000
    async with gateway(broker, central, tmp_path, ack_timeout=5) as gw:
        await gw.write(5)
        await eventually(lambda: gw.outbox.acked_upto == 5)
        broker.stop()
        await eventually(lambda: not gw.link.connected)
        await gw.disconnect()
        await gw.write(n)  # offline
        broker.start()
        await central.wait_connected()
        gw.connect()
        await eventually(lambda: central.received[GW].upto == n + 5, 120)
        await eventually(lambda: gw.outbox.acked_upto == n + 5)
        await eventually(lambda: gw.outbox.journal_pruned_upto == n + 5)  # pruned beside the acks
        assert await gw.journal.pending_count() == 0
    got = central.received[GW]
    assert got.arrivals == list(range(1, n + 6))  # in seq order, none missing
    assert len(got.checkins) + len(got.events) == n + 5  # distinct by id


async def test_what_the_central_does_not_ack_is_published_again_and_kept(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    central.set_ack_mode("none")
    async with gateway(broker, central, tmp_path, ack_timeout=0.3) as gw:
        await gw.write(5)
        await eventually(lambda: central.received[GW].duplicates >= 10)
        assert await gw.journal.pending_count() == 5
        assert central.received[GW].arrivals[:5] == [1, 2, 3, 4, 5]
        central.set_ack_mode("normal")
        await eventually(lambda: gw.outbox.acked_upto == 5, 5)
        await eventually(lambda: gw.outbox.journal_pruned_upto == 5)  # pruned beside the acks
        assert await gw.journal.pending_count() == 0


async def test_late_and_shuffled_acks_prune_up_to_the_highest(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    central.set_ack_mode("shuffled")
    async with gateway(broker, central, tmp_path) as gw:
        await gw.write(40)
        await eventually(lambda: gw.outbox.acked_upto == 40)
        await eventually(lambda: gw.outbox.journal_pruned_upto == 40)  # pruned beside the acks
        assert await gw.journal.pending_count() == 0
        central.set_ack_mode("late", delay=0.5)
        await gw.write(5)
        await eventually(lambda: central.received[GW].upto == 45)
        assert await gw.journal.pending_count() == 5  # not acked yet
        await eventually(lambda: gw.outbox.acked_upto == 45, 5)
    assert sorted(central.received[GW].acks_sent[:40]) != central.received[GW].acks_sent[:40]


async def test_a_forged_ack_prunes_nothing(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    central.set_ack_mode("none")
    async with gateway(broker, central, tmp_path) as gw:
        await gw.write(3)
        await eventually(lambda: central.received[GW].upto == 3)
        forged = seal("ack", SITE, {"upto": 3}, Ed25519PrivateKey.generate(), datetime.now(UTC), GW)
        await central.publish_raw(f"acs/v1/{SITE}/gw/{GW}/checkin/ack", forged)
        await eventually(lambda: gw.events)
        assert gw.events == [
            (
                "bad_message",
                {"topic": f"acs/v1/{SITE}/gw/{GW}/checkin/ack", "reason": "bad signature"},
            )
        ]
        assert await gw.journal.pending_count() == 3 and gw.outbox.acked_upto == 0


async def test_an_ack_beyond_what_was_published_prunes_only_what_was_published(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    central.set_ack_mode("none")
    async with gateway(broker, central, tmp_path) as gw:
        await gw.write(2)
        pending = await gw.journal.record_decision(decision())
        await eventually(lambda: central.received[GW].upto == 2)
        await central.publish_raw(f"acs/v1/{SITE}/gw/{GW}/checkin/ack",
                                  central.seal("ack", {"upto": 99}, GW))  # fmt: skip
        await eventually(lambda: gw.outbox.acked_upto == 2)
        assert await gw.journal.pending_count() == 1
        await gw.journal.finalise(pending.seq, passed=True, charged=0)
        gw.outbox.notify()
        await eventually(lambda: central.received[GW].upto == 3)
