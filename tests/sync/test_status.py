"""PROTOCOL.md, Status and occupancy: retained, on change, status also every 60 s."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.config import MqttSection
from gateway.sync.link import Link
from gateway.sync.status import OccupancyPublisher, StatusPublisher, StatusSources
from tests.support.broker import Broker, Watcher, eventually, running

SITE, GW = "oslo", "door-1"
STATUS = f"acs/v1/{SITE}/gw/{GW}/status"
OCCUPANCY = f"acs/v1/{SITE}/gw/{GW}/occupancy"
STARTED = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)


@dataclass
class Gateway:
    """Mutable stand-ins for the store, journal, clock trust and doors."""

    version: int | None = 42
    records: int = 18234
    pending: int = 0
    synced: bool = True
    doors: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "main-in": {"mode": "normal", "lock": "locked", "contact": "closed", "reader": "ok"}
        }
    )
    zones: dict[str, int] = field(default_factory=lambda: {"gym": 57})

    async def pending_count(self) -> int:
        return self.pending

    def sources(self) -> StatusSources:
        return StatusSources(
            software="0.3.0",
            started_at=STARTED,
            entitlements_version=lambda: self.version,
            records=lambda: self.records,
            journal_pending=self.pending_count,
            clock_synced=lambda: self.synced,
            doors=lambda: self.doors,
        )


def publisher(gw: Gateway, **kwargs: Any) -> StatusPublisher:
    """A status publisher reading ``gw``'s sources."""
    sources = gw.sources()
    return StatusPublisher(SITE, GW, sources.payload, refresh=sources.refresh, **kwargs)


@dataclass
class Recorder:
    """A link that records publishes."""

    connected: bool = True
    sent: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.sent.append((topic, json.loads(payload), retain))


async def test_status_payload_has_every_field_of_the_protocol() -> None:
    gw = Gateway(pending=3, synced=False)
    status = publisher(gw)
    assert await status.current() == {
        "state": "online",
        "software": "0.3.0",
        "started_at": "2026-11-22T17:00:00+00:00",
        "entitlements_version": 42,
        "records": 18234,
        "journal_pending": 3,
        "clock": "unsynced",
        "doors": gw.doors,
    }


async def test_status_is_published_retained_on_change_only_until_it_is_due() -> None:
    gw, link = Gateway(), Recorder()
    status = publisher(gw, every_s=3600)
    assert await status.check(link)
    assert not await status.check(link)  # nothing changed, not due
    gw.doors["main-in"]["contact"] = "open"
    assert await status.check(link)
    gw.pending = 5
    assert await status.check(link)
    assert [(t, r) for t, _, r in link.sent] == [(STATUS, True)] * 3
    assert link.sent[1][1]["doors"]["main-in"]["contact"] == "open"
    assert link.sent[2][1]["journal_pending"] == 5


async def test_status_is_republished_when_due_even_without_change() -> None:
    gw, link = Gateway(), Recorder()
    status = publisher(gw, every_s=0.2, poll_s=0.05)
    task = asyncio.create_task(status.run(link))
    try:
        await eventually(lambda: len(link.sent) >= 3, within=5)
    finally:
        task.cancel()
    assert all(msg == link.sent[0][1] for _, msg, _ in link.sent)


async def test_a_change_while_offline_is_published_once_the_link_is_back() -> None:
    gw, link = Gateway(), Recorder(connected=False)
    status = publisher(gw, every_s=3600)
    gw.version = 43
    assert not await status.check(link)
    link.connected = True
    assert await status.check(link)
    assert link.sent[0][1]["entitlements_version"] == 43


async def test_occupancy_is_published_retained_on_zone_changes_only() -> None:
    now = [datetime(2026, 11, 22, 18, 0, tzinfo=UTC)]
    gw, link = Gateway(), Recorder()
    upto = [41]
    occupancy = OccupancyPublisher(
        SITE, GW, lambda: gw.zones, clock=lambda: now[0], upto_seq=lambda: upto[0]
    )
    assert await occupancy.check(link)
    now[0] = datetime(2026, 11, 22, 18, 5, tzinfo=UTC)
    assert not await occupancy.check(link)  # only the time moved
    gw.zones, upto[0] = {"gym": 58}, 42
    assert await occupancy.check(link)
    assert link.sent == [
        (OCCUPANCY, {"at": "2026-11-22T18:00:00+00:00", "zones": {"gym": 57}, "upto_seq": 41},
         True),
        (OCCUPANCY, {"at": "2026-11-22T18:05:00+00:00", "zones": {"gym": 58}, "upto_seq": 42},
         True),
    ]  # fmt: skip


async def test_status_and_occupancy_reach_the_central_system_retained(broker: Broker) -> None:
    gw = Gateway()
    status = publisher(gw, poll_s=0.05)
    occupancy = OccupancyPublisher(SITE, GW, lambda: gw.zones, clock=lambda: STARTED, poll_s=0.05)
    cfg = MqttSection(host="127.0.0.1", port=broker.port)
    link = Link(cfg, SITE, GW, status_payload=status.payload, retry_base=0.1)

    def mode(central: Watcher) -> str | None:
        last = central.on(STATUS)[-1:]
        return json.loads(last[0].payload)["doors"]["main-in"]["mode"] if last else None

    async with running(link.run()), running(status.run(link)), running(occupancy.run(link)):
        async with Watcher(broker.port, [STATUS, OCCUPANCY]) as central:
            await asyncio.wait_for(link.wait_connected(), 10)
            await central.wait_for(OCCUPANCY)
            gw.doors["main-in"]["mode"] = "lockdown"
            status.notify()
            await eventually(lambda: mode(central) == "lockdown")
        async with Watcher(broker.port, [STATUS, OCCUPANCY], identifier="late") as late:
            occupied = await late.wait_for(OCCUPANCY)
            await eventually(lambda: mode(late) == "lockdown")
    assert occupied.retain and json.loads(occupied.payload)["zones"] == {"gym": 57}
    assert late.on(STATUS)[0].retain
    assert json.loads(late.on(STATUS)[0].payload)["state"] == "online"


async def test_a_new_loop_lag_figure_alone_does_not_republish_the_status() -> None:
    lag = {"p99_ms": 0.4}
    base = {"state": "online", "records": 1}
    status = StatusPublisher(SITE, GW, lambda: {**base, "loop_lag": dict(lag)}, every_s=60)
    link = Recorder()
    assert await status.check(link)
    lag["p99_ms"] = 7.5
    assert not await status.check(link)
    base["records"] = 2
    assert await status.check(link)
    assert [p["loop_lag"]["p99_ms"] for _, p, _ in link.sent] == [0.4, 7.5]
