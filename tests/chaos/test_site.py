"""Gateways of one site as processes, peers exchanging check-ins (issue 9, chaos suite).

Long form (``ACCESSGW_CHAOS_LONG=1``): 50 gateways, 20 taps a second across the site for
10 minutes. CI: 5 gateways for 15 s. Knobs: ``ACCESSGW_CHAOS_GATEWAYS``,
``ACCESSGW_CHAOS_SITE_SECONDS``, ``ACCESSGW_CHAOS_SITE_RATE``.

Two topologies: every gateway and the central simulator on one Mosquitto; and the gateways
on a site broker bridged (``connection``, ``topic acs/v1/# both 1``) to a central broker
that the central simulator uses, as a chain with a broker per club would run it.

Shown: afterwards every gateway's passage history holds, for every gateway of the site
(itself included), exactly as many passages and clip-card charges as the central counted
from it; nothing lost, no seq reused, each gateway's check-ins first arrived in seq order;
each daemon's RSS (sampled through the run) grew by less than a generous bound. The growth
is reported, not timed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import LONG
from tests.chaos.site import SiteBroker, run_site

GATEWAYS = int(os.environ.get("ACCESSGW_CHAOS_GATEWAYS", 50 if LONG else 5))
SECONDS = float(os.environ.get("ACCESSGW_CHAOS_SITE_SECONDS", 600 if LONG else 15))
RATE = float(os.environ.get("ACCESSGW_CHAOS_SITE_RATE", 20))
PATIENCE = 900 if LONG else max(60, GATEWAYS * 6)  # s to wait for each stage to finish
RSS_GROWTH_BOUND_MIB = 64  # per gateway over the whole run: generous, a leak shows anyway


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[SiteBroker]:
    """One Mosquitto for the gateways and the central simulator."""
    b = SiteBroker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[tuple[SiteBroker, SiteBroker]]:
    """A central broker, and a site broker bridged to it (both on loopback)."""
    central = SiteBroker(tmp_path / "central-broker").start()
    site = SiteBroker(tmp_path / "site-broker")
    site.extra = (
        f"listener {site.port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "connection central\n"
        f"address 127.0.0.1:{central.port}\n"
        "topic acs/v1/# both 1\n"
        "cleansession false\n"
        f"remote_clientid bridge-{site.port}\n"
        "notifications false\n"
        "bridge_protocol_version mqttv311\n"
        "try_private true\n"
    )
    try:
        site.start()
        try:
            yield site, central
        finally:
            site.stop()
    finally:
        central.stop()


async def _run_and_check(
    tmp_path: Path, gateway_broker: SiteBroker, central_broker: SiteBroker, topology: str
) -> None:
    run = await run_site(
        tmp_path,
        gateway_port=gateway_broker.port,
        central_port=central_broker.port,
        gateways=GATEWAYS,
        seconds=SECONDS,
        rate=RATE,
        sample_every=30.0 if LONG else 2.0,
        patience=PATIENCE,
    )
    print(json.dumps({"site": topology, **run.summary()}))
    assert run.lost == 0
    assert run.seq_reused == 0
    assert run.out_of_order == 0  # each gateway's check-ins first arrived in seq order
    passed = run.central["passed"]
    assert sum(passed.values()) > 0
    assert sum(run.central["checkins"].values()) == run.taps  # every tap decided, delivered
    for gw, history in run.histories.items():
        assert history == passed, f"{gw} applied other counts than the central's"
        assert run.charged_at[gw] == run.central_charged, f"{gw}: other clip-card charges"
    assert run.credits_used_at_central == run.central_charged
    growth = run.growth_kib()
    assert len(growth) == run.gateways, "RSS was not sampled at every gateway"
    too_much = {gw: kib for gw, kib in growth.items() if kib > RSS_GROWTH_BOUND_MIB * 1024}
    assert too_much == {}, f"RSS grew by more than {RSS_GROWTH_BOUND_MIB} MiB: {too_much}"


async def test_gateways_of_one_site_agree_with_the_central_and_stay_flat(
    tmp_path: Path, site_broker: SiteBroker
) -> None:
    await _run_and_check(tmp_path, site_broker, site_broker, "one broker")


async def test_the_same_site_behind_a_mosquitto_bridge(
    tmp_path: Path, bridged: tuple[SiteBroker, SiteBroker]
) -> None:
    site, central = bridged
    await _run_and_check(tmp_path, site, central, "site broker bridged to a central broker")
