"""PROTOCOL.md, Trust between gateways (Broker identity): the shipped Mosquitto config binds
the client id to the certificate, so no certificate can take another gateway's session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.sync.link import broker_identity
from tests.support.broker import Broker, Watcher, running
from tests.sync.test_security import SITE, certs, gateway_link, shipped_broker, tls_params

__all__ = ["certs"]  # the fixture


async def test_the_gateways_client_id_is_its_certificates_identity(
    tmp_path: Path, certs: Any
) -> None:
    link = gateway_link(Broker(tmp_path), certs, "door-1")
    assert broker_identity(link.cfg) == f"{SITE}/gw/door-1"


async def test_another_certificate_cannot_kick_the_gateway_off_with_its_client_id(
    tmp_path: Path, certs: Any
) -> None:
    broker = shipped_broker(tmp_path, certs)
    try:
        door1 = gateway_link(broker, certs, "door-1")
        async with running(door1.run()):
            await asyncio.wait_for(door1.wait_connected(), 10)
            assert door1.client_id == f"{SITE}/gw/door-1"
            for attempt in range(5):  # door-2's certificate, door-1's client id, again and again
                for identifier in (door1.client_id, door1.default_client_id):
                    rogue = Watcher(broker.port, [], identifier=identifier,
                                    tls=tls_params(certs, "door-2"))  # fmt: skip
                    async with rogue:
                        await asyncio.sleep(0.1)
                    assert door1.connected and door1.last_error is None, (attempt, identifier)
            await door1.publish(f"acs/v1/{SITE}/gw/door-1/event", b"{}")  # still its session
    finally:
        broker.stop()
