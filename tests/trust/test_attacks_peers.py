"""Attacks from the broker's side on what gateways say to each other (PROTOCOL.md, "Trust
between gateways"; issue 8, point 1).

A rogue client with a valid gateway certificate under the shipped ACL, and a rogue client
on a broker without ACL, try every forgery on the peers' topics. Not one changes a
decision, a door, a count or the clock, and each leaves a ``bad_message``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.passes import parse_pass
from gateway.sync.envelopes import canonical, public_key_b64
from tests.support.broker import Broker, make_certs_script, tls_listener
from tests.support.ports import free_port
from tests.trust.helpers import (
    SITE,
    Peer,
    bad_messages,
    config,
    gateway_key,
    phone_pass,
    preload,
    probe,
    rules,
    until,
)

make_certs = make_certs_script()
BASE = f"acs/v1/{SITE}/gw"


@dataclass
class Setting:
    """A broker, how the victim gateway connects, and how the rogue does."""

    port: int
    gateway_mqtt: str
    rogue_tls: aiomqtt.TLSParameters | None


@pytest.fixture(params=["rogue certificate under the shipped ACL", "broker without ACL"])
async def setting(request: Any, tmp_path: Path) -> AsyncIterator[Setting]:
    port = free_port()
    if request.param == "broker without ACL":
        broker = Broker(tmp_path / "broker", port=port).start()
        yield Setting(port, "", None)
        broker.stop()
        return
    certs = make_certs.make_site(tmp_path / "certs", SITE, ["door-1", "door-2"])
    conf = tls_listener(port, certs.ca_file.parent, certs.acl_file)
    broker = Broker(tmp_path / "broker", port=port, extra=conf).start()
    mine, rogue = certs.gateways["door-1"], certs.gateways["door-2"]
    tls = (f'[mqtt.tls]\nca_file = "{certs.ca_file}"\ncert_file = "{mine.cert}"\n'
           f'key_file = "{mine.key}"\n')  # fmt: skip
    rogue_tls = aiomqtt.TLSParameters(
        ca_certs=str(certs.ca_file), certfile=str(rogue.cert), keyfile=str(rogue.key)
    )
    yield Setting(port, tls, rogue_tls)
    broker.stop()


def forgeries(peer: Peer, rogue_key: Ed25519PrivateKey, token: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every forgery; ``peer`` is the real door-2, whose key the rogue
    does not hold (the rogue signs with its own key, or not at all)."""
    claim = parse_pass(token)
    assert not isinstance(claim, str)
    checkin, occupancy = f"{BASE}/door-2/checkin", f"{BASE}/door-2/occupancy"
    out_m1 = peer.checkin(direction="out", member="M1")
    unsigned = {**out_m1, "gw": "door-2"}
    wrong_gw = json.loads(peer.sign(peer.checkin(direction="out")))  # really door-2's...
    wrong_gw["gw"] = "door-3"  # ...but claiming another gateway
    big = {"at": "2026-12-01T10:00:00+00:00", "upto_seq": 1,
           "zones": {f"zone-{i}": 1 for i in range(400)}}  # fmt: skip
    return [
        ("negative charge", checkin, peer.sign(
            peer.checkin(member="M2", contract="K2", charged=-100), rogue_key)),
        ("forged out", checkin, peer.sign(out_m1, rogue_key)),
        ("forged ticket use", checkin, peer.sign(
            peer.checkin(member=None, ticket="T-1", contract=None, credential="ticket"),
            rogue_key)),
        ("forged occupancy", occupancy, peer.sign(
            {"at": "2026-12-01T10:00:00+00:00", "zones": {"gym": 10}, "upto_seq": 99},
            rogue_key)),
        ("forged pass nonce", checkin, peer.sign(
            peer.checkin(credential="phone", pass_=None) | {"pass": list(claim.seen_key)},
            rogue_key)),
        ("wrong gw", checkin, canonical(wrong_gw)),
        ("unsigned", checkin, canonical(unsigned)),
        ("bad sig", checkin, canonical({**unsigned, "sig": "A" * 86})),
        ("oversized occupancy", occupancy, peer.sign(big, rogue_key)),
        # a peer's own key does not make nonsense acceptable either
        ("negative charge, really signed", checkin, peer.sign(
            peer.checkin(member="M2", contract="K2", charged=-100))),
        ("unknown zone, really signed", checkin, peer.sign(peer.checkin(zone="pool"))),
        ("year 9999, really signed", checkin, peer.sign(
            peer.checkin(direction="out", at="9999-12-31T23:59:59-23:59"))),
        ("occupancy of fake zones, really signed", occupancy, peer.sign(
            {"at": "2026-12-01T10:00:00+00:00", "zones": {"fake": 5}, "upto_seq": 1})),
    ]  # fmt: skip


def observe(gw: Gateway, token: str) -> dict[str, Any]:
    """Everything a forgery could change: decisions, doors, counts, the clock."""
    return {
        "decisions": [
            probe(gw, "nfc", "04000001"),
            probe(gw, "nfc", "04000002"),
            probe(gw, "nfc", "04000003"),
            probe(gw, "code", "EVT-1"),
            probe(gw, "pass", token, door="out"),
        ],
        "relays": len(gw.boards["io"].history),
        "modes": {d: door.mode for d, door in gw.doors.items()},
        "inside": gw.state.inside("gym"),
        "tickets": gw.state.ticket_uses("T-1"),
        "charged": [gw.state.charged("M2", "K2"), gw.state.charged("M3", "K3")],
        "clock": gw.state.clock_synced,
        "seen_passes": len(gw.state.seen_passes),
    }


async def test_no_forgery_on_the_peers_topics_changes_anything_and_each_is_reported(
    tmp_path: Path, setting: Setting
) -> None:
    central = Ed25519PrivateKey.generate()
    peer, rogue_key = Peer("door-2"), Ed25519PrivateKey.generate()
    state = tmp_path / "door-1"
    keys = {"door-1": gateway_key(state, "door-1"), "door-2": peer.public_key_b64}
    text = config(state, "door-1", setting.port, public_key_b64(central.public_key()),
                  mqtt=setting.gateway_mqtt)  # fmt: skip
    gw = Gateway(parse_config(text, "test"))
    await gw.start()
    try:
        preload(gw, rules(keys))
        await until(gw.link_up)
        from tests.integration.gateways import present

        assert (await present(gw, "nfc", "04000001"))["reason"] == "ok"  # M1 is inside now
        await until(lambda: gw.boards["io"].energised() == [])  # the door locked again
        token = phone_pass()
        before = observe(gw, token)
        assert before["decisions"] == ["anti_passback", "no_credits", "ok", "ok", "ok"]
        attacks = forgeries(peer, rogue_key, token)
        async with aiomqtt.Client("127.0.0.1", setting.port, identifier="oslo-sentrum/gw/door-2",
                                  tls_params=setting.rogue_tls) as rogue:  # fmt: skip
            for _, name, payload in attacks:
                await rogue.publish(name, payload, qos=1)
            await until(lambda: len(bad_messages(gw)) >= len(attacks), within=15)
        assert observe(gw, token) == before
        reported = bad_messages(gw)
        assert len(reported) == len(attacks)
        assert [r["topic"] for r in reported] == [name for _, name, _ in attacks]
        reasons = [r["reason"] for r in reported]
        assert reasons[:5] == ["bad signature"] * 5, reasons
        assert "gw does not match the topic" in reasons[5] and reasons[6] == "unsigned"
        assert "too large" in reasons[8] and "charged" in reasons[9] and "zone" in reasons[10]
        assert "at is not a valid instant" in reasons[11] and "zone" in reasons[12]
    finally:
        await gw.stop()
