"""Config apply with rollback (issue 11, point 2): the file stays the installer's; a change
is validated, switched into the running gateway as one, or nothing changes; the last 10
versions are kept with who changed what; one call goes back."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.config_apply import KEEP, ApplyRefused, ConfigKeeper
from gateway.config_edit import changed_keys, put_device, put_section, remove_device
from gateway.daemon import Gateway
from gateway.validation import validate_file

WHO = "installer at 127.0.0.1"


def config_text(state: Path) -> str:
    return (
        "# Front desk gateway: the installer's notes stay\n"
        f'[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state}"\nclock = "trusted"\n'
        "[mqtt]\nenabled = false\n[web]\nenabled = false\n"
        "# the relays behind the desk\n"
        '[[boards]]\nid = "io"\nprofile = "fake-io"\n'
        '[[doors]]\nid = "main-in"   # the turnstile by the desk\nzone = "gym"\n'
        'direction = "in"\nlock = { board = "io", index = 0 }\nunlock_seconds = 0.05\n'
    )


SIDE_DOOR = {
    "id": "side-in",
    "zone": "gym",
    "direction": "in",
    "lock": {"board": "io", "index": 1},
    "unlock_seconds": 0.05,
}


@pytest.fixture
async def gateway(tmp_path: Path) -> Any:
    path = tmp_path / "accessgw.toml"
    path.write_text(config_text(tmp_path / "state"))
    gw = Gateway(validate_file(path).valid_config(), config_path=path)
    await gw.start()
    yield gw
    await gw.stop()


def _events(gw: Gateway, type_: str) -> list[dict[str, Any]]:
    return [e for e in gw.activity.since(-1) if e.get("kind") == "event" and e["type"] == type_]


def test_edits_keep_the_installers_comments_and_name_what_changed(tmp_path: Path) -> None:
    text = config_text(tmp_path)
    edited = put_device(text, "doors", SIDE_DOOR)
    assert "# the turnstile by the desk" in edited and "# the relays behind the desk" in edited
    assert changed_keys(text, edited) == [
        "doors[side-in].direction",
        "doors[side-in].id",
        "doors[side-in].lock.board",
        "doors[side-in].lock.index",
        "doors[side-in].unlock_seconds",
        "doors[side-in].zone",
    ]
    moved = put_device(edited, "doors", {**SIDE_DOOR, "lock": {"board": "io", "index": 2}})
    assert changed_keys(edited, moved) == ["doors[side-in].lock.index"]
    assert remove_device(moved, "doors", "side-in").count("[[doors]]") == 1
    keyed = put_section(text, "central", {"public_key": "x"})
    assert changed_keys(text, keyed) == ["central.public_key"]  # never the value itself
    assert "x" not in "".join(changed_keys(text, keyed))


async def test_a_new_door_is_applied_to_the_running_gateway_and_the_file(
    gateway: Gateway,
) -> None:
    keeper = gateway.config_keeper()
    applied = await keeper.apply(put_device(keeper.text(), "doors", SIDE_DOOR), WHO)
    assert "side-in" in gateway.doors and "main-in" in gateway.doors
    await gateway.open_once("side-in", 1)  # the new door works
    outputs = gateway.boards["io"].history  # type: ignore[attr-defined]
    assert (1, True) in [(c.index, c.on) for c in outputs]
    text = keeper.text()
    assert 'id = "side-in"' in text and "# the turnstile by the desk" in text
    assert not keeper.path.with_name("accessgw.toml.new").exists()
    (event,) = _events(gateway, "config_changed")
    assert event["detail"]["by"] == WHO
    assert event["detail"]["changed"] == applied.changed
    versions = keeper.versions()
    assert [v.number for v in versions] == [2, 1]
    assert (versions[0].by, versions[0].changed) == (WHO, applied.changed)
    assert stat.S_IMODE(keeper.versions_dir.stat().st_mode) == 0o700


async def test_a_broken_field_is_refused_with_its_key_and_nothing_changes(
    gateway: Gateway,
) -> None:
    keeper = gateway.config_keeper()
    before = keeper.text()
    broken = put_device(before, "doors", {**SIDE_DOOR, "lock": {"board": "io", "index": -1}})
    with pytest.raises(ApplyRefused) as refused:
        await keeper.apply(broken, WHO)
    assert refused.value.report is not None
    (problem,) = refused.value.report.problems
    assert problem.key == "doors[side-in].lock.index"
    assert "greater than or equal to 0" in problem.message
    assert keeper.text() == before
    assert set(gateway.doors) == {"main-in"}
    assert keeper.versions() == []


async def test_devices_that_cannot_start_put_the_old_ones_back(gateway: Gateway) -> None:
    keeper = gateway.config_keeper()
    before = keeper.text()
    old_board = gateway.boards["io"]
    text = put_device(before, "boards", {"id": "hat", "profile": "rpi-relay-hat-gpio",
                                         "options": {"chip": "/dev/gpiochip99"}})  # fmt: skip
    with pytest.raises(ApplyRefused, match="the gateway runs as before"):
        await keeper.apply(text, WHO)
    assert keeper.text() == before
    assert set(gateway.boards) == {"io"} and gateway.boards["io"] is not old_board
    assert set(gateway.doors) == {"main-in"}
    await gateway.open_once("main-in", 1)  # the old door works again
    assert not _events(gateway, "config_changed")


async def test_one_call_goes_back_to_the_previous_version(gateway: Gateway) -> None:
    keeper = gateway.config_keeper()
    original = keeper.text()
    await keeper.apply(put_device(original, "doors", SIDE_DOOR), WHO)
    back = await keeper.rollback("installer at 10.0.0.7")
    assert set(gateway.doors) == {"main-in"}
    assert keeper.text() == original
    assert back.changed[0].startswith("doors[side-in]")
    latest = keeper.versions()[0]
    assert (latest.number, latest.by, latest.note) == (3, "installer at 10.0.0.7",
                                                       "back to version 1")  # fmt: skip


async def test_only_the_last_ten_versions_are_kept(gateway: Gateway) -> None:
    keeper = gateway.config_keeper()
    for n in range(KEEP + 2):
        door = {**SIDE_DOOR, "zone": f"zone-{n}"}
        await keeper.apply(put_device(keeper.text(), "doors", door), WHO)
    numbers = [v.number for v in keeper.versions()]
    assert numbers == list(range(KEEP + 3, 3, -1))
    with pytest.raises(ApplyRefused, match="version 1 is not kept"):
        await keeper.rollback(WHO, 1)


def test_uploaded_broker_files_are_kept_private_in_the_state_dir(tmp_path: Path) -> None:
    keeper = ConfigKeeper(tmp_path / "accessgw.toml", tmp_path / "state")
    path = keeper.store_upload("ca_file", b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    assert path == tmp_path / "state" / "secrets" / "mqtt" / "ca.crt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ApplyRefused, match="not a PEM file"):
        keeper.store_upload("key_file", b"hello")
    with pytest.raises(ApplyRefused, match="one line"):
        keeper.store_upload("password_file", b"a\nb\n")
