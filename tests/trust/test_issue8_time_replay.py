"""Issue 8, point 6, with the gateway as a process of its own: a five-day-old signed ``time``
replayed after a restart cannot un-stale an expired set (Clarifications, Time: where the
clock is not trusted, a ``time`` counts only if its ``issued_at`` is not older than the
newest one the gateway has already stored, kept across restarts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.entitlements import parse_records, parse_rules
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from gateway.sync.envelopes import public_key_b64, seal
from simulators.scanner import ScannerSimulator
from tests.support.broker import Broker, Watcher
from tests.trust.helpers import SITE, config, gateway_key, records, rules, until
from tests.trust.test_issue8_peers import QR_READER, gateway_process

VERSION = 7
CHECKINS = f"acs/v1/{SITE}/gw/door-1/checkin"
EVENTS = f"acs/v1/{SITE}/gw/door-1/event"
STATUS = f"acs/v1/{SITE}/gw/door-1/status"


def age_the_set(state: Path, set_rules: dict[str, Any], days: float) -> None:
    """The set as a gateway keeps it, last confirmed ``days`` ago (so stale after 24 h)."""
    member = {"member": "M4", "credentials": [{"kind": "code", "value": "QR-M4"}],
              "contracts": [{"id": "C4", "type": "recurring", "start": "2020-01-01"}]}  # fmt: skip
    parsed = parse_rules(set_rules)
    store = EntitlementStore.open(state / "store.sqlite", StateDir(state).hmac_key())
    try:
        store.replace(VERSION, parsed, parse_records([*records(), member], parsed), {},
                      datetime.now(UTC) - timedelta(days=days))  # fmt: skip
    finally:
        store.close()


def time_envelope(key: Ed25519PrivateKey, at: datetime) -> bytes:
    return seal("time", SITE, {"now": at.isoformat(), "version": VERSION}, key, at)


def checkin_reasons(watcher: Watcher) -> list[str]:
    """The reasons of the check-ins the gateway published, once each (by id, in order)."""
    reasons: dict[str, str] = {}
    for seen in watcher.on(CHECKINS):
        checkin = json.loads(seen.payload)
        reasons[checkin["id"]] = checkin["reason"]
    return list(reasons.values())


async def scan_reason(watcher: Watcher, scanner: ScannerSimulator) -> str:
    """Scan M4's code; the reason of the next new check-in the gateway publishes."""
    before = len(checkin_reasons(watcher))
    scanner.scan("QR-M4")
    await until(lambda: len(checkin_reasons(watcher)) > before, within=20)
    return checkin_reasons(watcher)[before]


async def test_6_an_old_time_replayed_after_a_restart_does_not_unstale_the_set(
    tmp_path: Path, broker: Broker
) -> None:
    central = Ed25519PrivateKey.generate()
    state = tmp_path / "door-1"
    set_rules = rules({"door-1": gateway_key(state, "door-1")}, max_offline_hours=24)
    age_the_set(state, set_rules, days=5)
    log = tmp_path / "door-1.log"
    with ScannerSimulator() as qr:
        text = config(state, "door-1", broker.port, public_key_b64(central.public_key()))
        text = text.replace('clock = "trusted"', 'clock = "central"') + QR_READER.format(
            port=qr.path
        )
        cfg = tmp_path / "door-1.toml"
        cfg.write_text(text)
        async with Watcher(
            broker.port, [CHECKINS, EVENTS, STATUS], identifier="observer"
        ) as watcher:

            def started(count: int) -> bool:
                types = [json.loads(s.payload).get("type") for s in watcher.on(EVENTS)]
                return types.count("started") >= count

            with gateway_process(cfg, log) as proc:
                await until(lambda: started(1), within=20)
                assert await scan_reason(watcher, qr) == "entitlements_stale"
                now = datetime.now(UTC)
                await watcher.publish(f"acs/v1/{SITE}/time", time_envelope(central, now))
                assert await _eventually_reason(watcher, qr, "ok") == "ok"  # a fresh time counts
            age_the_set(state, set_rules, days=5)  # stale again while it was stopped
            with gateway_process(cfg, log) as proc:
                await until(lambda: started(2), within=20)
                assert await scan_reason(watcher, qr) == "entitlements_stale"
                old = now - timedelta(days=5)  # signed, authentic, and five days old
                await watcher.publish(f"acs/v1/{SITE}/time", time_envelope(central, old))
                assert await scan_reason(watcher, qr) == "entitlements_stale"
                statuses = [json.loads(s.payload) for s in watcher.on(STATUS)]
                assert statuses[-1]["clock"] == "unsynced"  # nor did it make the clock trusted
                assert proc.poll() is None


async def _eventually_reason(watcher: Watcher, scanner: ScannerSimulator, want: str) -> str:
    """Scan until a check-in says ``want`` (the time is applied a moment after it arrives)."""
    reason = ""
    for _ in range(20):
        reason = await scan_reason(watcher, scanner)
        if reason == want:
            break
    return reason
