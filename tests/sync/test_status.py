"""PROTOCOL.md, Status and occupancy: retained, on change, status also every 60 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import MqttSection
from gateway.daemon import Gateway
from gateway.sync.link import Link
from gateway.sync.status import OccupancyPublisher, StatusPublisher
from tests.supervision.helpers import load_members, offline_config, running, until
from tests.support.broker import Broker, Watcher, eventually
from tests.support.broker import running as running_task

SITE, GW = "oslo", "gw-1"
STATUS = f"acs/v1/{SITE}/gw/{GW}/status"
OCCUPANCY = f"acs/v1/{SITE}/gw/{GW}/occupancy"
STARTED = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A real gateway (fake board, no broker): its ``status`` is the one status builder."""
    async with running(offline_config(tmp_path)) as gw:
        yield gw


def publisher(gw: Gateway, **kwargs: Any) -> StatusPublisher:
    """A status publisher over the gateway's own status, as the sync runner makes it."""
    return StatusPublisher(SITE, GW, gw.status, refresh=gw.refresh_status, **kwargs)


async def journalled(gw: Gateway, count: int) -> None:
    """Wait until ``count`` records wait in the journal (events are written in background)."""
    await until(lambda: _pending(gw, count))


async def _pending(gw: Gateway, count: int) -> bool:
    return await gw.journal.pending_count() >= count


@dataclass
class Recorder:
    """A link that records publishes."""

    connected: bool = True
    sent: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.sent.append((topic, json.loads(payload), retain))


async def test_status_payload_has_every_field_of_the_protocol(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        load_members(gw, 1)
        await journalled(gw, 1)  # the "started" event waits for the central's ack
        status = await publisher(gw).current()
        pending = await gw.journal.pending_count()
    assert {
        k: status[k]
        for k in ("state", "software", "entitlements_version", "records", "journal_pending")
    } == {
        "state": "online",
        "software": __version__,
        "entitlements_version": 1,
        "records": 1,
        "journal_pending": pending,
    }
    assert datetime.fromisoformat(status["started_at"]) == gw.started_at
    assert status["clock"] == "synced"  # clock = "trusted"
    assert status["doors"] == {
        door: {"mode": "normal", "lock": "locked", "contact": "unknown", "reader": "ok"}
        for door in ("in", "out")
    }


def test_the_gateway_builds_its_status_in_one_place() -> None:
    """Issue 9, defect 8: one status builder (``Gateway.status``), not a second one that
    only tests used and that could drift from what the central system gets."""
    import gateway.sync.status as status_module

    root = Path(__file__).resolve().parents[2] / "gateway"
    builders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if '"journal_pending":' in path.read_text(encoding="utf-8")
    ]
    assert builders == ["daemon.py"]
    assert not hasattr(status_module, "StatusSources")


async def test_status_is_published_retained_on_change_only_until_it_is_due(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        link = Recorder()
        await journalled(gw, 1)
        status = publisher(gw, every_s=3600)
        assert await status.check(link)
        assert not await status.check(link)  # nothing changed, not due
        await gw.set_mode("in", "lockdown")
        assert await status.check(link)
        await journalled(gw, 2)  # the lockdown event
        pending = await gw.journal.pending_count()
        gw.record_event("door_closed", "out", {})
        await journalled(gw, pending + 1)
        assert await status.check(link)
    assert [(t, r) for t, _, r in link.sent] == [(STATUS, True)] * 3
    assert link.sent[1][1]["doors"]["in"]["mode"] == "lockdown"
    assert link.sent[2][1]["journal_pending"] == pending + 1


async def test_status_is_republished_when_due_even_without_change(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        link = Recorder()
        await journalled(gw, 1)
        status = publisher(gw, every_s=0.2, poll_s=0.05)
        task = asyncio.create_task(status.run(link))
        try:
            await eventually(lambda: len(link.sent) >= 3, within=5)
        finally:
            task.cancel()
    same = [{k: v for k, v in msg.items() if k != "loop_lag"} for _, msg, _ in link.sent]
    assert all(msg == same[0] for msg in same)


async def test_a_change_while_offline_is_published_once_the_link_is_back(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        link = Recorder(connected=False)
        status = publisher(gw, every_s=3600)
        load_members(gw, 1)
        assert not await status.check(link)
        link.connected = True
        assert await status.check(link)
    assert link.sent[0][1]["entitlements_version"] == 1


async def test_occupancy_is_published_retained_on_zone_changes_only() -> None:
    now = [datetime(2026, 11, 22, 18, 0, tzinfo=UTC)]
    zones, link = {"gym": 57}, Recorder()
    upto = [41]
    occupancy = OccupancyPublisher(
        SITE, GW, lambda: zones, clock=lambda: now[0], upto_seq=lambda: upto[0]
    )
    assert await occupancy.check(link)
    now[0] = datetime(2026, 11, 22, 18, 5, tzinfo=UTC)
    assert not await occupancy.check(link)  # only the time moved
    zones, upto[0] = {"gym": 58}, 42
    assert await occupancy.check(link)
    assert link.sent == [
        (OCCUPANCY, {"at": "2026-11-22T18:00:00+00:00", "zones": {"gym": 57}, "upto_seq": 41},
         True),
        (OCCUPANCY, {"at": "2026-11-22T18:05:00+00:00", "zones": {"gym": 58}, "upto_seq": 42},
         True),
    ]  # fmt: skip


async def test_status_and_occupancy_reach_the_central_system_retained(
    broker: Broker, tmp_path: Path
) -> None:
    zones = {"gym": 57}
    async with gateway(tmp_path) as gw:
        status = publisher(gw, poll_s=0.05)
        occupancy = OccupancyPublisher(SITE, GW, lambda: zones, clock=lambda: STARTED, poll_s=0.05)
        cfg = MqttSection(host="127.0.0.1", port=broker.port)
        link = Link(cfg, SITE, GW, status_payload=status.payload, retry_base=0.1)

        def mode(central: Watcher) -> str | None:
            last = central.on(STATUS)[-1:]
            return json.loads(last[0].payload)["doors"]["in"]["mode"] if last else None

        async with (
            running_task(link.run()),
            running_task(status.run(link)),
            running_task(occupancy.run(link)),
        ):
            async with Watcher(broker.port, [STATUS, OCCUPANCY]) as central:
                await asyncio.wait_for(link.wait_connected(), 10)
                await central.wait_for(OCCUPANCY)
                await gw.set_mode("in", "lockdown")
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
