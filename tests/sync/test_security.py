"""PROTOCOL.md, Security on the wire: TLS with client certificates, the shipped ACL, passwords."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.config import MqttSection, TlsSection
from gateway.errors import LinkError
from gateway.sync.link import Link
from tests.support.broker import (
    Broker,
    Watcher,
    eventually,
    make_certs_script,
    plain_listener,
    running,
    tls_listener,
    write_password_file,
)
from tests.support.ports import free_port

SITE = "oslo"
SHIPPED_CONF = Path(__file__).resolve().parents[2] / "config" / "mosquitto" / "mosquitto.conf"
make_certs = make_certs_script()


@pytest.fixture
def certs(tmp_path: Path) -> Any:
    """A test CA, broker, central and two gateways of site oslo, and the ACL for them."""
    return make_certs.make_site(tmp_path / "certs", SITE, ["door-1", "door-2"])


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Any) -> Iterator[Broker]:
    """Mosquitto with the shipped ACL, require_certificate and CN-as-username."""
    port = free_port()
    conf = tls_listener(port, certs.acl_file.parent, certs.acl_file)
    broker = Broker(tmp_path / "broker", port=port, extra=conf).start()
    yield broker
    broker.stop()


def shipped_broker(tmp_path: Path, certs: Any) -> Broker:
    """Mosquitto running config/mosquitto/mosquitto.conf as shipped (paths and port aside)."""
    port = free_port()
    conf = (
        SHIPPED_CONF.read_text(encoding="utf-8")
        .replace("listener 8883", f"listener {port} 127.0.0.1")
        .replace("/etc/mosquitto/certs/", f"{certs.ca_file.parent}/")
        .replace("/etc/mosquitto/accessgw/acl.conf", str(certs.acl_file))
        .replace("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/")
    )
    return Broker(tmp_path / "shipped", port=port, extra=conf).start()


def tls_params(certs: Any, who: str | None) -> aiomqtt.TLSParameters:
    """aiomqtt TLS parameters for ``central``, a gateway id, or no client certificate."""
    issued = None if who is None else certs.central if who == "central" else certs.gateways[who]
    return aiomqtt.TLSParameters(
        ca_certs=str(certs.ca_file),
        certfile=str(issued.cert) if issued else None,
        keyfile=str(issued.key) if issued else None,
    )


def central(broker: Broker, certs: Any, filters: list[str]) -> Watcher:
    """The central system's client (CN central: the whole tree)."""
    return Watcher(broker.port, filters, tls=tls_params(certs, "central"))


def gateway_link(broker: Broker, certs: Any, gw: str, cert_of: str | None = None) -> Link:
    """A link for gateway ``gw`` holding the certificate of ``cert_of`` (default: its own)."""
    issued = certs.gateways[cert_of or gw]
    tls = TlsSection(ca_file=certs.ca_file, cert_file=issued.cert, key_file=issued.key)
    cfg = MqttSection(host="127.0.0.1", port=broker.port, tls=tls, keepalive=5)
    return Link(cfg, SITE, gw, status_payload=lambda: {"state": "online"}, retry_base=0.1)


async def first_error(link: Link, within: float = 10) -> LinkError:
    """Run the link until it reports a connection error."""
    async with running(link.run()):
        await eventually(lambda: link.last_error is not None, within=within)
        assert link.last_error is not None
        return link.last_error


async def test_gateway_with_its_certificate_connects_and_publishes_its_topics(
    tls_broker: Broker, certs: Any
) -> None:
    link = gateway_link(tls_broker, certs, "door-1")
    topic = f"acs/v1/{SITE}/gw/door-1/checkin"
    async with central(tls_broker, certs, [topic]) as c, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        await link.publish(topic, b'{"seq":1}')
        assert (await c.wait_for(topic)).payload == b'{"seq":1}'
    assert f"u'{SITE}/gw/door-1'" in tls_broker.log.read_text()  # the CN is the username


async def test_gateway_reads_its_site_topics_and_own_commands(
    tls_broker: Broker, certs: Any
) -> None:
    link = gateway_link(tls_broker, certs, "door-1")
    got: list[str] = []

    async def collect(topic: str, payload: bytes) -> None:
        got.append(topic)

    link.on_message(collect)
    wanted = [
        f"acs/v1/{SITE}/entitlements/delta",
        f"acs/v1/{SITE}/time",
        f"acs/v1/{SITE}/gw/door-2/checkin",
        f"acs/v1/{SITE}/gw/door-2/occupancy",
        f"acs/v1/{SITE}/gw/door-1/cmd",
        f"acs/v1/{SITE}/gw/door-1/snapshot",
    ]
    async with central(tls_broker, certs, []) as c, running(link.run()):
        await asyncio.wait_for(link.wait_connected(), 10)
        for topic in wanted:
            await c.publish(topic, b"{}")
        await eventually(lambda: len(got) >= len(wanted), within=10)
    assert got == wanted


async def test_a_gateway_cannot_publish_under_another_gateways_topics(
    tls_broker: Broker, certs: Any
) -> None:
    victim = f"acs/v1/{SITE}/gw/door-1/#"
    door2 = gateway_link(tls_broker, certs, "door-2")
    async with central(tls_broker, certs, [victim]) as c, running(door2.run()):
        await asyncio.wait_for(door2.wait_connected(), 10)
        with pytest.raises(LinkError, match=r"refused the message.*Not authorized"):
            await door2.publish(f"acs/v1/{SITE}/gw/door-1/checkin", b'{"seq":666}')
        await door2.publish(f"acs/v1/{SITE}/gw/door-2/checkin", b'{"seq":1}')  # its own: fine
        await asyncio.sleep(0.3)
    assert c.seen == []


async def test_another_gateways_certificate_cannot_pose_as_that_gateway(
    tls_broker: Broker, certs: Any
) -> None:
    victim = f"acs/v1/{SITE}/gw/door-1/#"
    impostor = gateway_link(tls_broker, certs, "door-1", cert_of="door-2")
    async with central(tls_broker, certs, [victim]) as c:
        async with running(impostor.run()):
            await asyncio.wait_for(impostor.wait_connected(), 10)
            with pytest.raises(LinkError, match="Not authorized"):
                await impostor.publish(f"acs/v1/{SITE}/gw/door-1/checkin", b'{"seq":666}')
            # mosquitto 2.0 lets it connect, but refuses its status (and, later, its will)
            assert "refused the message" in str(impostor.last_error)
        await asyncio.sleep(0.3)
    assert c.seen == []


async def test_a_gateway_cannot_read_another_site(tls_broker: Broker, certs: Any) -> None:
    spy = Watcher(
        tls_broker.port,
        ["acs/v1/bergen/#", "acs/v1/+/time", "#"],
        identifier="spy",
        tls=tls_params(certs, "door-1"),
    )
    async with central(tls_broker, certs, []) as c, spy:
        await c.publish("acs/v1/bergen/time", b"bergen")
        await c.publish("acs/v1/bergen/entitlements/delta", b"bergen")
        await c.publish("acs/v1/bergen/gw/door-1/cmd", b"bergen")
        await c.publish(f"acs/v1/{SITE}/time", b"own site")
        await spy.wait_for(f"acs/v1/{SITE}/time")
        await asyncio.sleep(0.2)
    assert {m.payload for m in spy.seen} == {b"own site"}


async def test_a_client_without_certificate_gets_a_clear_error_not_a_crash_loop(
    tls_broker: Broker, certs: Any
) -> None:
    cfg = MqttSection(host="127.0.0.1", port=tls_broker.port, tls=TlsSection(ca_file=certs.ca_file))
    link = Link(cfg, SITE, "door-1", status_payload=dict, retry_base=0.2, connect_timeout=5)
    async with running(link.run()):
        await eventually(lambda: link.last_error is not None, within=10)
        await asyncio.sleep(1.0)
    message = str(link.last_error)
    assert "refused this gateway's TLS client certificate" in message
    assert "mqtt.tls.cert_file" in message
    attempts = tls_broker.log.read_text().count("peer did not return a certificate")
    assert 1 <= attempts <= 5  # back-off: 0.1-0.2 s, 0.2-0.4 s, 0.4-0.8 s ...


async def test_a_broker_certificate_from_another_ca_is_refused_clearly(
    tls_broker: Broker, certs: Any, tmp_path: Path
) -> None:
    other = make_certs.make_site(tmp_path / "other", SITE, ["door-1"])
    own = certs.gateways["door-1"]
    tls = TlsSection(ca_file=other.ca_file, cert_file=own.cert, key_file=own.key)
    cfg = MqttSection(host="127.0.0.1", port=tls_broker.port, tls=tls)
    link = Link(cfg, SITE, "door-1", status_payload=dict, retry_base=0.2)
    error = await first_error(link)
    assert "TLS certificate was not accepted" in str(error)
    assert "mqtt.tls.ca_file" in str(error)


async def test_missing_certificate_files_are_named_in_the_error(
    tls_broker: Broker, certs: Any, tmp_path: Path
) -> None:
    tls = TlsSection(
        ca_file=certs.ca_file, cert_file=tmp_path / "nope.crt", key_file=tmp_path / "nope.key"
    )
    cfg = MqttSection(host="127.0.0.1", port=tls_broker.port, tls=tls)
    link = Link(cfg, SITE, "door-1", status_payload=dict, retry_base=0.2)
    error = await first_error(link)
    assert "nope.crt" in str(error) and "cannot be loaded" in str(error)


@contextlib.asynccontextmanager
async def password_broker(tmp_path: Path) -> Any:
    """A plain listener with a password file and the shipped ACL (username = identity)."""
    port = free_port()
    passwords = write_password_file(
        tmp_path / "passwd", {f"{SITE}/gw/door-1": "s3cret", "central": "c3ntral"}
    )
    acl = make_certs.acl_text({SITE: ["door-1"]})
    (tmp_path / "acl.conf").write_text(acl, encoding="utf-8")
    conf = plain_listener(port, password_file=passwords, acl_file=tmp_path / "acl.conf")
    broker = Broker(tmp_path / "broker", port=port, extra=conf).start()
    try:
        yield broker
    finally:
        broker.stop()


def password_link(port: int, password_file: Path) -> Link:
    """Gateway door-1 logging in with a username and a password file."""
    cfg = MqttSection(
        host="127.0.0.1", port=port, username=f"{SITE}/gw/door-1", password_file=password_file
    )
    return Link(cfg, SITE, "door-1", status_payload=dict, retry_base=0.2)


async def test_username_and_password_from_the_password_file_log_in(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\n", encoding="utf-8")
    async with password_broker(tmp_path) as broker:
        link = password_link(broker.port, secret)
        async with running(link.run()):
            await asyncio.wait_for(link.wait_connected(), 10)
            await link.publish(f"acs/v1/{SITE}/gw/door-1/event", b"{}")


async def test_a_wrong_password_is_reported_with_what_to_check(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("wrong\n", encoding="utf-8")
    async with password_broker(tmp_path) as broker:
        error = await first_error(password_link(broker.port, secret))
    assert "not authorised" in str(error) and "mqtt.password_file" in str(error)


async def test_a_missing_password_file_is_reported(tmp_path: Path) -> None:
    async with password_broker(tmp_path) as broker:
        error = await first_error(password_link(broker.port, tmp_path / "absent"))
    assert "mqtt.password_file" in str(error) and "absent" in str(error)


async def test_the_shipped_mosquitto_conf_and_acl_enforce_the_rules(
    tmp_path: Path, certs: Any
) -> None:
    broker = shipped_broker(tmp_path, certs)
    try:
        door1 = gateway_link(broker, certs, "door-1")
        async with central(broker, certs, [f"acs/v1/{SITE}/#"]) as c, running(door1.run()):
            await asyncio.wait_for(door1.wait_connected(), 10)
            await door1.publish(f"acs/v1/{SITE}/gw/door-1/event", b"{}")
            with pytest.raises(LinkError, match="Not authorized"):
                await door1.publish(f"acs/v1/{SITE}/gw/door-2/event", b"{}")
            await c.wait_for(f"acs/v1/{SITE}/gw/door-1/event")
        assert not c.on(f"acs/v1/{SITE}/gw/door-2/event")
    finally:
        broker.stop()
