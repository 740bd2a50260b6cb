"""The central simulator trusts only what registered gateways signed (PROTOCOL.md, "Signed
messages from gateways"), and never a charge the site's prices cannot explain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import simulators.central as central_module
from simulators.central import CentralSimulator, GatewayRegistry
from tests.support.broker import Broker, Watcher
from tests.trust.helpers import SITE, Peer, records, rules

BASE = f"acs/v1/{SITE}/gw/door-2"


async def test_unsigned_forged_and_impossible_messages_are_refused_and_never_counted(
    tmp_path: Path, broker: Broker
) -> None:
    peer, rogue = Peer("door-2"), Ed25519PrivateKey.generate()
    credits_before = 1
    async with CentralSimulator(
        "127.0.0.1", broker.port, SITE, rules=rules({}), records=records(),
        time_interval=None, gateways={"door-2": peer.public_key_b64},
    ) as central:  # fmt: skip
        assert central.set.rules["gateways"] == {"door-2": peer.public_key_b64}
        charge = {"member": "M3", "contract": "K3"}
        attempts = [
            json.dumps(peer.checkin(**charge, charged=1)).encode(),  # unsigned
            peer.sign(peer.checkin(**charge, charged=1), rogue),  # forged
            peer.sign(peer.checkin(**charge, charged=-100)),  # negative, really signed
            peer.sign(peer.checkin(**charge, charged=3)),  # dearer than any zone
            Peer("door-3", key=peer.key).sign(peer.checkin(**charge, charged=1)),  # other gw
        ]
        genuine = peer.sign(peer.checkin(**charge, charged=1))
        async with Watcher(broker.port, [f"{BASE}/checkin/ack"], identifier="d2") as w:
            for payload in attempts:
                await w.publish(f"{BASE}/checkin", payload)
            await w.publish(f"{BASE}/event", json.dumps({"type": "started", "gw": "door-2"}))
            await central.wait_until(lambda: len(central.received["door-2"].refused) == 6)
            assert central.received["door-2"].checkins == [] and not w.on(f"{BASE}/checkin/ack")
            await w.publish(f"{BASE}/checkin", genuine)
            await central.wait_checkins("door-2", 1)
        contract = central.record("M3")["contracts"][0]
    reasons = [reason for _, reason in central.received["door-2"].refused]
    assert reasons[0].startswith("unsigned") and reasons[1] == "bad signature"
    assert "outside" in reasons[2] and "outside" in reasons[3]
    assert reasons[4].startswith("gw") and reasons[5].startswith("unsigned")
    assert contract["credits"] == credits_before - 1  # only the genuine charge


@pytest.mark.parametrize("libsodium", [True, False], ids=["libsodium", "cryptography"])
def test_the_central_checks_signatures_alike_with_libsodium_or_cryptography(
    libsodium: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The central checks with libsodium where PyNaCl is installed (half the CPU), else with
    cryptography: either refuses what the other refuses."""
    if libsodium:
        pytest.importorskip("nacl")
    else:
        monkeypatch.setattr(central_module, "sodium_open", None)
    peer, rogue = Peer("door-2"), Ed25519PrivateKey.generate()
    registry = GatewayRegistry({"door-2": peer.public_key_b64})
    genuine = json.loads(peer.sign(peer.checkin()))
    assert registry.problem("door-2", genuine) is None and registry.verified == 1
    forged = json.loads(peer.sign(peer.checkin(), rogue))
    altered = {**genuine, "member": "M2"}
    flipped = {**genuine, "sig": ("B" if genuine["sig"][0] == "A" else "A") + genuine["sig"][1:]}
    for message in (forged, altered, flipped):
        assert registry.problem("door-2", message) == "bad signature"
    assert registry.problem("door-2", {**genuine, "sig": "x" * 85}) == "unsigned or malformed sig"
    assert registry.verified == 1
