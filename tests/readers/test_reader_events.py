"""Issue 12 point 18, the gateway's side: what a reader reports besides reads (its
tamper switch, its power, keys pressed) becomes journalled events at the reader's door,
in words in the log, and shows in the reader's health on the installer's page."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.web.gateway_side import GatewaySide
from tests.supervision.helpers import ScriptedReader, events, offline_config, running, until


async def test_tamper_power_and_keypad_reports_are_events_of_the_readers_door(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(offline_config(tmp_path / "state")) as gw:
        reader = ScriptedReader("front-reader", gw)
        gw.attach_reader(reader, "in", 0)

        async def online() -> bool:
            return bool(await events(gw, "reader_online"))

        await until(online)
        reader.alert("tamper", True, "tamper", {"state": "open"})
        reader.alert("tamper", True, "tamper", {"state": "open"})  # no change: no event
        reader.alert("power fault", True, "reader_power", {"state": "failed"})
        reader.notice("reader_keypad", {"keys": 4})

        async def journalled() -> bool:
            return bool(await events(gw, "reader_keypad"))

        await until(journalled)
        tamper = await events(gw, "tamper")
        assert [(e["door"], e["detail"]) for e in tamper] == [
            ("in", {"reader": "front-reader", "state": "open", "active": True})
        ]
        power = await events(gw, "reader_power")
        assert power[0]["detail"]["active"] is True
        keypad = await events(gw, "reader_keypad")
        assert keypad[0]["detail"] == {"reader": "front-reader", "keys": 4}
        assert "reader front-reader (door in): tamper switch open" in caplog.text
        assert reader.health.alerts == ("power fault", "tamper")
        reader.alert("tamper", False, "tamper", {"state": "closed"})
        assert reader.health.alerts == ("power fault",)
        assert len(await events(gw, "reader_online")) == 1, "alerts are no link changes"
        shown = GatewaySide(gw)._reader(
            type("Cfg", (), {"id": "front-reader", "door": "in", "profile": "x"})()
        )
        assert shown["alerts"] == ["power fault"]
        assert "the reader reports: power fault" in shown["reason"]
