""" "Test connection" (issue 11, point 3): broker settings tried before they are saved, the
cause in words: DNS, TCP refused, TLS verify, certificate not accepted, ACL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import MqttSection, TlsSection
from gateway.mqtt_check import try_broker
from tests.support.broker import Broker, make_certs_script, tls_listener
from tests.support.ports import free_port

SITE = "oslo"
make_certs = make_certs_script()


@pytest.fixture
def certs(tmp_path: Path) -> Any:
    return make_certs.make_site(tmp_path / "certs", SITE, ["door-1"])


@pytest.fixture
def broker(tmp_path: Path, certs: Any) -> Iterator[Broker]:
    """Mosquitto with TLS, client certificates required and the shipped ACL."""
    port = free_port()
    conf = tls_listener(port, certs.acl_file.parent, certs.acl_file)
    running = Broker(tmp_path / "broker", port=port, extra=conf).start()
    yield running
    running.stop()


def tls(certs: Any, *, ca: Path | None = None, client: bool = True) -> TlsSection:
    own = certs.gateways["door-1"]
    return TlsSection(
        ca_file=ca or certs.ca_file,
        cert_file=own.cert if client else None,
        key_file=own.key if client else None,
    )


async def test_good_settings_connect_and_subscribe(broker: Broker, certs: Any) -> None:
    mqtt = MqttSection(host="127.0.0.1", port=broker.port, tls=tls(certs))
    result = await try_broker(mqtt, SITE, "door-1", within=5)
    assert (result.ok, result.stage) == (True, "ok")
    assert "subscribed to site oslo's topics as door-1" in result.message


async def test_a_name_that_does_not_resolve_is_a_dns_problem() -> None:
    mqtt = MqttSection(host="broker.no-such-name.invalid", port=8883)
    result = await try_broker(mqtt, SITE, "door-1", within=5)
    assert (result.ok, result.stage) == (False, "dns")
    assert "cannot resolve the MQTT broker host 'broker.no-such-name.invalid'" in result.message


async def test_nothing_listening_is_a_refused_tcp_connection() -> None:
    mqtt = MqttSection(host="127.0.0.1", port=free_port())
    result = await try_broker(mqtt, SITE, "door-1", within=5)
    assert (result.ok, result.stage) == (False, "tcp")
    assert "nothing accepts connections there" in result.message


async def test_a_broker_certificate_from_another_ca_fails_tls_verification(
    broker: Broker, certs: Any, tmp_path: Path
) -> None:
    other = make_certs.make_site(tmp_path / "other", SITE, ["door-1"])
    mqtt = MqttSection(host="127.0.0.1", port=broker.port, tls=tls(certs, ca=other.ca_file))
    result = await try_broker(mqtt, SITE, "door-1", within=5)
    assert (result.ok, result.stage) == (False, "tls")
    assert "the broker's TLS certificate was not accepted" in result.message


async def test_no_client_certificate_is_not_accepted_by_the_broker(
    broker: Broker, certs: Any
) -> None:
    mqtt = MqttSection(host="127.0.0.1", port=broker.port, tls=tls(certs, client=False))
    result = await try_broker(mqtt, SITE, "door-1", within=5)
    assert (result.ok, result.stage) == (False, "tls")
    assert "refused this gateway's TLS client certificate" in result.message


async def test_topics_the_acl_does_not_grant_are_an_acl_problem(broker: Broker, certs: Any) -> None:
    mqtt = MqttSection(host="127.0.0.1", port=broker.port, tls=tls(certs))
    result = await try_broker(mqtt, "bergen", "door-1", within=5)  # not door-1's site
    assert (result.ok, result.stage) == (False, "acl")
    assert "refused the message on acs/v1/bergen/gw/door-1/test: Not authorized" in result.message
    assert "does its ACL let this gateway publish" in result.message


async def test_the_running_gateways_session_is_left_alone(broker: Broker, certs: Any) -> None:
    mqtt = MqttSection(host="127.0.0.1", port=broker.port, tls=tls(certs))
    assert (await try_broker(mqtt, SITE, "door-1", within=5)).ok
    log = broker.log.read_text()
    assert "oslo.door-1.test" in log or "oslo/gw/door-1" in log
    assert "Will message" not in log
