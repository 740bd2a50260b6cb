"""Restore from the browser on a running gateway (issue 11, point 4): ``accessgw run`` in a
process of its own, with a journal backlog and an OSDP key, is restored from another
gateway's backup through the web UI, stops, applies it at its start and comes back as that
gateway: the same ``seq`` continuing, the same keys, and its own old state kept aside."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.backup import journal_facts
from gateway.identity import load_identity
from gateway.journal import Journal
from gateway.web.auth import hash_path
from tests.ops.helpers import Daemon
from tests.web.restore_box import OLD_OSDP, PASSWORD, answering, running_box, signed_in
from tests.web.restore_support import OSDP_KEY, OSDP_READER, PASSPHRASE
from tests.web.restore_support import PASSWORD as DOOR_2_PASSWORD


def unacked(state: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        journal = await Journal.open(state / "journal.sqlite", "door-2")
        try:
            return await journal.unacked(limit=100_000)
        finally:
            await journal.close()

    return asyncio.run(read())


def installer_actions(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        r["message"]["detail"]["action"]: r["message"]["detail"]
        for r in records
        if r["kind"] == "event" and r["message"]["type"] == "installer_action"
    }


def test_a_running_gateway_comes_back_as_the_gateway_of_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_box(tmp_path, monkeypatch) as box:
        backup = box.backup
        pid = box.daemon.proc.pid
        client = signed_in(box.url, PASSWORD)
        assert client.get("/api/status").json()["gateway"] == "door-1"
        headers = {"content-type": "application/octet-stream",
                   "x-backup-passphrase": quote(PASSPHRASE)}  # fmt: skip
        r = client.post("/api/restore", content=backup.sealed, headers=headers)
        assert r.status_code == 200, r.text
        plan = r.json()["plan"]
        assert plan["current"]["backlog"] > 0 and plan["current"]["osdp_keys"] == ["old-reader"]
        mark = len(box.daemon.lines)
        assert client.post(f"/api/restore/{plan['token']}/confirm").status_code == 200
        client.close()

        box.daemon.wait_for("stopped to apply a staged restore: starting again", after=mark)
        box.daemon.wait_for("restored gateway door-2 of site demo-club", after=mark)
        box.daemon.wait_for("gateway door-2 of site demo-club started", after=mark)
        assert box.daemon.proc.poll() is None and box.daemon.proc.pid == pid  # re-executed
        assert answering(box.url)
        client = signed_in(box.url, DOOR_2_PASSWORD)  # its own installer password
        status = client.get("/api/status").json()
        assert status["gateway"] == "door-2"
        assert sorted(d["id"] for d in status["doors"]) == ["main-in", "side-in"]
        assert client.get("/api/restore").json()["last"]["gateway"] == "door-2"
        client.close()
    assert box.daemon.proc.returncode == 0

    state = box.state
    records = unacked(state)
    seqs = [r["seq"] for r in records]  # door-2's backlog, then what it journalled since, in order
    assert seqs[: backup.last_seq] == list(range(1, backup.last_seq + 1))
    assert seqs[backup.last_seq :] and seqs == sorted(set(seqs))
    assert seqs[backup.last_seq] == backup.last_seq + 1  # the seq goes on, never reused
    applied = installer_actions(records)["restore_applied"]  # told to the central system
    assert applied["backup_of"] == "door-2" and applied["replaced"].startswith("replaced-")
    secrets = state / "secrets"
    assert (secrets / "hmac.key").read_bytes() == backup.hmac_key
    assert (secrets / "osdp" / f"{OSDP_READER}.scbk").read_bytes() == OSDP_KEY
    assert load_identity("door-2", "demo-club", state).public_key_b64 == backup.identity
    assert hash_path(secrets).read_bytes() == backup.password_hash
    assert 'id = "door-2"' in box.config.read_text()
    assert f'state_dir = "{state}"' in box.config.read_text()

    (replaced,) = state.glob("replaced-*")  # door-1 is kept, not destroyed
    old = replaced / "state"
    assert (old / "secrets" / "osdp" / "old-reader.scbk").read_bytes() == OLD_OSDP
    assert journal_facts(old / "journal.sqlite").backlog >= plan["current"]["backlog"]
    assert installer_actions(unacked(old))["restore"]["backup_of"] == "door-2"
    (note,) = (replaced / "outside").glob("*.path")
    assert note.read_text() == str(box.config)
    assert 'id = "door-1"' in (replaced / "outside" / note.stem).read_text()


def test_under_systemd_it_exits_and_the_next_start_applies_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_box(tmp_path, monkeypatch, systemd=True) as box:
        client = signed_in(box.url, PASSWORD)
        headers = {"content-type": "application/octet-stream",
                   "x-backup-passphrase": quote(PASSPHRASE)}  # fmt: skip
        token = client.post("/api/restore", content=box.backup.sealed, headers=headers)
        assert client.post(f"/api/restore/{token.json()['plan']['token']}/confirm").is_success
        client.close()
        assert box.daemon.proc.wait(timeout=30) == 0  # Restart=always starts it again
        box.daemon.wait_for("stopped to apply a staged restore: systemd starts the gateway")
        assert 'id = "door-1"' in box.config.read_text()  # applied at the start, not before
        again = Daemon(box.config, umask=0o077)  # what systemd does 2 s later
        try:
            again.wait_for("restored gateway door-2 of site demo-club")
            again.wait_for("gateway door-2 of site demo-club started")
        finally:
            assert again.stop() == 0
