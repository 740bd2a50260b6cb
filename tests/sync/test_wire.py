"""The wire process's seams (gateway.sync.wire, wire_child): the channel between the two
processes, peers verified in the wire and trusted by the gateway only with the current
key, and the journal's records handed over as the JSON text they were written as."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.entitlements import parse_rules
from gateway.errors import BadMessage, LinkError
from gateway.journal import Journal
from gateway.sync.peers import PeerInbox
from gateway.sync.wire import Channel, ChannelClosed
from tests.support.procs import state
from tests.trust.helpers import SITE, Peer, kept_at_once, rules, until

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def pair(
    left: dict[str, Any], right: dict[str, Any]
) -> tuple[Channel, Channel, list[asyncio.Task[None]]]:
    a, b = socket.socketpair()
    ends = []
    for sock, handlers in ((a, left), (b, right)):
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        ends.append(Channel(reader, writer, name="test", **handlers))
    tasks = [asyncio.create_task(end.run()) for end in ends]
    return ends[0], ends[1], tasks


@pytest.fixture
async def channels() -> AsyncIterator[tuple[Channel, Channel, list[Any]]]:
    told: list[Any] = []

    async def double(x: int) -> int:
        return 2 * x

    async def refuse() -> None:
        raise LinkError("the broker refused it")

    async def crash() -> None:
        raise ZeroDivisionError("a bug")

    left, right, tasks = await pair(
        {"calls": {}, "notices": {"told": told.append}},
        {"calls": {"double": double, "refuse": refuse, "crash": crash},
         "notices": {"told": told.append}},
    )  # fmt: skip
    yield left, right, told
    left.close()
    right.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_calls_are_answered_and_notices_keep_their_order(channels):
    left, _, told = channels
    assert await asyncio.gather(*(left.call("double", i) for i in range(50))) == [
        2 * i for i in range(50)
    ]
    for i in range(1000):
        left.notify("told", i)
    big = b"x" * (8 * 2**20)  # a 16 MiB-class delta crosses in one frame
    left.notify("told", big)
    await until(lambda: len(told) == 1001)
    assert told[:1000] == list(range(1000)) and told[1000] == big


async def test_a_refusal_comes_back_as_link_error_with_its_words_and_a_bug_too(channels):
    left, _, _ = channels
    with pytest.raises(LinkError, match="the broker refused it"):
        await left.call("refuse")
    with pytest.raises(LinkError, match="a bug"):
        await left.call("crash")
    assert await left.call("double", 4) == 8  # the channel goes on


async def test_when_the_other_side_goes_what_waits_fails_and_nothing_hangs(channels):
    left, right, _ = channels
    gate = asyncio.Event()

    async def forever() -> None:
        await gate.wait()

    right._calls = {"forever": forever}  # type: ignore[attr-defined]
    waiting = asyncio.create_task(left.call("forever"))
    await asyncio.sleep(0.05)
    right.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(ChannelClosed):
        await left.call("double", 1)
    answer = left.request("double", 1)  # a message's hold: it fails, it does not raise here
    with pytest.raises(ChannelClosed):
        await answer


# --- peers verified in the wire ------------------------------------------------------------


def inbox(applied: list[dict[str, Any]], keys: dict[str, str]) -> PeerInbox:
    async def apply(checkin: dict[str, Any], kept: Any) -> bool:
        applied.append(checkin)
        return True

    keyed = parse_rules(rules(keys))
    return PeerInbox(
        site=SITE, gw="door-1", own_key=Peer("door-1").key.public_key(), rules=lambda: keyed,
        now=lambda: NOW, clock_trusted=lambda: True, keep_checkin=kept_at_once, apply_checkin=apply,
        apply_occupancy=lambda *a: None, peer_upto=lambda gw: 0,
    )  # fmt: skip


async def test_a_peer_message_verified_with_the_current_key_is_applied_without_a_second_check():
    peer = Peer("door-2")
    applied: list[dict[str, Any]] = []
    box = inbox(applied, {"door-2": peer.public_key_b64})
    name = f"acs/v1/{SITE}/gw/door-2/checkin"
    message = json.loads(peer.sign(peer.checkin(at=NOW.isoformat())))
    message["sig"] = "x" * 86  # the gateway trusts the wire's verification: not checked again
    box.take_verified(name, message, peer.public_key_b64)
    await until(lambda: applied)
    assert applied[0]["id"] == message["id"]
    with pytest.raises(BadMessage, match="zone"):  # the fields are still checked here
        box.take_verified(name, {**message, "zone": "pool"}, peer.public_key_b64)
    await box.close()


async def test_a_peer_message_verified_with_a_key_the_set_no_longer_has_is_checked_again():
    """The set changed between the wire's check and the gateway's: the old key counts
    for nothing, and a message the new key did not sign is refused."""
    old, new = Peer("door-2"), Peer("door-2")
    applied: list[dict[str, Any]] = []
    box = inbox(applied, {"door-2": new.public_key_b64})
    name = f"acs/v1/{SITE}/gw/door-2/checkin"
    signed_by_old = json.loads(old.sign(old.checkin(at=NOW.isoformat())))
    with pytest.raises(BadMessage, match="signature"):
        box.take_verified(name, signed_by_old, old.public_key_b64)
    with pytest.raises(BadMessage, match="signature"):
        box.take_verified(name, signed_by_old, None)
    signed_by_new = json.loads(new.sign(new.checkin(at=NOW.isoformat())))
    box.take_verified(name, signed_by_new, old.public_key_b64)  # verified here: it is good
    await until(lambda: applied)
    assert [c["id"] for c in applied] == [signed_by_new["id"]]
    with pytest.raises(BadMessage, match="peer"):  # own topic: never taken as verified
        box.take_verified(f"acs/v1/{SITE}/gw/door-1/checkin", signed_by_new, None)
    await box.close()


# --- the journal's records as written -------------------------------------------------------


async def test_unacked_raw_gives_each_record_as_the_json_text_it_was_written_as(tmp_path):
    from tests.sync.test_outbox import decision

    journal = await Journal.open(tmp_path / "journal.sqlite", "door-1")
    try:
        entry = await journal.record_decision(decision("M1"))
        await journal.finalise(entry.seq, passed=True, charged=0)
        await journal.record_event("door_closed", door="in", detail={"ß": "ø"}, at=NOW)
        parsed = await journal.unacked(0, 10)
        raw = await journal.unacked(0, 10, raw=True)
    finally:
        await journal.close()
    assert [r["seq"] for r in raw] == [r["seq"] for r in parsed]
    assert [r["kind"] for r in raw] == [r["kind"] for r in parsed] == ["checkin", "event"]
    for text, record in zip(raw, parsed, strict=True):
        assert isinstance(text["body"], str) and json.loads(text["body"]) == record["message"]


async def test_final_records_are_stored_signed_and_another_key_makes_the_journal_forget_them(
    tmp_path,
):
    """A backlog drains without a signature each: records are signed on the journal's
    thread as they become final; a journal opened with another key (a new key, a restore)
    forgets those signatures, and the link signs the records as it publishes them."""
    from gateway.identity import load_identity, signature_problem
    from tests.sync.test_outbox import decision

    me = load_identity("door-1", SITE, tmp_path / "a")
    path = tmp_path / "journal.sqlite"
    journal = await Journal.open(path, "door-1", signer=me.record_signer())
    try:
        await journal.record_event("door_closed", door="in", detail={}, at=NOW)
        entry = await journal.record_decision(decision("M1"))
        open_one = await journal.unacked(0, 10, raw=True)
        await journal.finalise(entry.seq, passed=True, charged=0)
        raw = await journal.unacked(0, 10, raw=True)
        parsed = await journal.unacked(0, 10)
    finally:
        await journal.close()
    assert [r["kind"] for r in open_one] == ["event"]  # not final: neither out nor signed
    assert [r["signed"] for r in raw] == [True, True]
    keys = {"door-1": me.private_key.public_key()}
    for text, record in zip(raw, parsed, strict=True):
        signed = json.loads(text["body"])
        assert signature_problem(signed, "door-1", keys) is None
        assert {k: v for k, v in signed.items() if k != "sig"} == record["message"]

    other = load_identity("door-1", SITE, tmp_path / "b")  # the box's key was replaced
    journal = await Journal.open(path, "door-1", signer=other.record_signer())
    try:
        again = await journal.unacked(0, 10, raw=True)
    finally:
        await journal.close()
    assert [r["signed"] for r in again] == [False, False]
    assert [json.loads(r["body"]) for r in again] == [r["message"] for r in parsed]


async def test_a_part_of_the_wire_process_that_ends_by_itself_ends_the_process_with_its_cause(
    tmp_path, monkeypatch
):
    """The outbox (or the link, the acks, the watch) runs until cancelled: one that fails
    is not left gone in a process that goes on. The wire process tells the gateway why and
    leaves; the gateway's supervisor then reports it and starts a new one."""

    from gateway.sync import wire_child
    from gateway.sync.outbox import Outbox
    from tests.support.ports import free_port

    async def broken(self: Outbox) -> None:
        raise RuntimeError("injected outbox bug")

    monkeypatch.setattr(Outbox, "run", broken)
    settings = wire_settings(tmp_path, free_port())  # nothing listens: the link retries
    failed: list[str] = []
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)

    async def nothing(*args: Any) -> Any:
        return {}

    gateway_end = Channel(
        reader, writer, name="test",
        calls={"status": nothing, "on_connect": nothing, "unacked": nothing, "ack": nothing},
        notices={"failed": failed.append, "state": lambda s: None, "event": lambda *a: None},
    )  # fmt: skip
    reading = asyncio.create_task(gateway_end.run())
    with pytest.raises(wire_child.WireFailed, match="outbox: RuntimeError: injected outbox bug"):
        await asyncio.wait_for(wire_child.Wire(settings).serve(theirs), 10)
    await asyncio.wait_for(reading, 5)  # the wire process's end is closed
    assert failed == ["outbox: RuntimeError: injected outbox bug"]


async def test_a_gateway_that_closes_the_channel_ends_the_wire_process_quietly(
    tmp_path, caplog, broker
):
    """The normal stop: the gateway closes its end while the outbox waits for a batch. The
    outbox's call fails with ChannelClosed as the channel's reader ends; that is the way
    out, not a failure: no error logged, nothing told, the process leaves with status 0."""
    import logging

    from gateway.sync import wire_child
    from gateway.sync.outbox import Outbox

    asked = asyncio.Event()
    settings = wire_settings(tmp_path, broker.port)
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)

    async def nothing(*args: Any) -> Any:
        return {}

    async def unacked(*args: Any) -> Any:
        asked.set()
        await asyncio.sleep(3600)  # the gateway stops before it answers

    gateway_end = Channel(
        reader, writer, name="test",
        calls={"status": nothing, "on_connect": nothing, "unacked": unacked,
               "ack": nothing},
        notices={"failed": lambda why: None, "state": lambda s: None,
                 "event": lambda *a: None},
    )  # fmt: skip
    reading = asyncio.create_task(gateway_end.run())
    wire = wire_child.Wire(settings)
    serving = asyncio.create_task(wire.serve(theirs))
    await asyncio.wait_for(asked.wait(), 15)  # connected, the outbox waits for a batch
    assert isinstance(wire.outbox, Outbox)
    with caplog.at_level(logging.ERROR):
        gateway_end.close()
        await asyncio.wait_for(serving, 10)  # returns: no WireFailed
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def wire_settings(tmp_path: Any, port: int) -> dict[str, Any]:
    """The settings the gateway hands its wire process (gateway door-1, on ``port``)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    from gateway.identity import load_identity

    me = load_identity("door-1", SITE, tmp_path)
    central = load_identity("central", SITE, tmp_path / "central")
    seed = me.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )  # fmt: skip
    return {
        "site": SITE, "gw": "door-1", "seed": base64.b64encode(seed).decode(),
        "central_key": central.public_key_b64,
        "mqtt": {"host": "127.0.0.1", "port": port},
    }  # fmt: skip


def test_a_wire_process_whose_gateway_is_gone_leaves_though_its_channel_stays_open(tmp_path):
    """The gateway killed while another process holds a copy of its end of the channel (no
    end of file reaches the wire process): the wire process sees its parent change and
    leaves, rather than keep the gateway's MQTT session from the next wire process."""
    import signal
    import subprocess
    import sys
    import time

    from tests.support.ports import free_port

    settings = wire_settings(tmp_path, free_port())  # nothing listens: the link retries
    ours, theirs = socket.socketpair()  # ``ours`` stays open here: the copy
    starter = (
        "import subprocess, sys, time\n"
        "fd = int(sys.argv[1])\n"
        "p = subprocess.Popen([sys.executable, '-m', 'gateway.sync.wire_child',"
        " '--channel-fd', str(fd)], stdin=subprocess.PIPE, pass_fds=(fd,))\n"
        "p.stdin.write(sys.stdin.buffer.readline()); p.stdin.close()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(3600)\n"
    )
    gateway = subprocess.Popen(
        [sys.executable, "-c", starter, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    theirs.close()
    try:
        assert gateway.stdin is not None and gateway.stdout is not None
        gateway.stdin.write(json.dumps(settings).encode() + b"\n")
        gateway.stdin.close()
        wire = int(gateway.stdout.readline())
        time.sleep(1.0)  # the wire process is up, its link retrying
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(5)
        deadline = time.monotonic() + 10
        while state(wire) not in ("gone", "Z"):
            assert time.monotonic() < deadline, "the wire process stayed"
            time.sleep(0.1)
    finally:
        ours.close()
        if gateway.poll() is None:
            gateway.kill()
