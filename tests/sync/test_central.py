"""The central simulator speaks PROTOCOL.md: signed deltas, snapshots, time, acks, sync answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.entitlements import parse_set
from gateway.sync.envelopes import Envelope, load_public_key, open_envelope
from simulators.central import CentralSimulator, generated_member, load_set, main
from tests.support.broker import Broker, Watcher
from tests.support.sets import contract, member

SITE = "oslo"
GW = "door-1"
BASE = f"acs/v1/{SITE}"


def opened(central: CentralSimulator, name: str, payload: bytes) -> Envelope:
    key = load_public_key(central.public_key_b64)
    return open_envelope(payload, public_key=key, site=SITE, topic=name)


def bodies(central: CentralSimulator, watcher: Watcher, name: str) -> list[dict[str, Any]]:
    return [opened(central, name, m.payload).body for m in watcher.on(name)]


def checkin(seq: int, **kw: Any) -> dict[str, Any]:
    out = {"id": f"id-{seq}", "seq": seq, "gw": GW, "at": "2026-11-22T18:00:00+01:00",
           "door": "main-in", "zone": "gym", "direction": "in", "credential": "nfc",
           "member": "M1", "ticket": None, "decision": "granted", "reason": "ok",
           "contract": "C1", "charged": 0, "passed": True, "warnings": [], "offline": False,
           "entitlements_version": 1}  # fmt: skip
    out.update(kw)
    return out


async def send_sync(watcher: Watcher, have: int | None, why: str = "startup") -> None:
    payload = json.dumps({"have": have, "why": why}).encode()
    await watcher.publish(f"{BASE}/gw/{GW}/sync", payload)


async def test_changes_are_signed_deltas_chained_by_version(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=2, time_interval=None) as c:
        async with Watcher(broker.port, [f"{BASE}/entitlements/delta"], identifier="gw") as w:
            await c.add_member(member("M9"))
            await c.freeze_contract("M9", "C1", "2026-07-01", "2026-07-31")
            await c.block("M9", "2026-12-01T00:00:00+01:00", "2026-12-08T00:00:00+01:00")
            await c.delete("M9")
            await c.wait_until(lambda: len(w.on(f"{BASE}/entitlements/delta")) >= 4)
            deltas = bodies(c, w, f"{BASE}/entitlements/delta")
    assert [(d["base"], d["version"]) for d in deltas] == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert deltas[1]["upsert"][0]["contracts"][0]["freezes"] == [
        {"from": "2026-07-01", "to": "2026-07-31"}
    ]
    assert deltas[2]["upsert"][0]["blocks"][0]["reason"] == "blacklist"
    assert deltas[3]["delete"] == ["M9"]


async def test_a_current_gateway_gets_a_time_envelope_on_its_delta_topic(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=3, time_interval=None) as c:
        async with Watcher(broker.port, [f"{BASE}/gw/{GW}/#"], identifier="gw") as w:
            await send_sync(w, c.version)
            got = await w.wait_for(f"{BASE}/gw/{GW}/delta")
    env = opened(c, got.topic, got.payload)
    assert env.type == "time" and env.body["version"] == c.version and "now" in env.body


async def test_a_gateway_behind_gets_the_missing_deltas_in_order(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=3, time_interval=None) as c:
        for i in range(10, 14):
            await c.update([generated_member(i)], publish=False)
        async with Watcher(broker.port, [f"{BASE}/gw/{GW}/delta"], identifier="gw") as w:
            await send_sync(w, 3, "gap")
            await c.wait_until(lambda: len(w.on(f"{BASE}/gw/{GW}/delta")) >= 2)
            deltas = bodies(c, w, f"{BASE}/gw/{GW}/delta")
    assert [d["version"] for d in deltas] == [4, 5]


async def test_a_new_gateway_gets_a_snapshot_in_chunks_of_at_most_2000(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=4500, time_interval=None) as c:
        async with Watcher(broker.port, [f"{BASE}/gw/{GW}/snapshot"], identifier="gw") as w:
            await send_sync(w, None)
            await c.wait_until(lambda: len(w.on(f"{BASE}/gw/{GW}/snapshot")) >= 3)
            chunks = bodies(c, w, f"{BASE}/gw/{GW}/snapshot")
    assert [(b["chunk"], b["chunks"], len(b["records"])) for b in chunks] == [
        (0, 3, 2000), (1, 3, 2000), (2, 3, 500)
    ]  # fmt: skip
    assert "rules" in chunks[0] and "rules" not in chunks[1]
    records = [r for b in chunks for r in b["records"]]
    _, _, parsed = parse_set({"version": 1, "rules": chunks[0]["rules"], "records": records})
    assert len({r.id for r in parsed}) == 4500


async def test_a_gateway_too_far_behind_gets_a_snapshot(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, members=3, time_interval=None) as c:
        c.set.deltas.clear()
        await c.update([generated_member(9)], publish=False)
        c.set.deltas.popleft()
        async with Watcher(broker.port, [f"{BASE}/gw/{GW}/#"], identifier="gw") as w:
            await send_sync(w, 1, "reconnect")
            got = await w.wait_for(f"{BASE}/gw/{GW}/snapshot")
    assert opened(c, got.topic, got.payload).body["version"] == 2


async def test_check_ins_are_recorded_deduplicated_and_acked_up_to_the_contiguous_seq(
    broker: Broker,
) -> None:
    ack_topic = f"{BASE}/gw/{GW}/checkin/ack"
    async with CentralSimulator(port=broker.port, site=SITE, members=1, time_interval=None) as c:
        async with Watcher(broker.port, [ack_topic], identifier="gw") as w:
            for seq in (1, 2, 2, 4):
                await w.publish(f"{BASE}/gw/{GW}/checkin", json.dumps(checkin(seq)).encode())
            await c.wait_checkins(GW, 3)
            await c.wait_until(lambda: len(w.on(ack_topic)) >= 1)
            event = {"id": "e-3", "seq": 3, "gw": GW, "at": "2026-11-22T18:00:00+01:00",
                     "door": None, "type": "started", "detail": {}}  # fmt: skip
            await w.publish(f"{BASE}/gw/{GW}/event", json.dumps(event).encode())
            await c.wait_until(lambda: any(opened(c, ack_topic, m.payload).body["upto"] == 4
                                           for m in w.on(ack_topic)))  # fmt: skip
    got = c.received[GW]
    assert [m["seq"] for m in got.checkins] == [1, 2, 4]
    assert got.duplicates == 1 and [e["type"] for e in got.events] == ["started"]
    assert opened(c, ack_topic, w.on(ack_topic)[0].payload).body == {"upto": 2}


async def test_an_ack_the_broker_is_slow_to_take_holds_back_no_later_ack(broker: Broker) -> None:
    """A central acks on its own clock: an ack whose PUBACK has not come (a busy broker)
    does not hold back the next interval's, or a draining gateway's window fills."""
    ack_topic = f"{BASE}/gw/{GW}/checkin/ack"
    async with CentralSimulator(port=broker.port, site=SITE, time_interval=None) as c:
        publish, stuck = c._publish, asyncio.Event()

        async def first_ack_never_taken(name: str, payload: bytes) -> None:
            if name == ack_topic and not stuck.is_set():
                stuck.set()
                await asyncio.Event().wait()  # the broker's PUBACK never comes
            await publish(name, payload)

        c._publish = first_ack_never_taken  # type: ignore[method-assign]
        async with Watcher(broker.port, [ack_topic], identifier="gw") as w:
            await w.publish(f"{BASE}/gw/{GW}/checkin", json.dumps(checkin(1)).encode())
            await asyncio.wait_for(stuck.wait(), 10)
            await w.publish(f"{BASE}/gw/{GW}/checkin", json.dumps(checkin(2)).encode())
            got = await w.wait_for(ack_topic)
    assert opened(c, ack_topic, got.payload).body["upto"] == 2


async def test_no_acks_in_mode_none(broker: Broker) -> None:
    ack_topic = f"{BASE}/gw/{GW}/checkin/ack"
    async with CentralSimulator(port=broker.port, site=SITE, time_interval=None) as c:
        c.set_ack_mode("none")
        async with Watcher(broker.port, [ack_topic], identifier="gw") as w:
            await w.publish(f"{BASE}/gw/{GW}/checkin", json.dumps(checkin(1)).encode())
            await c.wait_checkins(GW, 1)
            with pytest.raises(TimeoutError):
                await w.wait_for(ack_topic, within=0.5)


async def test_shuffled_acks_come_out_of_order(broker: Broker) -> None:
    ack_topic = f"{BASE}/gw/{GW}/checkin/ack"
    async with CentralSimulator(port=broker.port, site=SITE, time_interval=None) as c:
        c.set_ack_mode("shuffled")
        c.ack_interval = 0.3
        async with Watcher(broker.port, [ack_topic], identifier="gw") as w:
            for seq in range(1, 21):
                await w.publish(f"{BASE}/gw/{GW}/checkin", json.dumps(checkin(seq)).encode())
            await c.wait_until(lambda: len(w.on(ack_topic)) >= 20)
    uptos = [opened(c, ack_topic, m.payload).body["upto"] for m in w.on(ack_topic)]
    assert sorted(uptos) == list(range(1, 21)) and uptos != sorted(uptos)


async def test_charged_check_ins_reduce_clip_card_credits_and_are_counted(broker: Broker) -> None:
    clip = member("M1", contracts=[contract("K1", "clipcard", credits=5)])
    async with CentralSimulator(port=broker.port, site=SITE, records=[clip],
                                time_interval=None, count_interval=0.1) as c:  # fmt: skip
        async with Watcher(broker.port, [f"{BASE}/entitlements/delta"], identifier="gw") as w:
            for seq in (1, 2):
                payload = json.dumps(checkin(seq, contract="K1", charged=2)).encode()
                await w.publish(f"{BASE}/gw/{GW}/checkin", payload)

            def counting_both() -> list[dict[str, Any]]:  # under load, a delta may count one
                deltas = bodies(c, w, f"{BASE}/entitlements/delta")
                return [d for d in deltas if d["checkins_upto"].get(GW) == 2]

            await c.wait_until(lambda: bool(counting_both()))
    assert counting_both()[-1]["upsert"][0]["contracts"][0]["credits"] == 1


async def test_commands_are_signed_with_id_op_door_and_seconds(broker: Broker) -> None:
    async with CentralSimulator(port=broker.port, site=SITE, time_interval=None) as c:
        async with Watcher(broker.port, [f"{BASE}/gw/{GW}/cmd"], identifier="gw") as w:
            cid = await c.send_command(GW, "open", "main-in", 5)
            got = await w.wait_for(f"{BASE}/gw/{GW}/cmd")
    env = opened(c, got.topic, got.payload)
    assert env.type == "command"
    assert env.body == {"id": cid, "op": "open", "door": "main-in", "seconds": 5}


async def test_time_envelopes_are_published_for_the_site(broker: Broker) -> None:
    async with Watcher(broker.port, [f"{BASE}/time"], identifier="gw") as w:
        async with CentralSimulator(port=broker.port, site=SITE, time_interval=0.2) as c:
            got = await w.wait_for(f"{BASE}/time")
    assert opened(c, got.topic, got.payload).body["version"] == 1


def test_a_set_file_or_a_csv_can_be_loaded(tmp_path: Path) -> None:
    set_file = tmp_path / "set.json"
    set_file.write_text(json.dumps({"version": 7, "rules": {"site": "x"}, "records": [member()]}))
    assert load_set(set_file) == (7, {"site": "x"}, [member()])
    csv_file = tmp_path / "members.csv"
    csv_file.write_text(
        "member,display,nfc,code,contract,type,start,end,credits\n"
        "M1,Kari N.,04A1B2C3,,C1,recurring,2026-01-01,,\n"
        "M1,Kari N.,,FLX-1,C2,clipcard,2026-01-01,2026-12-31,8\n"
    )
    _, rules, records = load_set(csv_file)
    assert rules is None and len(records) == 1
    assert [c["id"] for c in records[0]["contracts"]] == ["C1", "C2"]
    assert records[0]["contracts"][1]["credits"] == 8


def test_main_serves_and_prints_the_public_key(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = tmp_path / "central.pem", tmp_path / "central.pub"
    argv = ["--port", str(broker.port), "--site", SITE, "--members", "5", "--key", str(key),
            "--public-key-out", str(pub), "--seconds", "0.3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "5 records" in out and pub.read_text().strip() in out
    assert key.stat().st_mode & 0o077 == 0
    assert main(argv) == 0  # the same key, loaded again
    assert pub.read_text().strip() in capsys.readouterr().out
