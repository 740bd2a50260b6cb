"""Devices and MQTT from the browser, through the API (issue 11, points 2 and 3).

The installer's changes go through the same validation as check-config and run, are
applied to the running gateway as a whole, kept as versions, and rolled back in one call.
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulators.relay_board import RelayBoardSim
from tests.web.harness import Site, signed_in, site


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with site(Path(tmp_path_factory.mktemp("setup"))) as s:
        yield s


@pytest.fixture(scope="module")
def client(gw: Site) -> Iterator[httpx.Client]:
    c = signed_in(gw)
    yield c
    c.close()


@pytest.fixture(scope="module")
def hall_board() -> Iterator[RelayBoardSim]:
    sim = RelayBoardSim().start_tcp()
    yield sim
    sim.close()


def test_the_setup_needs_a_signed_in_installer_and_csrf(gw: Site, client: httpx.Client) -> None:
    assert httpx.get(gw.url + "/api/config").status_code == 401
    no_csrf = httpx.put(gw.url + "/api/config/doors/x", json={}, cookies=client.cookies)
    assert no_csrf.status_code == 403


def test_the_view_lists_devices_profiles_and_ports(client: httpx.Client) -> None:
    view = client.get("/api/config").json()
    assert [b["id"] for b in view["boards"]] == ["relays", "far"]
    assert ("modbus-tcp-relay", "relay") in [(p["name"], p["role"]) for p in view["profiles"]]
    assert isinstance(view["ports"], list)


def test_a_board_and_a_door_are_applied_then_rolled_back(
    gw: Site, client: httpx.Client, hall_board: RelayBoardSim
) -> None:
    board = {"profile": "modbus-tcp-relay", "host": "127.0.0.1", "tcp_port": hall_board.port}
    r = client.put("/api/config/boards/hall", json=board)
    assert r.status_code == 200, r.text
    assert r.json()["changed"][0].startswith("boards[hall]")
    door = {"zone": "gym", "direction": "in", "lock": {"board": "hall", "index": 2}}
    r = client.put("/api/config/doors/hall-in", json=door)
    assert r.status_code == 200, r.text
    assert "hall-in" in gw.gateway.doors
    doors = [d["id"] for d in client.get("/api/status").json()["doors"]]
    assert "hall-in" in doors
    text = gw.config_path.read_text()
    assert 'id = "hall-in"' in text and 'lock = {board = "hall", index = 2}' in text

    bad = client.put("/api/config/doors/hall-in", json={**door, "lock": {"board": "hall",
                                                                          "index": 9}})  # fmt: skip
    assert bad.status_code == 422
    (problem,) = bad.json()["problems"]
    assert problem["key"] == "doors[hall-in].lock.index"
    assert problem["message"] == "board 'hall' has 8 outputs (index 0..7)"
    assert problem["line"] is not None
    assert gw.config_path.read_text() == text  # nothing changed

    back = client.post("/api/config/rollback", json={})
    assert back.status_code == 200, back.text
    assert "hall-in" not in gw.gateway.doors and "hall" in gw.gateway.boards
    versions = client.get("/api/config").json()["versions"]
    assert versions[0]["note"].startswith("back to version")
    assert versions[0]["by"].startswith("installer at 127.0.0.1")


def test_broker_files_are_uploaded_private_and_tested_before_saving(
    gw: Site, client: httpx.Client
) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    r = client.post("/api/config/upload/ca_file", json={"data": base64.b64encode(pem).decode()})
    assert r.status_code == 200, r.text
    path = Path(r.json()["path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == pem
    assert pem.decode() not in client.get("/api/config").text
    settings = {"host": "127.0.0.1", "port": _closed_port(), "tls": False}
    test = client.post("/api/mqtt/test", json=settings)
    assert test.status_code == 200
    assert (test.json()["ok"], test.json()["stage"]) == (False, "tcp")
    assert "nothing accepts connections there" in test.json()["message"]


def _closed_port() -> int:
    from tests.support.ports import free_port

    return free_port()


def test_the_pages_render(client: httpx.Client) -> None:
    devices = client.get("/devices")
    assert devices.status_code == 200 and "Add or change a board" in devices.text
    mqtt = client.get("/mqtt")
    assert mqtt.status_code == 200 and "Test connection" in mqtt.text


def test_a_backup_downloads_encrypted_and_opens_with_its_passphrase(
    gw: Site, client: httpx.Client
) -> None:
    from gateway.backup import MAGIC, read_backup

    assert client.post("/api/backup", json={"passphrase": "short"}).status_code == 422
    r = client.post("/api/backup", json={"passphrase": "a long enough passphrase"})
    assert r.status_code == 200, r.text
    assert r.content.startswith(MAGIC)
    assert (
        'filename="door-1-' in r.headers["content-disposition"]
        or "attachment" in (r.headers["content-disposition"])
    )
    manifest, members = read_backup(r.content, "a long enough passphrase")
    assert manifest["gateway"] == gw.gateway.gw and "config.toml" in members
    assert "hmac.key" in manifest["secrets"]
    assert not list((gw.state / "backups").glob("*"))  # handed over, not left on the box
