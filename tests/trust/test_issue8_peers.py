"""Issue 8, the points about peers and trust, each against Mosquitto (PROTOCOL.md,
"Clarifications (2026-12-01)" and "Trust between gateways (2026-12-01)").

Point 1 is shown by test_attacks_peers.py; the two-gateway count by test_two_gateways.py.
Where a point needs a restart (2, 11), the gateway runs as a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli import main
from gateway.entitlements import parse_records, parse_rules
from gateway.history import History
from gateway.passes import make_pass
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from simulators.central import CentralSimulator
from simulators.scanner import ScannerSimulator
from tests.integration.gateways import present, running
from tests.support.broker import Broker, Watcher
from tests.trust.helpers import (
    PHONE,
    SITE,
    Peer,
    bad_messages,
    config,
    gateway_key,
    phone_pass,
    records,
    rules,
    until,
)

ROOT = Path(__file__).resolve().parents[2]
QR_READER = """
[[readers]]
id = "qr"
profile = "newland-fm430"
door = "in"
port = "{port}"
repeat_guard = 0
"""


@contextlib.asynccontextmanager
async def central_for(broker: Broker, keys: dict[str, str]) -> AsyncIterator[CentralSimulator]:
    """The central system, registering ``keys`` (strict: only signed messages count)."""
    async with CentralSimulator(
        "127.0.0.1", broker.port, SITE, rules=rules({}), records=records(),
        time_interval=None, gateways=keys,
    ) as central:  # fmt: skip
        yield central


@contextlib.contextmanager
def gateway_process(cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``accessgw run CONFIG`` as a process of its own, stopped with SIGTERM."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(cfg)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def started(central: CentralSimulator, gw: str, count: int, proc: Any, log: Path) -> None:
    """Wait for the ``count``-th ``started`` event of ``gw`` (signed, so the central took it)."""

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited: {log.read_text()[-3000:]}")
        events = central.received[gw].events
        return [e["type"] for e in events].count("started") >= count

    await until(up, within=20)


async def has_the_set(broker: Broker, gw: str, version: int) -> None:
    """Wait until the gateway's retained status says it applied ``version``."""
    status = f"acs/v1/{SITE}/gw/{gw}/status"

    def current(watcher: Watcher) -> bool:
        return any(json.loads(m.payload).get("entitlements_version") == version
                   for m in watcher.on(status))  # fmt: skip

    async with Watcher(broker.port, [status], identifier="status-reader") as watcher:
        await until(lambda: current(watcher), within=15)


def kept_peer_rows(state: Path) -> int:
    """Peers' check-ins in the passage history (read from another process, as a tool would)."""
    conn = sqlite3.connect(f"file:{state / 'history.sqlite'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM checkins WHERE gw != 'door-1'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


# --- point 2: a stored row can never stop start-up -----------------------------------------


async def test_2_a_stored_check_in_at_year_9999_does_not_stop_the_next_start(
    tmp_path: Path, broker: Broker
) -> None:
    state = tmp_path / "door-1"
    key = gateway_key(state, "door-1")
    store = EntitlementStore.open(state / "store.sqlite", StateDir(state).hmac_key())
    set_rules = parse_rules(rules({}))  # a set with a time zone, as after the first sync
    store.replace(1, set_rules, parse_records(records(), set_rules), {}, datetime.now(UTC))
    store.close()
    History.open(state / "history.sqlite").close()
    row = {"gw": "door-2", "seq": 1, "at": "9999-12-31T23:59:59-23:59", "zone": "gym",
           "direction": "in", "member": "M1", "ticket": None, "contract": "C1", "charged": 0,
           "decision": "granted", "passed": True}  # fmt: skip
    with sqlite3.connect(state / "history.sqlite") as conn:  # what older versions stored
        conn.execute(
            "INSERT INTO checkins (gw, seq, at_unix, member, body) VALUES (?,?,?,?,?)",
            ("door-2", 1, 253402387139.0, "M1", json.dumps(row)),
        )
    async with central_for(broker, {"door-1": key}) as central:
        cfg = tmp_path / "door-1.toml"
        cfg.write_text(config(state, "door-1", broker.port, central.public_key_b64))
        log = tmp_path / "door-1.log"
        with gateway_process(cfg, log) as proc:
            await started(central, "door-1", 1, proc, log)
            assert proc.poll() is None
    assert "skipped" in log.read_text()


# --- point 11: a peer's check-in delivered again after a restart is applied once -----------


async def test_11_a_peer_check_in_delivered_again_after_a_restart_is_applied_once(
    tmp_path: Path, broker: Broker
) -> None:
    state, peer = tmp_path / "door-1", Peer("door-2")
    keys = {"door-1": gateway_key(state, "door-1"), "door-2": peer.public_key_b64}
    use = peer.sign(peer.checkin(member=None, ticket="T-1", contract=None, credential="ticket"))
    name = f"acs/v1/{SITE}/gw/door-2/checkin"
    log = tmp_path / "door-1.log"
    with ScannerSimulator() as qr:
        async with central_for(broker, keys) as central:
            cfg = tmp_path / "door-1.toml"
            cfg.write_text(config(state, "door-1", broker.port, central.public_key_b64)
                           + QR_READER.format(port=qr.path))  # fmt: skip
            with gateway_process(cfg, log) as proc:
                await started(central, "door-1", 1, proc, log)
                await has_the_set(broker, "door-1", central.version)
                await central.publish_raw(name, use)  # T-1 (2 uses) used once at door-2
                await until(lambda: kept_peer_rows(state) == 1)
            with gateway_process(cfg, log) as proc:
                await started(central, "door-1", 2, proc, log)
                await central.publish_raw(name, use)  # the peer publishes it again
                later = peer.sign(peer.checkin(member="M3", contract="K3"))
                await central.publish_raw(name, later)  # applied after the repeat, in order
                await until(lambda: kept_peer_rows(state) == 2)
                qr.scan("EVT-1")  # the ticket's second use, here
                await until(lambda: central.received["door-1"].checkins, within=15)
    [checkin] = central.received["door-1"].checkins
    assert (checkin["ticket"], checkin["reason"]) == ("T-1", "ok")


# --- point 7: a pass shown at one gateway is replayed at every other ------------------------


async def test_7_a_phone_pass_used_at_one_gateway_is_replayed_at_the_other(
    tmp_path: Path, broker: Broker
) -> None:
    keys = {gw: gateway_key(tmp_path / gw, gw) for gw in ("door-a", "door-b")}
    async with central_for(broker, keys) as central:
        key = central.public_key_b64
        async with (
            running(config(tmp_path / "door-a", "door-a", broker.port, key)) as a,
            running(config(tmp_path / "door-b", "door-b", broker.port, key)) as b,
        ):
            await until(lambda: a.store.version == b.store.version == central.version)
            token = phone_pass()
            first = await present(a, "pass", token)
            assert (first["reason"], first["pass"][0]) == ("ok", "dev-1")
            await until(lambda: len(b.state.seen_passes) == 1)
            assert (await present(b, "pass", token))["reason"] == "pass_replayed"
            # and it stays so across b's restart: the replay cache is durable
        async with running(config(tmp_path / "door-b", "door-b", broker.port, key)) as b:
            await until(lambda: b.store.version == central.version)
            assert (await present(b, "pass", token, door="out"))["reason"] == "pass_replayed"


# --- point 12: a peer's occupancy is not double-counted -------------------------------------


async def test_12_occupancy_covers_check_ins_up_to_upto_seq_and_later_ones_add_on(
    tmp_path: Path, broker: Broker
) -> None:
    state, peer = tmp_path / "door-1", Peer("door-2")
    keys = {"door-1": gateway_key(state, "door-1"), "door-2": peer.public_key_b64}
    base = f"acs/v1/{SITE}/gw/door-2"
    async with central_for(broker, keys) as central:
        text = config(state, "door-1", broker.port, central.public_key_b64)
        async with running(text) as gw:
            await until(lambda: gw.store.version == central.version)
            entries = [peer.sign(peer.checkin(member=m, contract=c))
                       for m, c in (("M1", "C1"), ("M3", "K3"), (None, None))]  # fmt: skip
            occupancy = {"at": "2026-12-01T10:00:00+00:00", "zones": {"gym": 3}, "upto_seq": 3}
            # after the outage the retained count arrives before the drained check-ins
            await central.publish_raw(f"{base}/occupancy", peer.sign(occupancy))
            for payload in entries:
                await central.publish_raw(f"{base}/checkin", payload)
            await central.publish_raw(f"{base}/checkin", peer.sign(peer.checkin(ticket="T-1",
                                      member=None, contract=None)))  # fmt: skip
            await until(lambda: gw.state.ticket_uses("T-1") == 1)
            assert gw.state.inside("gym") == 4  # 3 counted + seq 4, not 3 + 4
            occupancy = {"at": "2026-12-01T10:01:00+00:00", "zones": {"gym": 4}, "upto_seq": 4}
            await central.publish_raw(f"{base}/occupancy", peer.sign(occupancy))
            await until(lambda: gw.state.peer_upto.get("door-2") == 4)
            assert gw.state.inside("gym") == 4 and bad_messages(gw) == []
            # what this gateway publishes says what its count includes
            assert (await present(gw, "code", "EVT-1"))["reason"] == "ok"
            assert gw.state.own_upto_seq > 0
            message = await gw.sync.occupancy.current()
            assert message["upto_seq"] == gw.state.own_upto_seq and message["zones"] == {"gym": 1}


# --- point 13: one malformed phone key never invalidates the set ---------------------------


def malformed_phone_member() -> dict[str, Any]:
    return {"member": "M9", "credentials": [
        {"kind": "nfc", "uid": "04000009"},
        {"kind": "phone", "device": "dev-9", "key": "not base64!",
         "bound_at": "2026-01-01T00:00:00+00:00"}],
        "contracts": [{"id": "C9", "type": "recurring", "start": "2020-01-01"}]}  # fmt: skip


def test_13_decide_with_a_malformed_phone_key_answers_bad_pass(tmp_path: Path, capsys) -> None:
    bad = malformed_phone_member()
    set_file = tmp_path / "set.json"
    set_file.write_text(json.dumps({"version": 1, "rules": rules({}), "records": [bad]}))
    token = make_pass(PHONE, "M9", "dev-9", 1_800_000_000)
    args = ["decide", "--set", str(set_file), "--site", SITE, "--zone", "gym",
            "--direction", "in", "--at", "2027-01-15T10:00:00+00:00"]  # fmt: skip
    assert main([*args, "--pass", token]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "bad_pass"
    assert main([*args, "--nfc", "04000009"]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "ok"


async def test_13_a_delta_with_a_malformed_phone_key_is_applied(
    tmp_path: Path, broker: Broker
) -> None:
    state = tmp_path / "door-1"
    async with central_for(broker, {"door-1": gateway_key(state, "door-1")}) as central:
        async with running(config(state, "door-1", broker.port, central.public_key_b64)) as gw:
            await until(lambda: gw.store.version == central.version)
            version = await central.add_member(malformed_phone_member())
            await until(lambda: gw.store.version == version)
            assert (await present(gw, "nfc", "04000009"))["reason"] == "ok"
            assert bad_messages(gw) == []
