"""PROTOCOL.md, Commands: fresh commands are carried out; stale, replayed, unknown or malformed
ones are refused; every command gets a result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import MqttSection
from gateway.sync.commands import Commands, Mode, SeenCommands
from gateway.sync.envelopes import Envelope, open_envelope, seal
from gateway.sync.link import Link
from tests.support.broker import Broker, Watcher, eventually, running

NOW = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
DOORS = ("main-in", "main-out")


@dataclass
class Doors:
    """Records what the commands asked the doors to do."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)

    async def open_once(self, door: str, seconds: int | None) -> None:
        if door in self.broken:
            raise RuntimeError("relay board not answering")
        self.calls.append(("open", door, str(seconds)))

    async def set_mode(self, door: str, mode: Mode) -> None:
        self.calls.append((mode, door))

    async def resync(self) -> None:
        self.calls.append(("resync",))


@pytest.fixture
def seen(tmp_path: Path) -> Iterator[SeenCommands]:
    s = SeenCommands(tmp_path / "commands.sqlite")
    yield s
    s.close()


def command(
    cid: str = "c1", op: str = "open", door: Any = "main-in", age_s: float = 0, **more: Any
) -> Envelope:
    body = {"id": cid, "op": op, "door": door, "seconds": 5, **more}
    return Envelope("command", "oslo", NOW - timedelta(seconds=age_s), body)


def refused(out: dict[str, Any]) -> tuple[str, str]:
    """(id, error) of a refused command's result, which says why in ``detail``."""
    assert out["ok"] is False and isinstance(out["detail"], str) and out["detail"]
    assert set(out) == {"id", "ok", "error", "detail"}
    return out["id"], out["error"]


def commands(doors: Doors, seen: SeenCommands) -> Commands:
    return Commands(doors, DOORS, seen, clock=lambda: NOW)


async def test_a_fresh_command_opens_the_door_and_succeeds(seen: SeenCommands) -> None:
    doors = Doors()
    assert await commands(doors, seen).handle(command()) == {"id": "c1", "ok": True, "error": None}
    assert doors.calls == [("open", "main-in", "5")]


async def test_a_replayed_command_id_is_refused_and_nothing_moves(seen: SeenCommands) -> None:
    doors = Doors()
    handler = commands(doors, seen)
    await handler.handle(command())
    again = await handler.handle(command(age_s=1))
    assert refused(again) == ("c1", "replayed")
    assert doors.calls == [("open", "main-in", "5")]


async def test_seen_ids_survive_a_restart(tmp_path: Path) -> None:
    first = SeenCommands(tmp_path / "commands.sqlite")
    await commands(Doors(), first).handle(command())
    first.close()
    second = SeenCommands(tmp_path / "commands.sqlite")
    try:
        doors = Doors()
        assert (await commands(doors, second).handle(command()))["error"] == "replayed"
        assert doors.calls == []
    finally:
        second.close()


async def test_the_seen_id_cache_is_bounded(tmp_path: Path) -> None:
    small = SeenCommands(tmp_path / "commands.sqlite", limit=3)
    try:
        for n in range(5):
            assert await small.add(f"c{n}")
        assert not await small.add("c4")
        assert await small.add("c0")  # forgotten: the oldest went first (stale by then anyway)
    finally:
        small.close()


@pytest.mark.parametrize("age_s", [60, -60, 31])
async def test_a_command_more_than_30_s_from_our_clock_is_stale(
    seen: SeenCommands, age_s: float
) -> None:
    doors = Doors()
    out = await commands(doors, seen).handle(command(age_s=age_s))
    assert refused(out) == ("c1", "stale")
    assert doors.calls == []


async def test_a_command_29_s_old_is_still_fresh(seen: SeenCommands) -> None:
    assert (await commands(Doors(), seen).handle(command(age_s=29)))["ok"] is True


async def test_an_unknown_door_is_refused(seen: SeenCommands) -> None:
    doors = Doors()
    out = await commands(doors, seen).handle(command(door="back-door"))
    assert refused(out) == ("c1", "unknown_door")
    assert doors.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"id": "c1", "op": "explode", "door": "main-in"},
        {"id": "c1", "op": "open", "door": "main-in", "seconds": 0},
        {"id": "c1", "op": "open", "door": "main-in", "seconds": True},
        {"id": "c1", "op": "open", "door": "main-in", "seconds": "5"},
        {"id": "c1", "op": "unlock"},
        {"op": "open", "door": "main-in"},
        {"id": 7, "op": "open", "door": "main-in"},
        {"id": "x" * 500, "op": "open", "door": "main-in"},
    ],
)
async def test_a_malformed_command_is_a_bad_command(
    seen: SeenCommands, body: dict[str, Any]
) -> None:
    doors = Doors()
    out = await commands(doors, seen).handle(Envelope("command", "oslo", NOW, body))
    assert out["ok"] is False and out["error"] == "bad_command"
    assert out["id"] in ("c1", None)
    assert doors.calls == []


async def test_another_envelope_type_is_not_a_command(seen: SeenCommands) -> None:
    env = Envelope("delta", "oslo", NOW, {"id": "c1", "op": "open", "door": "main-in"})
    assert (await commands(Doors(), seen).handle(env))["error"] == "bad_command"


async def test_a_star_door_means_every_door(seen: SeenCommands) -> None:
    doors = Doors()
    out = await commands(doors, seen).handle(command(op="lockdown", door="*"))
    assert out["ok"] is True
    assert doors.calls == [("lockdown", "main-in"), ("lockdown", "main-out")]


@pytest.mark.parametrize("op", ["unlock", "normal", "lockdown"])
async def test_mode_commands_set_the_door_mode(seen: SeenCommands, op: str) -> None:
    doors = Doors()
    assert (await commands(doors, seen).handle(command(op=op)))["ok"] is True
    assert doors.calls == [(op, "main-in")]


async def test_resync_asks_for_a_snapshot(seen: SeenCommands) -> None:
    doors = Doors()
    assert (await commands(doors, seen).handle(command(op="resync", door="*")))["ok"] is True
    assert doors.calls == [("resync",)]


async def test_a_door_that_fails_gives_a_failed_result_not_an_exception(
    seen: SeenCommands,
) -> None:
    doors = Doors(broken={"main-in"})
    assert refused(await commands(doors, seen).handle(command())) == ("c1", "failed")


async def test_every_signed_command_gets_a_result_over_the_broker(
    broker: Broker, seen: SeenCommands
) -> None:
    key = Ed25519PrivateKey.generate()
    cfg = MqttSection(host="127.0.0.1", port=broker.port)
    link = Link(cfg, "oslo", "door-1", status_payload=dict, retry_base=0.1)
    doors = Doors()
    handler = commands(doors, seen)
    cmd_topic, result_topic = "acs/v1/oslo/gw/door-1/cmd", "acs/v1/oslo/gw/door-1/cmd/result"
    dropped: list[str] = []

    async def on_message(topic: str, payload: bytes) -> None:
        if topic == cmd_topic:
            env = open_envelope(payload, public_key=key.public_key(), site="oslo", topic=topic)
            out = await handler.handle(env)
            await link.publish(result_topic, json.dumps(out).encode())

    async def on_bad(topic: str, reason: str) -> None:
        dropped.append(reason)

    link.on_message(on_message)
    link.on_bad_message(on_bad)
    sent = [
        command("a"),
        command("a"),
        command("b", age_s=60),
        command("c", door="nope"),
        command("d", op="bogus"),
    ]
    forged = seal("command", "oslo", command("e").body, Ed25519PrivateKey.generate(), NOW, "door-1")
    async with Watcher(broker.port, [result_topic]) as central, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await central.publish(cmd_topic, forged)  # dropped: no result for an unsigned id
        for env in sent:
            signed = seal(env.type, env.site, env.body, key, env.issued_at, "door-1")
            await central.publish(cmd_topic, signed)
        await eventually(lambda: len(central.on(result_topic)) >= len(sent), within=10)
    results = [json.loads(m.payload) for m in central.on(result_topic)]
    assert [(r["id"], r["ok"], r["error"]) for r in results] == [
        ("a", True, None),
        ("a", False, "replayed"),
        ("b", False, "stale"),
        ("c", False, "unknown_door"),
        ("d", False, "bad_command"),
    ]
    assert dropped == ["bad signature"]
    assert doors.calls == [("open", "main-in", "5")]
