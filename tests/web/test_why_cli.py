"""Issue 10 point 5: ``accessgw why`` reads the running gateway's own files."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gateway.cli import main as cli_main
from gateway.web.eventlog import EventLog, Filter
from tests.web.harness import Site, eventually


def _config_file(gw: Site) -> str:
    path = gw.state / "accessgw.toml"
    path.write_text(
        f'[gateway]\nid = "door-1"\nsite = "demo-club"\nstate_dir = "{gw.state}"\n'
        '[mqtt]\nenabled = false\n[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
    )
    return str(path)


def _kept(gw: Site, member: str) -> bool:
    try:
        history = EventLog.reading(gw.state / "web-events.sqlite")
    except sqlite3.Error:
        return False  # the UI process has not made it yet
    try:
        return bool(history.page(Filter(member=member), limit=1))
    except sqlite3.Error:
        return False
    finally:
        history.close()


def test_why_explains_a_refusal_beside_the_running_gateway(
    gw: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    gw.nfc.place("04B2C3D4")  # Ola: his contract ended last year
    items = gw.gateway.activity.items
    eventually(lambda: any(i.get("member") == "M1002" for i in items))
    gw.nfc.remove()
    assert eventually(lambda: _kept(gw, "M1002"))  # the UI process's history has it
    config = _config_file(gw)
    assert cli_main(["why", "--member", "M1002", "--door", "main-in", "--config", config]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["record"]["display"] == "Ola Hansen"
    assert answer["now"]["decision"] == "denied" and answer["now"]["reason"] == "expired"
    assert "contract C2 (recurring): expired" in answer["now"]["trace"]
    last = answer["last_decisions"][0]
    assert last["decision"] == "denied" and last["what"] == "expired" and last["trace"]
    assert cli_main(["why", "--member", "M1001", "--door", "main-in", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out)["now"]["decision"] == "granted"
    assert cli_main(["why", "--member", "M1001", "--door", "nowhere", "--config", config]) == 1
    assert "no door 'nowhere'" in capsys.readouterr().err


def test_setup_code_and_passwd_commands(gw: Site, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(gw)
    code = (gw.state / "secrets" / "setup.code").read_text().strip() if (
        gw.state / "secrets" / "setup.code").exists() else None  # fmt: skip
    status = cli_main(["setup-code", config])
    out = capsys.readouterr().out
    if code:
        assert status == 0 and code in out
    else:
        assert status == 1 and "passwd" in out
    import io
    import sys

    sys.stdin = io.StringIO("a brand new password\n")
    try:
        assert cli_main(["passwd", "--stdin", config]) == 0
    finally:
        sys.stdin = sys.__stdin__
    from gateway.web.auth import InstallerAuth

    assert InstallerAuth(gw.state / "secrets").check_password("a brand new password")
    assert cli_main(["setup-code", config]) == 1  # a password is set: the code is gone
