"""Issue 10 point 1: sign-in, sessions, CSRF, host names, headers, no credential leaks."""

from __future__ import annotations

import logging
import sqlite3
import stat
import threading
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.web.app import WebContext, create_app
from gateway.web.auth import InstallerAuth, LoginThrottle
from gateway.web.bridge import Bridge
from gateway.web.eventlog import EventLog
from tests.web.harness import CARD_UID, PASSWORD, Site, eventually, signed_in, site

PUBLIC = {"/login", "/setup"}


def _routes(gw: Site) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, listed from the app itself."""
    ctx = WebContext(
        auth=InstallerAuth(gw.state / "unused"),
        bridge=Bridge(lambda *a: None),  # type: ignore[arg-type, return-value]
        events=EventLog(gw.state / "unused.sqlite"),
        hosts=frozenset(),
    )
    out = []
    for route in create_app(ctx).routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        path = route.path.replace("{", "").replace("}", "")
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                out.append((method, path))
    return out


def test_the_setup_code_sets_the_password_once(gw: Site) -> None:
    code = gw.setup_code()
    anon = httpx.Client(base_url=gw.url)
    assert anon.get("/", follow_redirects=False).headers["location"] == "/setup"
    signed_in(gw)  # uses the code
    assert not (gw.state / "secrets" / "setup.code").exists()
    hash_file = gw.state / "secrets" / "installer.hash"
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o600
    assert hash_file.read_text().startswith("$argon2id$")
    again = httpx.Client(base_url=gw.url)
    again.get("/login")
    r = again.post("/setup", data={"code": code, "password": "another password 1",
                                   "again": "another password 1",
                                   "csrf": again.cookies["agw_pre"]})  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert InstallerAuth(gw.state / "secrets").check_password(PASSWORD)


def test_every_route_refuses_without_a_session(gw: Site) -> None:
    routes = _routes(gw)
    assert len(routes) >= 15  # the list comes from the app: a new route is checked too
    anon = httpx.Client(base_url=gw.url, follow_redirects=False)
    for method, path in routes:
        if path in PUBLIC:
            continue
        r = anon.request(method, path, json={})
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, path, r.status_code)
        else:
            assert r.status_code == 303, (method, path, r.status_code)
            assert r.headers["location"] in ("/login", "/setup")
    assert anon.get("/api/openapi.json").status_code == 401


def test_a_state_change_without_the_csrf_token_is_refused(gw: Site) -> None:
    client = signed_in(gw)
    posts = [p for m, p in _routes(gw) if m == "POST" and p not in PUBLIC]
    assert "/api/tools/pulse" in posts
    for path in posts:
        for token in (None, "wrong"):
            headers = {"x-csrf-token": token} if token else {}
            bare = httpx.Client(base_url=gw.url, cookies=client.cookies, headers=headers)
            r = bare.post(path, json={"board": "relays", "index": 5, "seconds": 1})
            assert r.status_code == 403, (path, r.status_code)
    assert not gw.relays.coil(5)


def test_session_cookie_flags_and_security_headers(gw: Site) -> None:
    client = httpx.Client(base_url=gw.url)
    client.get("/login")
    r = client.post("/login", data={"password": PASSWORD, "csrf": client.cookies["agw_pre"]})
    cookie = r.headers["set-cookie"]
    assert "agw_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would not come back
    page = client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_an_unknown_host_name_is_not_answered(gw: Site) -> None:
    r = httpx.get(gw.url + "/login", headers={"host": "attacker.example"})
    assert r.status_code == 421


def test_wrong_passwords_slow_the_next_tries(gw: Site) -> None:
    client = httpx.Client(base_url=gw.url, headers={"x-forwarded-for": "x"})
    client.get("/login")
    pre = client.cookies["agw_pre"]
    first = client.post("/login", data={"password": "not it at all", "csrf": pre})
    assert first.status_code == 401 and "Next try in" in first.text
    second = client.post("/login", data={"password": "not it either", "csrf": pre})
    assert second.status_code == 401 or second.status_code == 429
    right = client.post("/login", data={"password": PASSWORD, "csrf": pre})
    assert right.status_code == 429 and "wait" in right.text  # even the right one must wait


def test_the_throttle_doubles_per_client_and_holds_everybody_back_past_a_bound() -> None:
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.wait_for("a") == 1.0
    throttle.failed("a")
    assert throttle.wait_for("a") == 2.0
    assert throttle.wait_for("b") == 0.0
    for i in range(25):
        throttle.failed(f"spray-{i}")
    assert throttle.wait_for("b") >= 9.0  # a LAN-wide spray slows everybody
    now[0] += 3600
    assert throttle.wait_for("a") == 0.0 and throttle.wait_for("b") == 0.0


def test_sessions_end_after_thirty_idle_minutes(tmp_path: Path) -> None:
    now = [0.0]
    auth = InstallerAuth(tmp_path, clock=lambda: now[0])
    session = auth.open_session("client")
    now[0] += 29 * 60
    assert auth.session(session.token) is session
    now[0] += 31 * 60
    assert auth.session(session.token) is None


def test_no_full_credential_value_leaves_except_the_next_card_answer(
    gw: Site, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    client = signed_in(gw)
    answer: dict[str, object] = {}

    def ask() -> None:
        answer.update(
            client.post("/api/tools/next-card", json={"reader": "nfc-in", "wait": 10}).json()
        )

    asker = threading.Thread(target=ask)
    asker.start()
    eventually(lambda: gw.gateway.next_card._waiting.get("nfc-in"))
    gw.nfc.place(CARD_UID)
    asker.join(20)
    gw.nfc.remove()
    assert answer["value"] == CARD_UID and answer["member"] == "M1001"
    assert eventually(lambda: client.get("/api/events", params={"member": "M1001"}).json())
    for method, path in _routes(gw):
        if method == "GET" and path not in ("/api/stream",):
            assert CARD_UID not in client.get(path).text, path
    assert CARD_UID not in client.get("/api/events.csv").text
    assert not [r for r in caplog.records if CARD_UID in r.getMessage()]
    out, err = capfd.readouterr()  # the UI process's log lines too
    assert CARD_UID not in out and CARD_UID not in err
    for db in ("journal.sqlite", "web-events.sqlite", "history.sqlite"):
        conn = sqlite3.connect(gw.state / db)
        dump = "\n".join(conn.iterdump())
        conn.close()
        assert CARD_UID not in dump.upper(), db


def test_run_and_check_config_refuse_a_lan_address_without_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[gateway]\nid = "gw"\nsite = "s"\nstate_dir = "%s"\n[mqtt]\nenabled = false\n' % (
        tmp_path / "state"
    )
    path = tmp_path / "accessgw.toml"
    path.write_text(text + '[web]\nlisten = "0.0.0.0"\n')
    assert cli_main(["run", str(path)]) == 1
    assert "without TLS" in capsys.readouterr().err
    assert cli_main(["check-config", str(path)]) == 1  # what run refuses, check-config reports
    assert "web.listen: web.listen = '0.0.0.0' serves" in capsys.readouterr().err
    path.write_text(text + '[web]\nlisten = "0.0.0.0"\nallow_insecure_listen = true\n')
    assert cli_main(["check-config", str(path)]) == 0
    assert "warning" in capsys.readouterr().err
    for extra in ('tls = "self-signed"', "allow_insecure_listen = true"):
        cfg = parse_config(text + f'[web]\nlisten = "0.0.0.0"\n{extra}\n')
        assert cfg.web.insecure_listen_problem() is None
    assert parse_config(text).web.insecure_listen_problem() is None  # loopback by default


def test_self_signed_tls_is_made_once_kept_and_its_cookie_is_secure(tmp_path: Path) -> None:
    with site(tmp_path, 'tls = "self-signed"') as s:
        cert = tmp_path / "secrets" / "web-tls.crt"
        assert stat.S_IMODE((tmp_path / "secrets" / "web-tls.key").stat().st_mode) == 0o600
        client = httpx.Client(base_url=f"https://127.0.0.1:{s.web_port}", verify=False)
        client.get("/setup")
        form = {"code": s.setup_code(), "password": PASSWORD, "again": PASSWORD}
        r = client.post("/setup", data={**form, "csrf": client.cookies["agw_pre"]})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
        first = cert.read_bytes()
    with site(tmp_path, 'tls = "self-signed"'):
        assert cert.read_bytes() == first  # kept across restarts: the browser asks once
