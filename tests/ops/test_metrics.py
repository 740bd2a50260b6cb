"""Metrics (issue 13 point 1): /metrics moves as the traffic through the simulators says."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.sync.topics import topic
from simulators.central import CentralSimulator
from simulators.pn532 import Pn532Simulator
from simulators.relay_board import RelayBoardSim
from tests.ops.helpers import MEMBER, ROOT, SITE, UID, Daemon, gateway_config
from tests.support.broker import Broker
from tests.support.ports import free_port

TOKEN = "scrape-token-0123456789"


def scrape(port: int, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def eventually(port: int, name: str, labels: dict[str, str], want, within: float = 15):
    deadline = asyncio.get_running_loop().time() + within
    key = (name, tuple(sorted(labels.items())))
    while True:
        got = await asyncio.to_thread(scrape, port)
        if want(got.get(key)):
            return got
        if asyncio.get_running_loop().time() > deadline:
            seen = {k: v for k, v in got.items() if k[0] == name}
            raise AssertionError(f"{name}{labels} = {got.get(key)}; {seen}")
        await asyncio.sleep(0.2)


def test_bad_message_labels_stay_bounded():
    assert metrics._topic_label("acs/v1/club/gw/gw-7/checkin") == "gw/+/checkin"
    assert metrics._topic_label("acs/v1/club/entitlements/delta") == "entitlements/delta"
    assert metrics._reason_label("time: not newer than the last one") == "time"
    assert metrics._reason_label("chunk 12 of 40 missing") == "chunk N of N missing"
    assert metrics._reason_label("not valid JSON in UTF-8") == "not valid JSON in UTF-8"


async def test_metrics_follow_the_traffic_through_the_simulators(tmp_path):
    port = free_port()
    token = tmp_path / "metrics.token"
    token.write_text(TOKEN + "\n")
    extra = f'[metrics]\nenabled = true\nport = {port}\ntoken_file = "{token}"\n'
    broker = Broker(tmp_path / "broker").start()
    board = RelayBoardSim().start_tcp()
    nfc = Pn532Simulator(link=tmp_path / "ttyUSB-nfc").start()  # a stable name, as udev gives
    daemon = None
    try:
        async with CentralSimulator("127.0.0.1", broker.port, SITE, records=[MEMBER]) as central:
            config = tmp_path / "accessgw.toml"
            config.write_text(
                gateway_config(
                    tmp_path, broker.port, central.public_key_b64, board.port, nfc.path, extra
                )
            )
            daemon = Daemon(config)
            await daemon.wait_for_async("entitlements: now at version 1")
            await daemon.wait_for_async("reader nfc-in (door in): online")

            try:
                await asyncio.to_thread(scrape, port, None)
                raise AssertionError("scraped without the token")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401

            nfc.place(UID)  # granted, the lock relay released
            await daemon.wait_for_async("door in: granted M1 (ok)")
            nfc.remove()
            await asyncio.sleep(0.7)
            nfc.place("04FFFFFF")  # nobody's card
            await daemon.wait_for_async("door in: denied unknown credential (unknown_credential)")
            nfc.remove()
            await central.publish_raw(topic(SITE, "entitlements", "delta"), b"{not json")

            got = await eventually(
                port, "accessgw_bad_messages_total",
                {"topic": "entitlements/delta", "reason": "not valid JSON in UTF-8"},
                lambda v: v == 1,
            )  # fmt: skip
            got = await eventually(port, "accessgw_entitlements_version", {}, lambda v: v == 1)
            got = await eventually(  # the loop-lag probe's samples, taken every 5 s
                port, "accessgw_event_loop_lag_seconds_count", {}, lambda v: v and v > 100
            )
    finally:
        if daemon is not None:
            daemon.stop()
        nfc.stop()
        board.close()
        broker.stop()

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    decisions = "accessgw_decisions_total"
    assert value(decisions, door="in", decision="granted", reason="ok") == 1
    assert value(decisions, door="in", decision="denied", reason="unknown_credential") == 1
    assert value("accessgw_decision_seconds_count", door="in") == 2
    assert 0 < value("accessgw_decision_seconds_sum", door="in") < 1
    assert value("accessgw_tap_to_relay_seconds_count", door="in") == 1  # grants only
    assert 0 < value("accessgw_tap_to_relay_seconds_sum", door="in") < 2
    # each decision's wait for its durable record, granted or not: the disk's part
    assert value("accessgw_journal_commit_seconds_count", door="in") == 2
    assert 0 < value("accessgw_journal_commit_seconds_sum", door="in") < 2
    assert value("accessgw_reader_up", reader="nfc-in") == 1
    assert value("accessgw_board_up", board="relays") == 1
    assert value("accessgw_mqtt_link_up") == 1
    assert value("accessgw_sync_in_progress") == 0
    assert value("accessgw_journal_backlog") is not None
    assert value("accessgw_journal_oldest_unacked_age_seconds") is not None
    assert value("accessgw_entitlements_age_seconds") is not None
    assert value("accessgw_event_loop_lag_seconds_count") > 0
    assert value("accessgw_peer_checkins_total", result="accepted") is None  # no peers here
    assert value("accessgw_resident_memory_bytes") > 10_000_000


def test_the_grafana_dashboard_uses_only_metrics_the_gateway_serves():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    served = {
        sample_name
        for family in metrics.REGISTRY.collect()
        for sample_name in (family.name, *(s.name for s in family.samples))
    }
    served |= {
        f"{m.name}_{suffix}" for m in metrics.REGISTRY.collect() for suffix in ("total", "bucket")
    }
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(accessgw_\w+|process_\w+)", expr)}
    assert len(dashboard["panels"]) >= 15
    assert used and used <= served, used - served


def test_a_refused_peer_checkin_counts_as_refused_and_as_a_bad_message():
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    refused = value("accessgw_peer_checkins_total", result="refused")
    bad = value("accessgw_bad_messages_total", topic="gw/+/checkin", reason="check-in")
    metrics.event(
        "bad_message", {"topic": "acs/v1/club/gw/gw-2/checkin", "reason": "check-in: bad"}
    )
    assert value("accessgw_peer_checkins_total", result="refused") == refused + 1
    assert value("accessgw_bad_messages_total", topic="gw/+/checkin", reason="check-in") == bad + 1


def test_bad_message_reasons_beyond_the_cap_are_counted_as_other(monkeypatch):
    monkeypatch.setattr(metrics, "_bad_series", set())
    monkeypatch.setattr(metrics, "MAX_BAD_MESSAGE_SERIES", 3)
    for n in range(10):
        metrics.event("bad_message", {"topic": "x/cap", "reason": f"reason-{'a' * n}"})
    assert len(metrics._bad_series) == 4  # three reasons, then "other"
    assert ("x/cap", "other") in metrics._bad_series


def test_memory_is_known_even_where_systemd_hides_proc_stat(tmp_path):
    assert metrics.resident_memory_bytes() > 10_000_000  # /proc/self/statm
    assert metrics.resident_memory_bytes(str(tmp_path / "hidden")) > 10_000_000  # peak RSS
