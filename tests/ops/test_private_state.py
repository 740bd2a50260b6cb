"""Private state (issue 13 point 5): 0700 directories, 0600 files, secrets kept whole."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import AccessGwError
from gateway.state_dir import StateDir, write_secret_atomically
from tests.ops.helpers import ROOT, Daemon, minimal_config
from tests.support.ports import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def assert_private(state: Path) -> None:
    """The state dir, secrets/ and everything in them: no access for group or other."""
    checked = [state, *state.rglob("*")]
    assert any(p.name == "hmac.key" for p in checked)
    for path in checked:
        assert mode(path) & 0o077 == 0, f"{path} is {mode(path):04o}"


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_level_of_a_new_state_dir_is_created_0700(tmp_path, loose_umask):
    state = StateDir(tmp_path / "a" / "b" / "state").ensure()
    for level in (tmp_path / "a", tmp_path / "a" / "b", state.path, state.secrets_dir):
        assert mode(level) == 0o700, level
    assert mode(state.secrets_dir / "osdp") == 0o700


def test_a_state_dir_made_readable_by_others_is_made_private_again(tmp_path, caplog):
    state = StateDir(tmp_path / "state").ensure()
    key = state.hmac_key()
    db = state.path / "store.sqlite"
    db.write_bytes(b"x")
    for path, loose in ((state.path, 0o755), (state.secrets_dir, 0o755), (db, 0o644)):
        path.chmod(loose)
    (state.secrets_dir / "hmac.key").chmod(0o644)
    assert state.hmac_key() == key
    assert_private(state.path)
    assert "hmac.key could be read by other users (mode 0644): made private" in caplog.text


def test_a_world_readable_secret_is_never_accepted_silently(tmp_path, caplog):
    state = StateDir(tmp_path / "state").ensure()
    (state.secrets_dir / "hmac.key").write_bytes(b"k" * 32)
    (state.secrets_dir / "hmac.key").chmod(0o604)
    assert state.hmac_key() == b"k" * 32
    assert mode(state.secrets_dir / "hmac.key") == 0o600
    assert "WARNING" in caplog.text or caplog.records[0].levelname == "WARNING"


def test_secret_that_cannot_be_made_private_is_refused_with_the_fix(tmp_path, monkeypatch):
    state = StateDir(tmp_path / "state").ensure()
    (state.secrets_dir / "hmac.key").write_bytes(b"k" * 32)
    (state.secrets_dir / "hmac.key").chmod(0o644)

    def refuse(path, mode, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(AccessGwError) as err:
        state.hmac_key()
    assert "can be read by other users (mode 0644)" in str(err.value)
    assert "Fix: chown -R" in str(err.value) and "chmod 0600" in str(err.value)


def test_secrets_are_written_whole_and_private_with_no_temp_file_left(tmp_path, loose_umask):
    state = StateDir(tmp_path / "state").ensure()
    path = state.write_secret("installer.hash", b"first")
    state.write_secret("installer.hash", b"second")
    assert path.read_bytes() == b"second" and mode(path) == 0o600
    assert [p.name for p in state.secrets_dir.iterdir() if p.is_file()] == ["installer.hash"]


def test_a_crash_while_writing_a_secret_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "hmac.key"
    write_secret_atomically(path, b"old")

    def crash(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_secret_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["hmac.key"]


def test_the_first_key_is_created_once_even_by_two_racing_gateways(tmp_path):
    one, two = StateDir(tmp_path / "s"), StateDir(tmp_path / "s")
    assert one.hmac_key() == two.hmac_key()


def test_state_is_private_after_run(tmp_path):
    state = tmp_path / "var" / "lib" / "accessgw"
    config = tmp_path / "accessgw.toml"
    config.write_text(minimal_config(state))
    daemon = Daemon(config, umask=0o022)
    daemon.wait_for("started")
    assert daemon.stop() == 0
    assert (state / "journal.sqlite").exists() and (state / "store.sqlite").exists()
    assert_private(state)
    assert mode(tmp_path / "var") == 0o700  # every level the gateway created


def test_state_is_private_after_demo(tmp_path):
    state = tmp_path / "demo"
    args = ["demo", "--state-dir", str(state), "--seconds", "0.1", "--port", str(free_port())]
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert proc.returncode == 0, proc.stderr
    assert "scenario" in proc.stdout
    assert_private(state)


def test_state_is_private_after_restore(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "accessgw.toml"
    config.write_text(minimal_config(state))
    daemon = Daemon(config)
    daemon.wait_for("started")
    assert daemon.stop() == 0
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse battery staple\n")
    backup = tmp_path / "gw.backup"
    restored = tmp_path / "new" / "var" / "lib" / "accessgw"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--passphrase-file", str(secret)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.umask(0o022),
        )

    made = cli("backup", str(backup), "--config", str(config))
    assert made.returncode == 0, made.stderr
    back = cli(
        "restore", str(backup), "--state-dir", str(restored),
        "--config", str(tmp_path / "new" / "accessgw.toml"),
    )  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert (restored / "secrets" / "hmac.key").exists()
    assert_private(restored)
    assert mode(tmp_path / "new" / "var") == 0o700  # every level the restore created
