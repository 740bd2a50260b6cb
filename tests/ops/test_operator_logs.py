"""Logs for operators (issue 13 point 2): one readable line per decision and state change."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time

import pytest

from gateway import logs
from simulators.central import CentralSimulator
from simulators.pn532 import Pn532Simulator
from simulators.relay_board import RelayBoardSim
from tests.ops.helpers import MEMBER, NAME, SITE, UID, Daemon, gateway_config, minimal_config
from tests.support.broker import Broker

HEX_FRAME = re.compile(r"(0x[0-9a-fA-F]{2}[ ,]+){3,}|([0-9a-fA-F]{2} ){6,}")


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logs.configure("info", "json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_decision_is_one_line_without_credential_or_name(captured):
    checkin = {"door": "in", "decision": "granted", "reason": "ok", "member": "M1",
               "credential": "nfc:" + UID, "display": NAME, "passed": True}  # fmt: skip
    logs.log_decision(checkin, 0.0123)
    (line,) = lines(captured)
    assert line["message"] == "door in: granted M1 (ok), walked through in 12 ms"
    assert line["level"] == "info" and line["member"] == "M1" and line["latency_ms"] == 12.3
    assert UID not in captured.getvalue() and "Kari" not in captured.getvalue()


def test_the_same_error_again_is_counted_not_repeated(captured):
    log = logging.getLogger("drivers.test")
    for _ in range(50):
        log.error("board relays: timeout")
    log.error("board relays: something else")
    got = [line["message"] for line in lines(captured)]
    assert got == ["board relays: timeout", "board relays: something else"]
    limit = next(
        f for f in logging.getLogger().handlers[0].filters if isinstance(f, logs.RepeatLimit)
    )
    limit.window = 0  # a minute later
    log.error("board relays: timeout")
    assert lines(captured)[-1]["message"] == (
        "board relays: timeout (repeated 49 more times in the last minute)"
    )


def test_libraries_stay_at_warning_and_their_frame_dumps_never_show(captured):
    logging.getLogger("pymodbus.logging").info("Processing: 0x1 0x5 0x0 0x0 0xff 0x0")
    logging.getLogger("pymodbus.logging").error("recv: 0x1 0x85 0x2 0xc3 0x1")
    logging.getLogger("pymodbus.logging").error(
        "No response received after 1 retries, continue with next request"
    )  # the driver says "board ...: offline: <reason>" itself
    logging.getLogger("pymodbus.logging").error("an unexpected pymodbus error")
    logging.getLogger("paho").warning("Connection lost")
    assert [line["message"] for line in lines(captured)] == [
        "an unexpected pymodbus error",
        "Connection lost",
    ]


def test_text_on_a_terminal_json_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    handler = logs.configure("info", "auto", stream=tty)
    try:
        logs.log_state_change("reader_offline", "in", {"reader": "nfc", "reason": "unplugged"})
    finally:
        logging.getLogger().removeHandler(handler)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} WARNING reader nfc \(door in\): offline: unplugged\n",
        tty.getvalue(),
    )


async def test_a_run_with_outages_has_one_readable_line_per_state_change(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    board = RelayBoardSim().start_tcp()
    nfc = Pn532Simulator(link=tmp_path / "ttyUSB-nfc").start()  # a stable name, as udev gives
    daemon = None
    try:
        async with CentralSimulator("127.0.0.1", broker.port, SITE, records=[MEMBER]) as central:
            config = tmp_path / "accessgw.toml"
            config.write_text(
                gateway_config(tmp_path, broker.port, central.public_key_b64, board.port, nfc.path)
            )
            daemon = Daemon(config)  # stderr is a pipe: JSON lines
            await daemon.wait_for_async("entitlements: now at version")
            await daemon.wait_for_async("reader nfc-in (door in): online")

            nfc.place(UID)
            await daemon.wait_for_async("door in: granted M1 (ok)")
            nfc.remove()

            mark = len(daemon.lines)
            board.unplug()
            await daemon.wait_for_async("board relays: offline", after=mark)
            board.plug()
            await daemon.wait_for_async("board relays: online", after=mark)

            mark = len(daemon.lines)
            nfc.unplug()
            await daemon.wait_for_async("reader nfc-in (door in): offline", after=mark)
            nfc.plug()
            await daemon.wait_for_async("reader nfc-in (door in): online", after=mark)

            mark = len(daemon.lines)
            broker.stop()
            await daemon.wait_for_async("next connection attempt", after=mark)
            broker.start()
            await daemon.wait_for_async("MQTT: connected", after=mark)
    finally:
        if daemon is not None:
            daemon.stop()
        nfc.stop()
        board.close()
        broker.stop()

    records = [json.loads(line) for line in daemon.lines]  # every line is JSON
    text = "\n".join(daemon.lines)
    assert UID not in text and UID.lower() not in text
    assert "Kari" not in text
    assert not HEX_FRAME.search(text), [
        r["message"] for r in records if HEX_FRAME.search(r["message"])
    ]

    def said(pattern: str) -> list[dict]:
        return [r for r in records if re.search(pattern, r["message"])]

    for pattern, level in [
        (r"^board relays: offline", "error"),
        (r"^reader nfc-in \(door in\): offline", "warning"),
        (r"^door in: lock relay relays/0 failed: board offline", "error"),
        (r"^door in: granted M1 \(ok\)", "info"),
        (r"next connection attempt", "warning"),
        (r"entitlements vNone", None),
    ]:
        found = said(pattern)
        if level is None:
            assert found == [], found
            continue
        assert len(found) == 1, (pattern, [r["message"] for r in found])
        assert found[0]["level"] == level, found[0]
    assert len(said(r"^reader nfc-in \(door in\): online")) == 2  # at start and after plug
    assert len(said(r"^board relays: online")) == 2
    assert len(said(r"^MQTT: connected")) == 2
    assert not [
        r
        for r in records
        if r["level"] in ("warning", "error") and r["logger"].startswith(("pymodbus", "paho"))
    ]


async def test_each_mqtt_retry_is_one_line_and_only_the_first_a_warning(caplog):
    from gateway.config import MqttSection
    from gateway.sync.link import Link
    from tests.support.ports import free_port

    caplog.set_level(logging.DEBUG, logger="gateway.sync.link")
    cfg = MqttSection(host="127.0.0.1", port=free_port(), reconnect_max=0.2)
    link = Link(cfg, SITE, "gw-1", status_payload=lambda: {"state": "online"}, retry_base=0.05)
    task = asyncio.create_task(link.run())
    await asyncio.sleep(1.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    retries = [r for r in caplog.records if "next connection attempt" in r.getMessage()]
    assert len(retries) >= 3
    assert [r.levelname for r in retries[:2]] == ["WARNING", "DEBUG"]
    assert {r.levelname for r in retries[1:]} == {"DEBUG"}
    other = [r for r in caplog.records if r not in retries and r.levelno >= logging.INFO]
    assert other == [], [r.getMessage() for r in other]  # nothing else per retry


def test_log_level_and_format_come_from_the_command_line(tmp_path):
    config = tmp_path / "accessgw.toml"
    config.write_text(minimal_config(tmp_path / "state", '[log]\nlevel = "debug"\n'))
    quiet = Daemon(config, "--log-level", "warning", "--log-format", "text")
    time.sleep(3)
    assert quiet.stop() == 0
    assert not [line for line in quiet.lines if " INFO " in line or " DEBUG " in line]
    chatty = Daemon(config, "--log-format", "text")  # [log] level = "debug"
    chatty.wait_for("started")
    assert chatty.stop() == 0
    assert re.match(
        r"\d\d:\d\d:\d\d\.\d{3} INFO    gateway door-1 of site club started",
        next(line for line in chatty.lines if "started" in line),
    )


async def test_a_snapshot_says_how_far_it_is(tmp_path, broker, caplog, monkeypatch):

    from tests.integration.gateways import config as gateway_text
    from tests.integration.gateways import running

    monkeypatch.setattr(logs, "PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="accessgw")
    caplog.set_level(logging.INFO, logger="gateway.sync.entitlement_sync")
    from tests.integration.gateways import SITE as E2E_SITE

    async with CentralSimulator(
        "127.0.0.1", broker.port, E2E_SITE, members=600, chunk_records=50
    ) as central:
        text = gateway_text(tmp_path / "state", "gw-1", broker.port, central.public_key_b64)
        async with running(text) as gateway:
            for _ in range(300):
                if gateway.store.version is not None:
                    break
                await asyncio.sleep(0.05)
    said = [r.getMessage() for r in caplog.records]
    assert "entitlements: snapshot 1 arriving (12 chunks)" in said
    progress = [m for m in said if re.match(r"entitlements: snapshot 1: \d+ of 12 chunks", m)]
    assert progress and progress[-1].startswith("entitlements: snapshot 1: 11 of 12 chunks, 550")
