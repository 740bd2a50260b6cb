"""Junk on the central system's topics is refused in the wire process (gateway.sync.wire_child)
with the gateway's own check, reason, event and log line, and never crosses to the doors'
process; what the central signed still crosses, and the gateway opens and applies it.

The check is :func:`gateway.sync.envelopes.open_carried`, the one the gateway runs itself
(entitlement sync, the snapshot builder, commands): the reasons here are compared with what
it gives, and, on a running gateway, with what the gateway's own path gives for the same
bytes handed to it directly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.daemon import Gateway
from gateway.errors import BadMessage
from gateway.event_throttle import EventThrottle
from gateway.sync import wire_child
from gateway.sync.envelopes import CARRIES, carried, open_carried, public_key_b64, seal
from simulators.central import CentralSimulator
from tests.integration.gateways import SITE, member
from tests.support.broker import Broker, eventually
from tests.sync.test_wire_trust import GW, KEY, OTHER, PUB, bad_messages, quiet, synced, t
from tests.sync.test_wire_trust import central as central

STRANGER = Ed25519PrivateKey.generate()  # a key that is not the gateway's central key

# The central system's topics to door-1, and the envelope type each carries.
TOPICS = {
    t("time"): "time",
    t("entitlements", "delta"): "delta",
    t("gw", GW, "delta"): "delta",
    t("gw", GW, "snapshot"): "snapshot",
    t("gw", GW, "cmd"): "command",
}
SYNC_TOPICS = [name for name in TOPICS if not name.endswith("/cmd")]


def bound(name: str) -> str | None:
    """The gateway an envelope on ``name`` must name (per-gateway topics only)."""
    return GW if "/gw/" in name else None


def body(type_: str) -> dict[str, Any]:
    return {
        "time": {"now": datetime.now(UTC).isoformat(), "version": 1},
        "delta": {"version": 2, "base": 1, "upsert": [], "delete": []},
        "snapshot": {"version": 1, "chunk": 0, "chunks": 1, "records": []},
        "command": {"id": "c-1", "op": "lockdown", "door": "out"},
    }[type_]


def junk(name: str) -> dict[str, bytes]:
    """What a flood may send on ``name``, by what is wrong with it."""
    type_, at = TOPICS[name], datetime.now(UTC)
    wrong = "command" if type_ != "command" else "delta"
    return {
        "unsigned": json.dumps({"type": "delta", "site": SITE, "body": {"version": 1}}).encode(),
        "not json": b"\xff not json",
        "not an object": b"[1,2,3]",
        "a float": b'{"type":"delta","v":1.5}',
        "another key": seal(type_, SITE, body(type_), STRANGER, at, bound(name)),
        "another site": seal(type_, "elsewhere", body(type_), KEY, at, bound(name)),
        "wrong topic": seal(wrong, SITE, body(wrong), KEY, at, bound(name)),
        **({"another gateway": seal(type_, SITE, body(type_), KEY, at, OTHER)}
           if bound(name) else {}),
    }  # fmt: skip


def gateways_reason(name: str, payload: bytes) -> str:
    """The reason the gateway's own check gives for ``payload`` on ``name``."""
    with pytest.raises(BadMessage) as refused:
        open_carried(payload, public_key=PUB, site=SITE, topic=name, types=CARRIES[name_kind(name)])
    return refused.value.reason


def name_kind(name: str) -> str:
    return name.split(f"{SITE}/", 1)[1].removeprefix(f"gw/{GW}/")


CASES = [(name, why) for name in TOPICS for why in junk(name)]


# --- the wire process's side, in this process ---------------------------------------------


class Told:
    """The wire process's end of the channel: what it tells the gateway."""

    def __init__(self) -> None:
        self.notices: list[tuple[Any, ...]] = []

    def behind(self) -> bool:
        return False

    def notify(self, name: str, *args: Any) -> None:
        self.notices.append((name, *args))


def wire() -> tuple[wire_child.Wire, Told]:
    me = Ed25519PrivateKey.generate()
    seed = me.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )  # fmt: skip
    w = wire_child.Wire({
        "site": SITE, "gw": GW, "seed": base64.b64encode(seed).decode(),
        "central_key": public_key_b64(PUB), "mqtt": {"host": "127.0.0.1", "port": 1},
    })  # fmt: skip
    told = Told()
    w.channel = told  # type: ignore[assignment]
    return w, told


@pytest.mark.parametrize(("name", "why"), CASES, ids=[f"{n.split(SITE)[1]} {w}" for n, w in CASES])
async def test_junk_on_a_central_topic_is_refused_in_the_wire_with_the_gateways_reason(
    name: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    w, told = wire()
    payload = junk(name)[why]
    reason = gateways_reason(name, payload)
    with caplog.at_level(logging.WARNING):
        await w._inbound(name, payload)
    assert told.notices == [("bad_messages", {"topic": name, "reason": reason[:300]}, 1)]
    expected = {
        "unsigned": "missing field issued_at", "not json": "not valid JSON",
        "not an object": "not an envelope", "a float": "floats are not allowed",
        "another key": "bad signature", "another site": "for another site",
        "wrong topic": "wrong_topic", "another gateway": "for another gateway",
    }  # fmt: skip
    assert expected[why] in reason
    logged = [(r.name, r.getMessage()) for r in caplog.records]
    if name in SYNC_TOPICS:  # logged as entitlement sync logs it when it refuses one itself
        assert logged == [
            ("gateway.sync.entitlement_sync",
             f"entitlement sync: message on {name} dropped: {reason[:300]}"),
        ]  # fmt: skip
    else:  # a command refused unopened gets its event and no line of its own, as before
        assert logged == []


async def test_a_flood_of_junk_is_told_to_the_gateway_by_the_count_not_one_by_one() -> None:
    """2,000 junk messages a second cost the doors' process one notice each (a tenth of a
    core): past what the gateway would journal one by one, they are counted here and told
    together, per (topic, reason), every BAD_REPORT_S; none is lost from the count."""
    w, told = wire()
    burst = EventThrottle()._burst  # what the gateway journals one by one
    floods = {name: junk(name)["unsigned"] for name in (t("time"), t("gw", GW, "cmd"))}
    for _ in range(500):
        for name, payload in floods.items():
            await w._inbound(name, payload)
    assert len(told.notices) < 2 * (burst + 1), len(told.notices)
    await asyncio.sleep(wire_child.BAD_REPORT_S * 3)
    assert len(told.notices) < 2 * (burst + 3), len(told.notices)
    for name in floods:
        mine = [n for n in told.notices if n[0] == "bad_messages" and n[1]["topic"] == name]
        assert mine[0][2] == 1  # the first is told at once, on its own
        assert sum(n[2] for n in mine) == 500
    assert {n[0] for n in told.notices} == {"bad_messages"}


@pytest.mark.parametrize("name", list(TOPICS))
async def test_what_the_central_signed_crosses_as_it_came(name: str) -> None:
    w, told = wire()
    for type_ in CARRIES[name_kind(name)]:
        payload = seal(type_, SITE, body(type_), KEY, datetime.now(UTC), bound(name))
        await w._inbound(name, payload)
        assert told.notices[-1] == ("message", name, payload)
    assert len(told.notices) == len(CARRIES[name_kind(name)])


async def test_a_payload_over_64_kib_crosses_unopened_as_before() -> None:
    """A snapshot chunk or a big delta is opened once, by the gateway, off its loop: at one
    core, opening it here as well would slow the snapshot's apply."""
    w, told = wire()
    big = b'{"type":"snapshot","pad":"' + b"x" * wire_child.CHECKED_HERE + b'"}'
    for name in (t("gw", GW, "snapshot"), t("entitlements", "delta")):
        await w._inbound(name, big)
        assert told.notices[-1] == ("message", name, big)


def test_carried_names_only_the_central_systems_topics_to_this_gateway() -> None:
    for name, type_ in TOPICS.items():
        assert type_ in (carried(name, SITE, GW) or ())
    for name in (
        t("gw", OTHER, "delta"),
        t("gw", OTHER, "cmd"),
        t("gw", GW, "checkin/ack"),
        t("gw", OTHER, "checkin"),
        "acs/v1/elsewhere/time",
        t("gw", GW, "sync"),
    ):
        assert carried(name, SITE, GW) is None, name  # fmt: skip


# --- a running gateway and its wire process, on a real broker -----------------------------


def crossing(gw: Gateway) -> list[str]:
    """The topics of the messages that cross from the wire process from now on."""
    assert gw.sync is not None
    notices = gw.sync.wire.notices
    offer: Callable[..., None] = notices["message"]
    crossed: list[str] = []

    def spy(name: str, payload: bytes) -> None:
        crossed.append(name)
        offer(name, payload)

    notices["message"] = spy
    return crossed


def keyed(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((e["topic"], e["reason"]) for e in events)


async def test_junk_stays_in_the_wire_process_and_the_gateway_would_refuse_it_alike(
    tmp_path: Path,
    broker: Broker,
    central: CentralSimulator,
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        assert gw.sync is not None
        crossed = crossing(gw)
        sent = [(name, payload) for name in TOPICS for payload in junk(name).values()]
        for name, payload in sent:
            await central.publish_raw(name, payload)
        await eventually(lambda: len(bad_messages(gw)) == len(sent), 20)
        await quiet(gw, central)
        assert set(crossed) == {t("gw", GW, "delta")}  # only quiet()'s time, signed
        by_wire = keyed(bad_messages(gw))
        assert by_wire == sorted((n, gateways_reason(n, p)[:300]) for n, p in sent)
        err = capfd.readouterr().err  # the wire process's log lines, as the gateway's own
        for name, payload in sent:
            if name in SYNC_TOPICS:
                why = gateways_reason(name, payload)
                line = f"entitlement sync: message on {name} dropped: {why}"
                assert json.dumps(line, ensure_ascii=False)[1:-1] in err
        assert gw.store.version == central.version  # nothing of it applied
        assert central.received[GW].results == []  # no refused command got a result
        # The same bytes handed to the gateway's own path (as they crossed before):
        # entitlement sync, the snapshot builder and commands refuse them alike.
        for name, payload in sent:
            gw.sync._offer(name, payload)
        await eventually(lambda: len(bad_messages(gw)) == 2 * len(sent), 20)
        assert keyed(bad_messages(gw)) == sorted(by_wire * 2)


async def test_a_signed_delta_command_and_time_still_cross_and_are_applied(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        crossed = crossing(gw)
        await central.add_member(member(3))  # a delta on entitlements/delta
        await eventually(lambda: gw.store.member("M3") is not None)
        before = gw.store.updated_at
        await central.send_time()  # on time: confirms the set
        await eventually(lambda: gw.store.updated_at != before)
        command = await central.send_command(GW, "lockdown", "out")
        await eventually(lambda: central.received[GW].results)
        [answer] = central.received[GW].results
        assert (answer["id"], answer["ok"], answer["error"]) == (command, True, None)
        assert gw.doors["out"].mode == "lockdown"
        version = central.version + 1  # a delta on this gateway's own topic
        delta = {"version": version, "base": central.version, "upsert": [member(4)], "delete": []}
        await central.publish_raw(t("gw", GW, "delta"), central.seal("delta", delta, GW))
        await eventually(lambda: gw.store.version == version)
        assert gw.store.member("M4") is not None
        assert bad_messages(gw) == []
        assert {t("entitlements", "delta"), t("time"), t("gw", GW, "cmd"),
                t("gw", GW, "delta")} <= set(crossed)  # fmt: skip


async def test_a_message_signed_with_another_key_than_the_central_key_is_refused(
    tmp_path: Path, broker: Broker, central: CentralSimulator
) -> None:
    async with synced(tmp_path, broker, central) as gw:
        crossed = crossing(gw)
        at = datetime.now(UTC)
        version = central.version + 1
        forged = {"version": version, "base": central.version, "upsert": [member(5)],
                  "delete": []}  # fmt: skip
        sent = [
            (t("entitlements", "delta"), seal("delta", SITE, forged, STRANGER, at)),
            (t("gw", GW, "delta"), seal("delta", SITE, forged, STRANGER, at, GW)),
            (t("time"), seal("time", SITE, body("time"), STRANGER, at)),
            (t("gw", GW, "cmd"), seal("command", SITE, body("command"), STRANGER, at, GW)),
            (t("gw", GW, "snapshot"), seal("snapshot", SITE, body("snapshot"), STRANGER, at, GW)),
        ]
        for name, payload in sent:
            await central.publish_raw(name, payload)
        await eventually(lambda: len(bad_messages(gw)) == len(sent))
        assert all(b["reason"] == "bad signature" for b in bad_messages(gw))
        assert crossed == []
        await quiet(gw, central)
        assert gw.store.version == central.version and gw.store.member("M5") is None
        assert central.received[GW].results == []
