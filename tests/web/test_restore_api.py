"""Restore from the browser, through the API (issue 11, point 4): upload -> check -> confirm.

The archive is opened and checked whole, for this box, before anything changes: a wrong
passphrase, a foreign or truncated file, or a config that would not run here is refused
in words and leaves the box as it was. A good one shows its plan; confirming stages it,
journals an ``installer_action`` (no secret) and asks the gateway to start again.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.backup import PENDING, STAGED
from tests.web.harness import Site, signed_in
from tests.web.restore_support import PASSPHRASE, Backup, other_gateway_backup, resealed


@pytest.fixture(scope="module")
def client(gw: Site) -> Iterator[httpx.Client]:
    c = signed_in(gw)
    yield c
    c.close()


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    return other_gateway_backup(Path(tmp_path_factory.mktemp("door-2")))


def upload(client: httpx.Client, data: bytes, passphrase: str = PASSPHRASE) -> httpx.Response:
    headers = {"content-type": "application/octet-stream", "x-backup-passphrase": quote(passphrase)}
    return client.post("/api/restore", content=data, headers=headers)


def box(gw: Site) -> dict[str, Any]:
    """What must not change before a confirmed restore: the config, every state file
    (but the restore's own staging, and what the running gateway writes anyway)."""
    files = {p.relative_to(gw.state): p.stat().st_mtime_ns for p in gw.state.rglob("*")
             if p.is_file() and "-wal" not in p.name and "-shm" not in p.name
             and not p.name.startswith(("history", "web-events"))
             and not p.relative_to(gw.state).parts[0].startswith((PENDING, STAGED))}  # fmt: skip
    return {"config": gw.config_path.read_text(), "files": files}


def test_only_a_signed_in_installer_with_csrf_can_upload(gw: Site, client: httpx.Client) -> None:
    headers = {"x-backup-passphrase": quote(PASSPHRASE)}
    assert httpx.post(gw.url + "/api/restore", content=b"x", headers=headers).status_code == 401
    no_csrf = httpx.post(gw.url + "/api/restore", content=b"x", headers=headers,
                         cookies=client.cookies)  # fmt: skip
    assert no_csrf.status_code == 403


def test_the_size_is_bounded_before_anything_is_read(gw: Site, client: httpx.Client) -> None:
    from gateway.web.config_routes import RESTORE_MAX

    cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    head = (f"POST /api/restore HTTP/1.1\r\nHost: 127.0.0.1:{gw.web_port}\r\n"
            f"Cookie: {cookies}\r\nX-CSRF-Token: {client.headers['x-csrf-token']}\r\n"
            f"X-Backup-Passphrase: {quote(PASSPHRASE)}\r\n"
            f"Content-Length: {RESTORE_MAX + 1}\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", gw.web_port), timeout=10) as sock:
        sock.sendall(head.encode() + b"AGWBAK1\n")  # the rest never comes: not waited for
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    r = upload(client, b"")
    assert r.status_code == 422 and r.json()["message"] == "the file is empty"
    assert upload(client, b"AGWBAK1\n...", passphrase="short").status_code == 422


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong passphrase", "the passphrase is wrong, or the file is damaged"),
        ("truncated", "the passphrase is wrong, or the file is damaged"),
        ("foreign", "this is not an accessgw backup"),
        ("no manifest", "the backup has no manifest: it was not made by accessgw backup"),
        ("unlisted member", "the backup holds files its manifest does not list: 'state/x.sqlite'"),
        ("damaged journal", "the backup's journal.sqlite is not an SQLite database"),
        ("config not for this box", "the backup's config would not run on this box: "),
        ("config not TOML", "the backup's config is not valid TOML"),
    ],
)
def test_a_bad_backup_is_refused_in_words_and_nothing_changes(
    gw: Site, client: httpx.Client, backup: Backup, case: str, message: str
) -> None:
    sealed, passphrase = backup.sealed, PASSPHRASE
    if case == "wrong passphrase":
        passphrase = "not the right passphrase"
    elif case == "truncated":
        sealed = sealed[: len(sealed) // 2]
    elif case == "foreign":
        sealed = b"PK\x03\x04" + bytes(4000)  # a zip file
    elif case == "no manifest":
        sealed = resealed(sealed, lambda m, members: m.clear())
        sealed = _without_manifest(sealed)
    elif case == "unlisted member":
        sealed = resealed(sealed, lambda m, members: members.update({"state/x.sqlite": b""}))
    elif case == "damaged journal":
        sealed = resealed(
            sealed, lambda m, members: members.update({"state/journal.sqlite": b"garbage"})
        )
    elif case == "config not TOML":
        sealed = resealed(sealed, lambda m, members: members.update({"config.toml": b"[gw"}))
    elif case == "config not for this box":

        def break_config(m: dict[str, Any], members: dict[str, bytes]) -> None:
            text = members["config.toml"].decode()
            broken = text.replace('profile = "fake-io"', 'profile = "modbus-tcp-relay"')
            members["config.toml"] = broken.encode()  # a Modbus TCP board without its host

        sealed = resealed(sealed, break_config)
    before = box(gw)
    r = upload(client, sealed, passphrase)
    assert r.status_code == 422, r.text
    assert r.json()["ok"] is False
    assert message in r.json()["message"], r.json()["message"]
    if case == "config not for this box":  # the key, line and what is allowed, as check-config
        assert "boards[io]" in r.json()["message"] and "line " in r.json()["message"]
    assert box(gw) == before
    assert not list(gw.state.glob(f"{PENDING}*")) and not (gw.state / STAGED).exists()
    assert not list((gw.state / "restore-uploads").glob("*"))  # the upload is not kept


def _without_manifest(sealed: bytes) -> bytes:
    import io
    import tarfile

    from gateway.backup import seal, unseal

    plain = unseal(sealed, PASSPHRASE)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar, tarfile.open(fileobj=out, mode="w") as new:
        for info in tar.getmembers():
            if info.name != "manifest.json":
                new.addfile(info, tar.extractfile(info))
    return seal(out.getvalue(), PASSPHRASE)


def test_a_good_backup_shows_its_plan_then_confirming_stages_it_and_restarts(
    gw: Site, client: httpx.Client, backup: Backup
) -> None:
    before = box(gw)
    r = upload(client, backup.sealed)
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert (plan["gateway"], plan["site"]) == ("door-2", "demo-club")
    assert plan["backlog"] == backup.backlog and plan["last_seq"] == backup.last_seq
    assert plan["doors"] == ["main-in (gym, in)", "side-in (gym, in)"]
    assert plan["boards"] == ["io (fake-io)"] and plan["readers"] == []
    assert plan["osdp_keys"] == ["entry-osdp"]
    assert plan["state_dir"] == str(gw.state)  # made to fit this box
    current = plan["current"]
    assert (current["gateway"], current["site"]) == ("door-1", "demo-club")
    assert current["backlog"] > 0 and current["entitlements"] is True
    assert box(gw) == before  # checked and written beside: nothing in use changed

    page = client.get(f"/restore/{plan['token']}")
    assert page.status_code == 200
    assert "Restore door-2?" in page.text and backup.hmac_key.hex() not in page.text
    assert f"This box has {current['backlog']} check-ins and events" in page.text
    assert client.get("/restore/0123456789abcdef").status_code == 409  # no such restore

    assert client.post(f"/api/restore/{plan['token']}/confirm",
                       headers={"x-csrf-token": ""}).status_code == 403  # fmt: skip
    assert not gw.gateway.restart_wanted.is_set()
    done = client.post(f"/api/restore/{plan['token']}/confirm")
    assert done.status_code == 200, done.text
    assert done.json()["gateway"] == "door-2"
    staged = gw.state / STAGED
    assert (staged / "plan.json").is_file() and not list(gw.state.glob(f"{PENDING}*"))
    assert box(gw)["config"] == before["config"]  # applied at the next start, not now
    deadline = __import__("time").monotonic() + 5
    while not gw.gateway.restart_wanted.is_set() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    assert gw.gateway.restart_wanted.is_set()  # run_gateway stops and starts it again

    records = gw.call(gw.gateway.journal.unacked(limit=10_000))
    (action,) = [
        r["message"] for r in records
        if r["kind"] == "event" and r["message"]["type"] == "installer_action"
        and r["message"]["detail"]["action"] == "restore"
    ]  # fmt: skip
    assert action["detail"]["backup_of"] == "door-2"
    assert action["detail"]["by"].startswith("installer at ")
    assert PASSPHRASE not in json.dumps(action) and "hmac" not in json.dumps(action)
    status = client.get("/api/restore").json()
    assert status["staged"] == "door-2" and status["failed"] is None


def test_a_checked_backup_can_be_cancelled(gw: Site, client: httpx.Client, backup: Backup) -> None:
    token = upload(client, backup.sealed).json()["plan"]["token"]
    assert list(gw.state.glob(f"{PENDING}{token}"))
    assert client.delete(f"/api/restore/{token}").status_code == 200
    assert not list(gw.state.glob(f"{PENDING}*"))
    assert client.post(f"/api/restore/{token}/confirm").status_code == 409


def test_restoring_a_gateway_onto_itself_from_an_older_backup_is_warned_about(
    gw: Site, client: httpx.Client
) -> None:
    own = client.post("/api/backup", json={"passphrase": PASSPHRASE})  # journals "backup"
    assert own.status_code == 200
    r = upload(client, own.content)
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["gateway"] == plan["current"]["gateway"] == "door-1"
    assert plan["current"]["last_seq"] > plan["last_seq"]
    page = client.get(f"/restore/{plan['token']}").text
    assert 'id="restore-older-warning"' in page
    newer = plan["current"]["last_seq"] - plan["last_seq"]
    assert f"the {newer} newer records of this box can no longer be delivered" in page
    assert client.delete(f"/api/restore/{plan['token']}").status_code == 200
