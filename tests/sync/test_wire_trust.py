"""PROTOCOL.md, Clarifications and Trust between gateways, on the wire: envelopes bound to their
gateway, size before parsing, bad strings and nesting, versions, time, commands.

Each test runs a whole gateway against a real Mosquitto; the "central" is either the central
simulator or a bare MQTT client publishing exactly what the test says, in the order it says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import passes
from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.errors import BadMessage
from gateway.readers import CredentialRead
from gateway.sync import envelopes
from gateway.sync.commands import SeenCommands
from gateway.sync.envelopes import open_envelope, open_envelope_off_loop, public_key_b64, seal
from simulators.central import CentralSimulator
from tests.integration.gateways import RULES, SITE, config, member, running
from tests.support.broker import Broker, Watcher, eventually

GW, OTHER = "door-1", "door-2"
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def t(*parts: str) -> str:
    return "/".join(("acs/v1", SITE, *parts))


def bad_messages(gw: Gateway) -> list[dict[str, Any]]:
    """The ``bad_message`` events the gateway recorded (topic and reason)."""
    return [
        dict(i["detail"])
        for i in gw.activity.items
        if i["kind"] == "event" and i.get("type") == "bad_message"
    ]


def events(gw: Gateway, type_: str) -> list[dict[str, Any]]:
    return [
        dict(i["detail"]) for i in gw.activity.items if i["kind"] == "event" and i["type"] == type_
    ]


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[CentralSimulator]:
    async with CentralSimulator(
        "127.0.0.1",
        broker.port,
        SITE,
        key=KEY,
        rules=RULES,
        records=[member(1), member(2)],
        time_interval=None,
    ) as sim:
        yield sim


@contextlib.asynccontextmanager
async def synced(
    tmp_path: Path, broker: Broker, central: CentralSimulator, text: str | None = None
) -> AsyncIterator[Gateway]:
    text = text or config(tmp_path / GW, GW, broker.port, central.public_key_b64)
    async with running(text) as gw:
        await eventually(lambda: gw.store.version == central.version and gw.link_up(), 20)
        yield gw


async def quiet(gw: Gateway, central: CentralSimulator) -> None:
    """Wait until everything published before has been handled: a fresh ``time`` envelope
    sent now comes after it on the same connection, and its version confirmation shows."""
    before = gw.store.updated_at
    await asyncio.sleep(0.01)
    await central.send_time(GW)
    await eventually(lambda: gw.store.updated_at != before)


# --- 3: envelopes bound to their gateway --------------------------------------------------


def test_an_envelope_on_a_gateway_topic_must_name_that_gateway() -> None:
    at = datetime.now(UTC)
    body = {"upto": 1}
    topic = t("gw", GW, "checkin/ack")
    ours = open_envelope(seal("ack", SITE, body, KEY, at, GW), public_key=PUB, site=SITE,
                         topic=topic)  # fmt: skip
    assert ours.gw == GW
    for gw, why in ((None, "gw missing"), (OTHER, "for another gateway")):
        with pytest.raises(BadMessage) as err:
            open_envelope(seal("ack", SITE, body, KEY, at, gw), public_key=PUB, site=SITE,
                          topic=topic)  # fmt: skip
        assert why in err.value.reason
    site_wide = seal("delta", SITE, {"version": 2, "base": 1}, KEY, at)
    assert open_envelope(site_wide, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))


async def test_a_command_signed_for_another_gateway_opens_nothing_and_gets_no_result(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        body = {"id": "c-copied", "op": "open", "door": "in", "seconds": 1}
        for_door_2 = seal("command", SITE, body, KEY, datetime.now(UTC), OTHER)
        unbound = seal("command", SITE, {**body, "id": "c-unbound"}, KEY, datetime.now(UTC))
        await central.publish_raw(t("gw", GW, "cmd"), for_door_2)
        await central.publish_raw(t("gw", GW, "cmd"), unbound)
        await eventually(lambda: len(bad_messages(gw)) == 2)
        await central.send_command(GW, "lockdown", "out")  # an authentic one, after them
        await eventually(lambda: central.received[GW].results)
        assert [r["id"] for r in central.received[GW].results] != ["c-copied"]
        assert len(central.received[GW].results) == 1
        assert True not in [c.on for c in gw.boards["io"].changes(0)]
        reasons = [b["reason"] for b in bad_messages(gw)]
        assert "another gateway" in reasons[0] and "gw missing" in reasons[1]


async def test_an_ack_for_another_gateway_prunes_nothing(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    central.set_ack_mode("none")
    async with synced(tmp_path, broker, central) as gw:
        await eventually(lambda: central.received[GW].upto >= 1)  # the `started` event
        copied = seal("ack", SITE, {"upto": 1}, KEY, datetime.now(UTC), OTHER)
        await central.publish_raw(t("gw", GW, "checkin/ack"), copied)
        await eventually(lambda: bad_messages(gw))
        assert gw.sync.outbox.acked_upto == 0
        assert await gw.journal.pending_count() >= 1


# --- 8: lone surrogates and deep nesting --------------------------------------------------


def signed_bytes(unsigned: bytes) -> bytes:
    """An envelope as a central would send it, signed over exactly ``unsigned``'s bytes."""
    sig = base64.urlsafe_b64encode(KEY.sign(unsigned)).rstrip(b"=")
    return unsigned[:-1] + b',"sig":"' + sig + b'"}'


def with_surrogate(gw: str | None = None) -> bytes:
    at = datetime.now(UTC).isoformat().encode()
    gw_part = b'"gw":"' + gw.encode() + b'",' if gw else b""
    return signed_bytes(
        b'{"body":{"base":1,"upsert":[{"member":"M\\ud800","credentials":[],"contracts":[]}],'
        b'"version":2},' + gw_part + b'"issued_at":"' + at + b'","site":"' + SITE.encode()
        + b'","type":"delta"}'
    )  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [with_surrogate(), b"[" * 3000 + b"]" * 3000, b'{"a":' * 3000 + b"1" + b"}" * 3000],
    ids=["lone surrogate", "nested lists", "nested objects"],
)
def test_bad_strings_and_deep_nesting_are_bad_messages(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        open_envelope(payload, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))


async def test_a_signed_delta_with_a_lone_surrogate_is_refused_once(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        await central.publish_raw(t("entitlements", "delta"), with_surrogate())
        await central.publish_raw(t("gw", OTHER, "occupancy"), b"[" * 4000)
        await eventually(lambda: len(bad_messages(gw)) == 2)
        await quiet(gw, central)
        reasons = sorted(b["reason"] for b in bad_messages(gw))
        assert "surrogate" in reasons[0] and "JSON" in reasons[1]
        assert gw.store.version == central.version  # nothing of it applied


# --- 5: size before parsing, big bodies off the loop --------------------------------------


@pytest.mark.parametrize(
    ("kind", "limit"),
    [("gw/door-2/occupancy", 4096), ("time", 4096), ("gw/door-1/cmd", 65536),
     ("gw/door-1/checkin/ack", 4096), ("gw/door-2/checkin", 16384)],
)  # fmt: skip
async def test_a_message_over_its_topic_limit_is_dropped_before_parsing(
    tmp_path: Path, broker: Broker, central: CentralSimulator, kind: str, limit: int
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        await central.publish_raw(t(*kind.split("/")), b"{" + b" " * limit + b"}")
        await eventually(lambda: bad_messages(gw))
        [bad] = bad_messages(gw)
        assert bad["reason"] == f"too large: {limit + 2} bytes, the limit is {limit}"


def test_an_unsigned_16_mib_delta_is_refused_without_being_parsed() -> None:
    """A flood of tiny objects costs ~100 bytes each once parsed: 16 MiB would be ~500 MiB."""
    head = b'{"body":{"base":1,"upsert":['
    tail = b'],"version":2},"issued_at":"2026-12-01T00:00:00+00:00","site":"' + SITE.encode()
    tail += b'","sig":"' + b"A" * 86 + b'","type":"delta"}'
    payload = head + b"{}," * ((16 * 2**20 - len(head) - len(tail)) // 3 - 1) + b"{}" + tail
    assert len(payload) <= 16 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(BadMessage, match="bad signature"):
            open_envelope(payload, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one copy of the bytes for the signature check; parsing it would take ~500 MiB
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated to refuse it"


def test_a_big_signed_envelope_in_canonical_form_opens() -> None:
    records = [{"member": f"M{i}", "credentials": [], "contracts": []} for i in range(30_000)]
    body = {"version": 2, "base": 1, "upsert": records}
    payload = seal("delta", SITE, body, KEY, datetime.now(UTC))
    assert len(payload) > envelopes.VERIFY_BEFORE_PARSE
    env = open_envelope(payload, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))
    assert env.body == body
    tampered = payload.replace(b'"M29999"', b'"M29998"')
    with pytest.raises(BadMessage, match="bad signature"):
        open_envelope(tampered, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))


def test_a_big_signed_envelope_in_another_json_layout_opens_too() -> None:
    """The spec signs the canonical form; an independent central may send any layout."""
    records = [{"member": f"M{i:06d}", "credentials": [{"kind": "nfc", "value": f"04{i:012X}"}],
                "contracts": []} for i in range(15_000)]  # fmt: skip
    body = {"version": 2, "base": 1, "upsert": records}
    unsigned = {"type": "delta", "site": SITE, "issued_at": datetime.now(UTC).isoformat(),
                "body": body}  # fmt: skip
    sig = json.loads(seal("delta", SITE, body, KEY, datetime.fromisoformat(unsigned["issued_at"])))
    payload = json.dumps({**unsigned, "sig": sig["sig"]}, indent=1).encode()  # not canonical
    assert len(payload) > envelopes.VERIFY_BEFORE_PARSE
    env = open_envelope(payload, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))
    assert env.body == body
    tampered = payload.replace(b'"M014999"', b'"M014998"')
    with pytest.raises(BadMessage, match="bad signature"):
        open_envelope(tampered, public_key=PUB, site=SITE, topic=t("entitlements", "delta"))


async def test_a_body_over_64_kib_is_opened_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = envelopes.open_envelope

    def spy(payload: bytes, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return real(payload, **kw)

    monkeypatch.setattr(envelopes, "open_envelope", spy)
    small = seal("delta", SITE, {"version": 2, "base": 1}, KEY, datetime.now(UTC))
    big = seal("delta", SITE, {"version": 2, "base": 1, "x": "y" * 70_000}, KEY, datetime.now(UTC))
    for payload in (small, big):
        await open_envelope_off_loop(
            payload, public_key=PUB, site=SITE, topic=t("entitlements", "delta")
        )
    assert threads[0] == threading.get_ident() != threads[1]


# --- 9, 14: versions ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def with_bare_central(
    tmp_path: Path, broker: Broker
) -> AsyncIterator[tuple[Watcher, Gateway]]:
    """A gateway and a central that answers nothing: the test publishes what it wants, in
    its order."""
    async with Watcher(broker.port, [t("gw", "+", "#")]) as central:
        text = config(tmp_path / GW, GW, broker.port, public_key_b64(PUB))
        async with running(text) as gw:
            await eventually(gw.link_up)
            yield central, gw


def snapshot(version: int, records: list[dict[str, Any]]) -> bytes:
    body = {"version": version, "chunk": 0, "chunks": 1, "records": records,
            "rules": RULES, "checkins_upto": {}}  # fmt: skip
    return seal("snapshot", SITE, body, KEY, datetime.now(UTC), GW)


def delta(version: int, upsert: list[dict[str, Any]], gw: str | None = None) -> bytes:
    body = {"version": version, "base": version - 1, "upsert": upsert, "delete": []}
    return seal("delta", SITE, body, KEY, datetime.now(UTC), gw)


async def test_a_delta_before_the_first_snapshot_is_kept_and_applied_after_it(
    tmp_path: Path, broker: Broker
) -> None:
    async with with_bare_central(tmp_path, broker) as (central, gw):
        await central.publish(t("entitlements", "delta"), delta(2, [member(2)]))
        await asyncio.sleep(0.3)
        await central.publish(t("gw", GW, "snapshot"), snapshot(1, [member(1)]))
        await eventually(lambda: gw.store.version == 2)
        assert gw.store.member("M2") is not None and bad_messages(gw) == []


async def test_old_duplicate_and_rolled_back_versions_are_silent_no_ops(
    tmp_path: Path, broker: Broker
) -> None:
    async with with_bare_central(tmp_path, broker) as (central, gw):
        await central.publish(t("gw", GW, "snapshot"), snapshot(3, [member(1)]))
        await eventually(lambda: gw.store.version == 3)
        syncs = len(central.on(t("gw", GW, "sync")))
        invalid = [{"member": "M9", "credentials": "not a list", "contracts": []}]
        await central.publish(t("entitlements", "delta"), delta(3, invalid))  # duplicate
        await central.publish(t("entitlements", "delta"), delta(2, [member(2)]))  # late
        await central.publish(t("gw", GW, "snapshot"), snapshot(1, [member(5)]))  # rollback
        await central.publish(t("entitlements", "delta"), delta(4, [member(4)]))
        await eventually(lambda: gw.store.version == 4)
        await asyncio.sleep(0.2)
        assert bad_messages(gw) == [] and len(central.on(t("gw", GW, "sync"))) == syncs
        assert gw.store.member("M5") is None and gw.store.member("M2") is None


async def test_an_envelope_on_the_wrong_topic_is_wrong_topic_and_a_command_gets_no_result(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        at = datetime.now(UTC)
        await central.publish_raw(t("gw", GW, "cmd"), delta(central.version + 1, [], GW))
        await central.publish_raw(
            t("gw", GW, "delta"), seal("command", SITE, {"id": "x", "op": "open"}, KEY, at, GW)
        )
        await eventually(lambda: len(bad_messages(gw)) == 2)
        assert all(b["reason"].startswith("wrong_topic") for b in bad_messages(gw))
        await asyncio.sleep(0.2)
        assert central.received[GW].results == []


# --- 10: a time not newer than the last one -----------------------------------------------


async def test_two_time_envelopes_of_the_same_second_are_no_bad_message(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        now = datetime.now(UTC)
        same = seal("time", SITE, {"now": now.isoformat(), "version": central.version}, KEY, now)
        await central.publish_raw(t("time"), same)
        await central.publish_raw(t("time"), same)
        await quiet(gw, central)
        assert bad_messages(gw) == []


# --- 14: commands -------------------------------------------------------------------------


async def test_a_stale_command_id_cannot_come_back_fresh(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        old = datetime.now(UTC) - timedelta(minutes=5)
        await central.send_command(GW, "open", "in", 1, command_id="c-1", issued_at=old)
        await central.send_command(GW, "open", "in", 1, command_id="c-1")
        await central.wait_until(lambda: len(central.received[GW].results) == 2)
        first, second = central.received[GW].results
        assert (first["error"], second["error"]) == ("stale", "replayed")
        assert "clock" in first["detail"] and second["detail"]
        assert True not in [c.on for c in gw.boards["io"].changes(0)]


def test_command_ids_are_remembered_24_hours_and_across_restarts(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "commands.sqlite"
    first = SeenCommands(path, wall=lambda: now[0])
    assert first._add("c-1")
    first.close()
    now[0] += 23 * 3600
    again = SeenCommands(path, wall=lambda: now[0])
    assert not again._add("c-1")
    now[0] += 3600 + 1
    assert again._add("c-1")  # 24 h after it was first seen
    again.close()


async def test_open_is_answered_when_the_lock_is_released_not_after_the_passage(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    text = config(tmp_path / GW, GW, broker.port, central.public_key_b64).replace(
        'lock = { board = "io", index = 0 }\nunlock_seconds = 0.2',
        'lock = { board = "io", index = 0 }\npassage = { board = "io", index = 5 }\n'
        "unlock_seconds = 0.2\npass_timeout = 30",
    )
    async with synced(tmp_path, broker, central, text) as gw:
        gw.boards["io"].set_input(5, False)  # the sensor's level is known: nobody there
        await central.send_command(GW, "open", "in", 1)
        await central.wait_until(lambda: central.received[GW].results, within=20)
        assert central.received[GW].results[0]["ok"] is True
        assert True in [c.on for c in gw.boards["io"].changes(0)]
        # the inbound side is free while the passage is awaited: a change applies at once
        await central.add_member(member(7))
        await eventually(lambda: gw.store.member("M7") is not None)
        assert central.received[GW].checkins == []  # still waiting for the passage
        gw.boards["io"].set_input(5, True)
        [checkin] = await central.wait_checkins(GW, 1)
        assert (checkin["reason"], checkin["passed"]) == ("remote_open", True)


async def test_open_at_a_door_whose_board_is_away_fails_with_detail(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        gw.boards["io"].unplug()
        await central.send_command(GW, "open", "in", 1)
        await central.wait_until(lambda: central.received[GW].results, within=20)
        [outcome] = central.received[GW].results
        assert (outcome["ok"], outcome["error"]) == (False, "failed") and outcome["detail"]


# --- issue 9, 6: inbound dispatched by concern --------------------------------------------


async def test_a_slow_command_holds_up_neither_deltas_nor_time(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        gw.boards["io"].write_delay = 3.0  # the relay bus is slow: the lock takes 3 s to move
        await central.send_command(GW, "open", "in", 1)
        await asyncio.sleep(0.2)
        await central.add_member(member(8))
        await eventually(lambda: gw.store.member("M8") is not None, within=2.5)
        assert central.received[GW].results == []  # the command is still at the lock
        await central.wait_until(lambda: central.received[GW].results, within=10)
        assert central.received[GW].results[0]["ok"] is True
        gw.boards["io"].write_delay = 0.0


# --- 6: clock trust -------------------------------------------------------------------------

PHONE = Ed25519PrivateKey.generate()


def with_phone(n: int) -> dict[str, Any]:
    return member(
        n,
        credentials=[{"kind": "phone", "device": "dev-1", "key": passes.public_key_b64(PHONE),
                      "bound_at": "2026-01-01T00:00:00+00:00"}],
    )  # fmt: skip


class SteppedClock:
    """The gateway's wall clock, stepped by the test while its monotonic clock runs on."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_a_stepped_clock_withdraws_central_trust_and_no_stale_pass_gets_in(
    tmp_path: Path, broker: Broker
) -> None:
    records = [member(1), with_phone(3)]
    async with CentralSimulator(
        "127.0.0.1", broker.port, SITE, key=KEY, rules=RULES, records=records, time_interval=None
    ) as central:
        text = config(tmp_path / GW, GW, broker.port, central.public_key_b64)
        text = text.replace('clock = "trusted"', 'clock = "central"')
        clock = SteppedClock()
        gateway = Gateway(parse_config(text, "test"), now=clock)
        await gateway.start()
        try:
            await eventually(lambda: gateway.store.version == central.version, 20)
            assert gateway.status()["clock"] == "unsynced"  # nothing has vouched for it yet
            await central.send_time()
            await eventually(lambda: gateway.state.clock_synced)
            board = gateway.boards["io"]
            for step in (timedelta(hours=-1), timedelta(hours=1), timedelta(days=365),
                         datetime(1970, 1, 1, tzinfo=UTC) - datetime.now(UTC)):  # fmt: skip
                clock.offset = step
                await eventually(lambda: not gateway.state.clock_synced, within=2)
                assert gateway.status()["clock"] == "unsynced"
                # a pass made for the gateway's (wrong) time is refused: no clock, no pass
                token = passes.make_pass(PHONE, "M3", "dev-1", int(clock().timestamp()))
                refused = await present_at(gateway, "pass", token)
                assert refused["decision"] == "denied"
                # the door's timers run on the monotonic clock: a release still relocks
                before = len(board.changes(0))
                await gateway.doors["in"].release()
                await eventually(lambda b=before: moves(board, b) == [True, False], within=3)
                clock.offset = timedelta(0)
                await asyncio.sleep(0.01)
                await central.send_time()  # agrees again: trusted again
                await eventually(lambda: gateway.state.clock_synced)
            unsynced = events(gateway, "clock_unsynced")
            assert len(unsynced) >= 4 and all("stepped" in e["reason"] for e in unsynced[:4])
        finally:
            await gateway.stop()


async def test_an_old_time_replayed_after_a_restart_confirms_nothing(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    text = config(tmp_path / GW, GW, broker.port, central.public_key_b64)
    five_days_ago = datetime.now(UTC) - timedelta(days=5)
    old = seal("time", SITE, {"now": five_days_ago.isoformat(), "version": central.version},
               KEY, five_days_ago)  # fmt: skip
    async with synced(tmp_path, broker, central, text) as first:
        await quiet(first, central)  # a fresh time was used, and kept
    async with synced(tmp_path, broker, central, text) as again:
        await quiet(again, central)
        await asyncio.sleep(0.5)  # the answer to its start-up sync (a time) is in too
        confirmed = again.store.updated_at
        await central.publish_raw(t("time"), old)
        await asyncio.sleep(0.5)
        assert again.store.updated_at == confirmed and bad_messages(again) == []


def moves(board: Any, after: int) -> list[bool]:
    return [c.on for c in board.changes(0)][after:]


async def present_at(gateway: Gateway, kind: str, value: str) -> dict[str, Any]:
    read = CredentialRead("test-reader", kind, value, gateway.now())  # type: ignore[arg-type]
    return await gateway.entrances["in"].present(read)


# --- 14: config_changed at start ------------------------------------------------------------


async def test_a_start_with_a_changed_config_says_which_keys_changed_never_a_value(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    text = config(tmp_path / GW, GW, broker.port, central.public_key_b64)
    async with synced(tmp_path, broker, central, text) as first:
        assert events(first, "config_changed") == []  # a first start: nothing to compare
    async with synced(tmp_path, broker, central, text) as same:
        assert events(same, "config_changed") == []
    changed = text.replace("unlock_seconds = 0.2", "unlock_seconds = 0.7", 1).replace(
        "ack_timeout = 2", "ack_timeout = 3"
    )
    async with synced(tmp_path, broker, central, changed) as again:
        await eventually(lambda: events(again, "config_changed"))
        [event] = events(again, "config_changed")
        assert event == {"changed": ["doors[in].unlock_seconds", "mqtt.ack_timeout"],
                         "by": "start"}  # fmt: skip
    kept = (tmp_path / GW / "config.fingerprints.json").read_text(encoding="utf-8")
    assert "0.7" not in kept and "127.0.0.1" not in kept
