"""PROTOCOL.md, Entitlement sync and Time: a gateway follows the central simulator's set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.context
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import niceness
from gateway.config import MqttSection
from gateway.store import EntitlementStore
from gateway.sync import deltas, entitlement_sync
from gateway.sync.entitlement_sync import EntitlementSync
from gateway.sync.envelopes import load_public_key, seal
from gateway.sync.link import Link
from simulators.central import CentralSimulator, generated_member
from tests.support.broker import Broker, eventually, running
from tests.support.sets import member

SITE, GW = "oslo", "door-1"
DELTA_TOPIC = f"acs/v1/{SITE}/entitlements/delta"
UID = "04A1B2C3"


@dataclass
class Gateway:
    """A gateway's sync side: the real store, link and entitlement sync."""

    store: EntitlementStore
    link: Link
    sync: EntitlementSync
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counted: list[dict[str, int]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def connect(self) -> None:
        """Start the link (again)."""
        self.task = asyncio.create_task(self.link.run())

    async def disconnect(self) -> None:
        """Stop the link, as when the gateway's network goes away."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def bad(self) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t == "bad_message"]


@contextlib.asynccontextmanager
async def gateway(
    broker: Broker, central: CentralSimulator, path: Path, **kw: Any
) -> AsyncIterator[Gateway]:
    """A gateway connected to ``broker`` and synced to ``central`` (until its version)."""
    store = EntitlementStore.open(path / "store.sqlite", b"k" * 32)
    cfg = MqttSection(host="127.0.0.1", port=broker.port, keepalive=5, reconnect_max=0.5)
    link = Link(cfg, SITE, GW, status_payload=lambda: {"state": "online"}, retry_base=0.1)
    gw = Gateway(store, link, None)  # type: ignore[arg-type]
    gw.sync = EntitlementSync(
        store, link, site=SITE, gw=GW, public_key=load_public_key(central.public_key_b64),
        on_event=lambda t, d: gw.events.append((t, d)), on_counted=gw.counted.append,
        on_time=lambda now: gw.times.append(now) or True, on_version=gw.versions.append, **kw,
    )  # fmt: skip

    async def deliver(topic: str, payload: bytes) -> None:
        await gw.sync.handle(topic, payload)

    link.on_message(deliver)
    link.on_connect(gw.sync.on_connect)
    gw.connect()
    try:
        await eventually(lambda: store.version == central.version, 30)
        yield gw
    finally:
        await gw.disconnect()
        await gw.sync.close()
        store.close()


@contextlib.asynccontextmanager
async def small_central(broker: Broker) -> AsyncIterator[CentralSimulator]:
    """A central simulator with ten generated members, sending snapshots in chunks of four."""
    async with CentralSimulator(
        port=broker.port, site=SITE, members=10, chunk_records=4, time_interval=None
    ) as c:
        yield c


def change_everyone(central: CentralSimulator) -> list[dict[str, Any]]:
    """Version 2 at the central: every member's contract is now C-2. Its snapshot's bodies."""
    central.set.records = {f"M{i:07d}": generated_member(i, "2") for i in range(1, 11)}
    central.set.version = 2
    return central.set.snapshot_bodies(4)


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[CentralSimulator]:
    """A central simulator with three generated members and M1 (card 04A1B2C3)."""
    async with CentralSimulator(
        port=broker.port, site=SITE, members=3, records=[member("M1")], time_interval=None
    ) as c:
        yield c


# --- changes at the central system reach the store ------------------------------------------


async def test_a_member_added_frozen_blocked_and_deleted_reaches_the_store_within_1_s(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        card = "04C0FFEE"
        await central.add_member(member("M9", credentials=[{"kind": "nfc", "uid": card}]))
        await eventually(lambda: gw.store.find("nfc", card) is not None, 1.0)
        assert gw.store.find("nfc", card).member == "M9"  # type: ignore[union-attr]

        await central.freeze_contract("M9", "C1", "2026-07-01", "2026-07-31")
        await eventually(lambda: gw.store.member("M9").contracts[0].freezes, 1.0)  # type: ignore[union-attr]

        await central.block("M9", "2026-12-01T00:00:00+01:00", "2026-12-08T00:00:00+01:00")
        await eventually(lambda: gw.store.member("M9").blocks, 1.0)  # type: ignore[union-attr]
        assert gw.store.member("M9").blocks[0].reason == "blacklist"  # type: ignore[union-attr]

        await central.delete("M9")
        await eventually(lambda: gw.store.find("nfc", card) is None, 1.0)
        assert gw.store.member("M9") is None
        await eventually(lambda: gw.versions[-1:] == [5])  # reported once durable
        assert gw.store.version == central.version == 5
        assert gw.versions[-4:] == [2, 3, 4, 5] and gw.bad() == []


async def test_a_ticket_added_at_the_central_system_is_found_by_its_code(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    ticket = {
        "ticket": "T-88812",
        "code": "EVT-88812-XK",
        "uses": 1,
        "valid_from": "2026-11-22T18:00:00+01:00",
        "valid_to": "2026-11-22T23:00:00+01:00",
    }
    async with gateway(broker, central, tmp_path) as gw:
        await central.add_ticket(ticket)
        await eventually(lambda: gw.store.find("code", "EVT-88812-XK") is not None, 1.0)
        assert gw.store.ticket("T-88812") is not None


# --- what is refused --------------------------------------------------------------------------


async def test_a_delta_with_a_bad_signature_changes_nothing_and_is_reported(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    forged = {"version": 2, "base": 1, "upsert": [member("M66")], "delete": ["M1"]}
    async with gateway(broker, central, tmp_path) as gw:
        payload = seal("delta", SITE, forged, Ed25519PrivateKey.generate(), datetime.now(UTC))
        await central.publish_raw(DELTA_TOPIC, payload)
        await eventually(lambda: gw.bad())
        assert gw.bad() == [{"topic": DELTA_TOPIC, "reason": "bad signature"}]
        assert gw.store.version == 1 and gw.store.member("M66") is None
        assert gw.store.find("nfc", UID) is not None


async def test_a_delta_for_another_site_changes_nothing_and_is_reported(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    other = {"version": 2, "base": 1, "upsert": [], "delete": ["M1"]}
    async with gateway(broker, central, tmp_path) as gw:
        payload = seal("delta", "bergen", other, central.key, datetime.now(UTC))
        await central.publish_raw(DELTA_TOPIC, payload)
        await eventually(lambda: gw.bad())
        assert gw.bad() == [{"topic": DELTA_TOPIC, "reason": "for another site"}]
        assert gw.store.version == 1 and gw.store.member("M1") is not None


async def test_an_invalid_delta_is_refused_whole(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    broken = member("M8", contracts=[{"id": "C1", "type": "lifetime", "start": "2026-01-01"}])
    body = {"version": 2, "base": 1, "upsert": [member("M7"), broken], "delete": ["M1"]}
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, central.seal("delta", body))
        await eventually(lambda: gw.bad())
        (bad,) = gw.bad()
        assert bad["topic"] == DELTA_TOPIC and bad["reason"].startswith("invalid set")
        assert "M8" in bad["reason"]
        assert gw.store.version == 1 and gw.store.member("M7") is None
        assert gw.store.member("M1") is not None


async def test_a_payload_that_is_not_json_is_reported_without_its_content(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, b'{"secret-uid": "04A1B2C3D4"')
        await eventually(lambda: gw.bad())
        assert gw.bad() == [{"topic": DELTA_TOPIC, "reason": "not valid JSON in UTF-8"}]
        assert "04A1B2C3D4" not in json.dumps(gw.events)


# --- gaps ---------------------------------------------------------------------------------------


async def test_missed_deltas_are_asked_for_and_applied_in_order(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        for i in (10, 11, 12):  # lost on the way: the gateway never sees them
            await central.update([generated_member(i)], publish=False)
        await central.update([generated_member(13)])  # base 4: the gateway is at 1
        await eventually(lambda: gw.versions[-1:] == [5])
        assert all(gw.store.member(f"M{i:07d}") is not None for i in (10, 11, 12, 13))
    assert [s["why"] for s in central.received[GW].syncs] == ["startup", "gap"]
    assert central.received[GW].syncs[1]["have"] == 1
    assert gw.versions == [1, 2, 3, 4, 5]
    assert gw.sync.buffered == {}


async def test_deltas_missed_while_disconnected_are_caught_up_after_reconnecting(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        await gw.disconnect()
        for i in (20, 21):  # the gateway's session has expired: nobody keeps these for it
            await central.update([generated_member(i)], publish=False)
        await central.update(delete=["M1"], publish=False)
        gw.connect()
        await eventually(lambda: gw.store.version == 4)
        assert gw.store.member("M0000021") is not None and gw.store.find("nfc", UID) is None
    assert central.received[GW].syncs[-1] == {"have": 1, "why": "reconnect"}


async def test_after_a_broker_restart_the_next_time_envelope_brings_the_gateway_up_to_date(
    broker: Broker, tmp_path: Path
) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=3,
                                time_interval=0.3) as central:  # fmt: skip
        async with gateway(broker, central, tmp_path) as gw:
            broker.stop()  # sessions and subscriptions go with it
            await eventually(lambda: not gw.link.connected)
            await central.update([generated_member(20)], publish=False)
            broker.start()
            await eventually(lambda: gw.store.version == 2, 15)
            assert gw.store.member("M0000020") is not None


async def test_a_gateway_with_an_empty_store_starts_from_a_snapshot(
    broker: Broker, tmp_path: Path
) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=4100,
                                time_interval=None) as central:  # fmt: skip
        async with gateway(broker, central, tmp_path) as gw:
            assert gw.store.record_count == 4100
            assert gw.store.find("code", "CODE-4100").member == "M0004100"  # type: ignore[union-attr]
    assert central.received[GW].syncs[0] == {"have": None, "why": "startup"}


# --- snapshots are applied atomically -----------------------------------------------------------


@pytest.mark.slow
async def test_a_50000_member_snapshot_replaces_the_set_at_once_while_decisions_run(
    broker: Broker, tmp_path: Path
) -> None:
    n = 50_000
    async with CentralSimulator(port=broker.port, site=SITE, members=n,
                                time_interval=None) as central:  # fmt: skip
        async with gateway(broker, central, tmp_path) as gw:
            # Version 2 gives every member the contract "C-2" (version 1: "C-1").
            central.set.records = {f"M{i:07d}": generated_member(i, "2") for i in range(1, n + 1)}
            central.set.version += 1
            central.set.deltas.clear()  # no delta to offer: the answer is a snapshot
            seen: list[tuple[str, str]] = []
            done = asyncio.Event()

            async def decide_continuously() -> None:
                i = 0
                while not done.is_set():
                    i = (i * 7919 + 1) % n  # members from all over the set
                    first = gw.store.find("nfc", f"04{1 + i:012X}")
                    last = gw.store.find("code", f"CODE-{n - i}")
                    assert first is not None and last is not None
                    seen.append((first.contracts[0].id, last.contracts[0].id))
                    await asyncio.sleep(0)

            reader = asyncio.create_task(decide_continuously())
            await gw.sync.request("installer")
            await eventually(lambda: gw.store.version == 2, 120)
            await asyncio.sleep(0.05)
            done.set()
            await reader
            assert gw.store.record_count == n
    tags = [tag for pair in seen for tag in pair]  # in the order the lookups ran
    assert tags[0] == "C-1" and tags[-1] == "C-2"
    # never a mix: each lookup sees the old set or the new one, and once the new set shows,
    # the old one never comes back (the switch may fall between two lookups of one pair)
    switch = tags.index("C-2")
    assert set(tags[:switch]) == {"C-1"} and set(tags[switch:]) == {"C-2"}
    assert sum(a != b for a, b in seen) <= 1


async def test_a_snapshot_is_applied_only_once_all_its_chunks_are_in(
    broker: Broker, tmp_path: Path
) -> None:
    async with small_central(broker) as central, gateway(broker, central, tmp_path) as gw:
        bodies = change_everyone(central)
        assert len(bodies) == 3
        await central.send_snapshot(GW, [bodies[2], bodies[1]])  # chunk 0 not yet
        await asyncio.sleep(0.3)
        assert gw.store.version == 1
        assert gw.store.member("M0000010").contracts[0].id == "C-1"  # type: ignore[union-attr]
        await central.send_snapshot(GW, [bodies[0]])
        await eventually(lambda: gw.store.version == 2)
        assert gw.store.member("M0000010").contracts[0].id == "C-2"  # type: ignore[union-attr]


async def test_a_snapshot_that_stops_arriving_is_given_up_with_its_staged_file(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entitlement_sync, "SNAPSHOT_PATIENCE_S", 0.5)
    async with small_central(broker) as central, gateway(broker, central, tmp_path) as gw:
        bodies = change_everyone(central)
        await central.send_snapshot(GW, bodies[:1])
        staged = Path(gw.store.staging().path)
        await eventually(staged.exists)
        await eventually(lambda: not gw.sync.builder.running and not staged.exists(), 5)
        assert gw.store.version == 1


async def test_a_snapshot_builder_that_dies_is_reported_and_the_snapshot_asked_for_again(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with small_central(broker) as central, gateway(broker, central, tmp_path) as gw:
        bodies = change_everyone(central)
        await central.send_snapshot(GW, [bodies[0]])
        await eventually(lambda: gw.sync.builder.running)
        gw.sync.builder._proc.kill()  # type: ignore[union-attr]  # as the OOM killer would
        await asyncio.sleep(0.2)
        syncs = len(central.received[GW].syncs)
        await central.send_snapshot(GW, bodies[1:])
        await eventually(lambda: "snapshot builder process ended" in caplog.text)
        assert gw.store.version == 1 and gw.bad() == []
        await gw.sync.on_connect()  # the next sync asks for a whole snapshot
        await eventually(lambda: gw.store.version == 2)
        assert central.received[GW].syncs[syncs]["have"] is None


# --- counted check-ins, time, periodic sync -------------------------------------------------------


async def test_checkins_upto_goes_to_the_store_and_the_local_state(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        central.set.checkins_upto = {"door-1": 41, "door-2": 7}
        await central.add_member(member("M5", credentials=[]))
        await eventually(lambda: gw.counted)
        assert gw.counted[-1] == {"door-1": 41, "door-2": 7}
        assert gw.store.checkins_upto == {"door-1": 41, "door-2": 7}


async def test_a_time_envelope_confirms_a_current_set_and_sets_clock_trust(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        await central.send_time()
        await eventually(lambda: gw.times)
        before = gw.store.updated_at
        await asyncio.sleep(0.01)
        await central.send_time()
        await eventually(lambda: len(gw.times) == 2)
        await eventually(lambda: gw.store.updated_at != before)
        assert gw.store.updated_at is not None and before is not None
        assert gw.store.updated_at > before
        assert abs(gw.times[-1] - datetime.now(UTC)) < timedelta(seconds=5)


async def test_a_time_envelope_not_newer_than_the_last_is_ignored_silently(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    """Clarifications, Time: an old or repeated ``time`` is no ``bad_message``; it is not used."""
    async with gateway(broker, central, tmp_path) as gw:
        old = seal("time", SITE, {"now": "2026-01-01T00:00:00+00:00", "version": 1},
                   central.key, datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
        await central.send_time()
        await eventually(lambda: gw.times)
        await central.publish_raw(f"acs/v1/{SITE}/time", old)
        await asyncio.sleep(0.01)
        await central.send_time()  # after the old one: once it is used, the old one was seen
        await eventually(lambda: len(gw.times) == 2)
        assert gw.bad() == [] and datetime(2026, 1, 1, tzinfo=UTC) not in gw.times


async def test_a_time_envelope_naming_a_newer_version_makes_the_gateway_catch_up(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path) as gw:
        await central.update([generated_member(30)], publish=False)
        await central.send_time()
        await eventually(lambda: gw.store.version == 2)
    assert central.received[GW].syncs[-1] == {"have": 1, "why": "gap"}


async def test_sync_is_sent_every_sync_interval(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    async with gateway(broker, central, tmp_path, sync_interval=0.1) as gw:
        async with running(gw.sync.run()):
            await central.wait_until(
                lambda: [s["why"] for s in central.received[GW].syncs].count("periodic") >= 2
            )
    assert central.received[GW].syncs[0]["why"] == "startup"


async def test_a_snapshot_with_an_invalid_record_in_its_last_chunk_changes_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    async with CentralSimulator(
        port=broker.port, site=SITE, members=10, chunk_records=4, time_interval=None
    ) as central:
        async with gateway(broker, central, tmp_path) as gw:
            central.set.records = {f"M{i:07d}": generated_member(i, "2") for i in range(1, 11)}
            central.set.records["M0000010"]["contracts"][0]["type"] = "lifetime"
            central.set.version = 2
            await central.send_snapshot(GW)
            await eventually(lambda: gw.bad())
            assert gw.bad()[0]["reason"].startswith("invalid set")
            assert "M0000010" in gw.bad()[0]["reason"]
            assert gw.store.version == 1 and gw.store.record_count == 10
            assert gw.store.member("M0000001").contracts[0].id == "C-1"  # type: ignore[union-attr]


# --- a big delta is opened in a worker process ------------------------------------------------


def big_delta(n: int = 2000) -> dict[str, Any]:
    """Version 2: ``n`` new members (about 250 bytes each: well over OFF_PROCESS)."""
    return {"version": 2, "base": 1, "upsert": [generated_member(i) for i in range(100, 100 + n)],
            "delete": ["M1"]}  # fmt: skip


async def test_a_big_delta_is_opened_validated_and_encoded_in_a_worker_process(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    payload = central.seal("delta", big_delta())
    assert len(payload) > deltas.OFF_PROCESS
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, payload)
        await eventually(lambda: gw.store.version == 2, 30)
        assert gw.sync.deltas.opened_in_process == 1 and gw.bad() == []
        pool = gw.sync.deltas._pool  # the worker runs behind the doors (gateway.niceness)
        assert pool is not None and pool._processes
        behind = min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness.BACKGROUND)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pool._processes} == {behind}
        found = gw.store.find("nfc", f"04{1899:012X}")  # encoded with our HMAC key
        assert found is not None and found.id == "M0001899"
        assert gw.store.find("code", "CODE-100").id == "M0000100"  # type: ignore[union-attr]
        assert gw.store.member("M1") is None and gw.store.find("nfc", UID) is None
        assert gw.store.record_count == 3 + 2000


async def test_the_worker_process_is_started_off_the_event_loop(
    broker: Broker, central: CentralSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a process forks the daemon: on the doors' loop, that stalled it 13-65 ms."""
    started_on_a_loop: list[bool] = []
    spawn_start = multiprocessing.context.SpawnProcess.start

    def start(process: Any) -> None:
        started_on_a_loop.append(asyncio._get_running_loop() is not None)
        spawn_start(process)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start)
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, central.seal("delta", big_delta()))
        await eventually(lambda: gw.store.version == 2, 30)
        assert gw.sync.deltas.opened_in_process == 1 and gw.bad() == []
    assert started_on_a_loop and not any(started_on_a_loop)


async def test_a_big_invalid_or_forged_delta_is_refused_whole_by_the_worker_process(
    broker: Broker, central: CentralSimulator, tmp_path: Path
) -> None:
    broken = big_delta()
    broken["upsert"][1500]["contracts"][0]["type"] = "lifetime"
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, central.seal("delta", broken))
        forged = seal("delta", SITE, big_delta(), Ed25519PrivateKey.generate(), datetime.now(UTC))
        await central.publish_raw(DELTA_TOPIC, forged)
        await eventually(lambda: len(gw.bad()) == 2, 30)
        invalid, bad_sig = gw.bad()
        assert invalid["reason"].startswith("invalid set") and "records[1500]" in invalid["reason"]
        assert bad_sig == {"topic": DELTA_TOPIC, "reason": "bad signature"}
        assert gw.sync.deltas.opened_in_process == 2
        assert gw.store.version == 1 and gw.store.member("M0000100") is None
        assert gw.store.find("nfc", UID) is not None


async def test_a_big_delta_is_still_applied_when_no_worker_process_can_start(
    broker: Broker, central: CentralSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: Any, **kwargs: Any) -> None:
        raise OSError("no semaphore left")  # as in a sandbox without /dev/shm

    monkeypatch.setattr(deltas.concurrent.futures, "ProcessPoolExecutor", no_process)
    async with gateway(broker, central, tmp_path) as gw:
        await central.publish_raw(DELTA_TOPIC, central.seal("delta", big_delta()))
        await eventually(lambda: gw.store.version == 2, 30)
        assert gw.sync.deltas.opened_in_process == 0 and gw.bad() == []
        assert gw.store.find("nfc", f"04{1899:012X}").id == "M0001899"  # type: ignore[union-attr]
