"""Backup and restore (issue 11, point 4): a new box becomes the same gateway.

The round trip: a gateway with a journal backlog, an OSDP key, its identity and the
installer's password is backed up; its state directory is destroyed; the backup is
restored into a fresh directory; the gateway carries on with the same ``seq`` and keys.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from gateway.backup import BackupError, create_backup, read_backup, restore_backup
from gateway.cli import main
from gateway.daemon import Gateway
from gateway.validation import validate_file
from gateway.web.auth import hash_path, set_password

PASSPHRASE = "correct horse battery staple"
OSDP_KEY = b"00112233445566778899aabbccddeeff\n"


def config_text(state: Path, ca: Path) -> str:
    return (
        "# the installer's own notes stay through a restore\n"
        f'[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state}"\nclock = "trusted"\n'
        '[central]\npublic_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
        '[mqtt]\nenabled = false\nhost = "127.0.0.1"\n'
        f'[mqtt.tls]\nca_file = "{ca}"\n'
        "[web]\nenabled = false\n"
        '[[boards]]\nid = "io"\nprofile = "fake-io"\n'
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "in"\n'
        'lock = { board = "io", index = 0 }\nunlock_seconds = 0.05\n'
    )


async def _gateway(config_path: Path) -> Gateway:
    gateway = Gateway(validate_file(config_path).valid_config())
    await gateway.start()
    return gateway


@pytest.fixture
def old_box(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The failed box: config, state directory and the CA file the config names."""
    box = tmp_path / "old"
    box.mkdir()
    ca = box / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB...\n")
    config = box / "accessgw.toml"
    config.write_text(config_text(box / "state", ca))
    return config, box / "state", ca


async def test_a_restored_gateway_carries_on_with_the_same_seq_and_keys(
    old_box: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, ca = old_box
    gateway = await _gateway(config)
    for _ in range(3):  # a backlog the central system never acknowledged
        await gateway.open_once("main-in", 1)
    pending = await gateway.journal.pending_count()
    hmac_key = gateway.state_dir.hmac_key()
    identity = gateway.identity.public_key_b64
    gateway.state_dir.osdp_scbk("main-in-osdp").write_bytes(OSDP_KEY)
    set_password(gateway.state_dir.secrets_dir, "installer-password-1")
    password_hash = hash_path(gateway.state_dir.secrets_dir).read_bytes()
    await gateway.stop()
    last_seq = gateway.journal.last_seq  # its "stopping" event included
    assert pending >= 3

    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    archive = tmp_path / "door-1.agwbak"
    argv = ["--config", str(config), "--passphrase-file", str(passphrase)]
    assert main(["backup", *argv, str(archive)]) == 0
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert b"installer" not in archive.read_bytes()  # encrypted, not just packed

    shutil.rmtree(config.parent)  # the box is gone: config, state, CA file

    new_state, new_config = tmp_path / "new" / "state", tmp_path / "new" / "accessgw.toml"
    assert main(["restore", "--state-dir", str(new_state), "--config", str(new_config),
                 "--passphrase-file", str(passphrase), str(archive)]) == 0  # fmt: skip
    assert "restored gateway door-1 of site club" in capsys.readouterr().out
    text = new_config.read_text()
    assert f'state_dir = "{new_state}"' in text
    assert "# the installer's own notes stay through a restore" in text
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")  # back where config says
    assert stat.S_IMODE(new_state.stat().st_mode) == 0o700

    gateway = await _gateway(new_config)
    try:
        # all the backlog is still there, unacknowledged, in order
        unacked = [row["seq"] for row in await gateway.journal.unacked()]
        assert unacked[:last_seq] == list(range(1, last_seq + 1))
        assert gateway.state_dir.hmac_key() == hmac_key
        assert gateway.identity.public_key_b64 == identity
        assert gateway.state_dir.osdp_scbk("main-in-osdp").read_bytes() == OSDP_KEY
        assert hash_path(gateway.state_dir.secrets_dir).read_bytes() == password_hash
        await gateway.open_once("main-in", 1)
        after = [row["seq"] for row in await gateway.journal.unacked()][last_seq:]
        assert after and after[0] == last_seq + 1  # the seq goes on, never reused
        # in order, none reused (the remote open's own record is final after its passage)
        assert after == sorted(set(after)) and after[-1] <= gateway.journal.last_seq
    finally:
        await gateway.stop()


def test_the_entitlement_set_is_left_out(old_box: tuple[Path, Path, Path]) -> None:
    config, state, _ = old_box
    (state / "secrets").mkdir(parents=True)
    (state / "store.sqlite").write_bytes(b"SQLite format 3\x00 the whole member list")
    (state / "secrets" / "hmac.key").write_bytes(os.urandom(32))
    (state / "secrets" / "setup.code").write_text("123-456")
    manifest, members = read_backup(create_backup(config, PASSPHRASE), PASSPHRASE)
    assert not any("store" in name for name in members)
    assert manifest["secrets"] == ["hmac.key"]  # the one-time setup code is no secret to keep
    assert manifest["gateway"] == "door-1"


def test_a_wrong_passphrase_or_a_damaged_file_is_refused_before_writing(
    old_box: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    config, state, _ = old_box
    (state / "secrets").mkdir(parents=True)
    (state / "secrets" / "hmac.key").write_bytes(os.urandom(32))
    sealed = create_backup(config, PASSPHRASE)
    target = tmp_path / "fresh"
    with pytest.raises(BackupError, match="passphrase is wrong, or the file is damaged"):
        restore_backup(sealed, "not the passphrase", state_dir=target, config_path=target / "c")
    damaged = bytearray(sealed)
    damaged[-5] ^= 1
    with pytest.raises(BackupError, match="passphrase is wrong, or the file is damaged"):
        restore_backup(bytes(damaged), PASSPHRASE, state_dir=target, config_path=target / "c")
    with pytest.raises(BackupError, match="not an accessgw backup"):
        restore_backup(b"PK\x03\x04 a zip", PASSPHRASE, state_dir=target)
    assert not target.exists()


async def test_restore_never_overwrites_a_live_gateway_unless_forced(
    old_box: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, state, _ = old_box
    gateway = await _gateway(config)
    await gateway.stop()
    sealed = create_backup(config, PASSPHRASE)
    with pytest.raises(BackupError, match="already holds a gateway's journal"):
        restore_backup(sealed, PASSPHRASE)
    assert restore_backup(sealed, PASSPHRASE, force=True).state_dir == state


def test_a_short_passphrase_is_refused(old_box: tuple[Path, Path, Path]) -> None:
    config, state, _ = old_box
    state.mkdir()
    with pytest.raises(BackupError, match="at least 10 characters"):
        create_backup(config, "short")
