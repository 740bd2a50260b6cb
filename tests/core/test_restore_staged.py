"""A staged restore is applied whole or not at all, and never destroys what it replaces
(issue 11, point 4): the old state goes to ``replaced-<stamp>/``; a failure half-way is
undone and left staged with its reason; a start that died half-way carries it through."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from gateway.backup import (
    FAILED,
    STAGED,
    apply_staged_restore,
    commit_restore,
    journal_facts,
    restore_backup,
    restore_status,
    stage_restore,
)
from tests.ops.helpers import minimal_config
from tests.web.restore_support import PASSPHRASE, Backup, other_gateway_backup


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    return other_gateway_backup(tmp_path_factory.mktemp("door-2"))


def this_box(tmp_path: Path) -> tuple[Path, Path]:
    """A box that already is a gateway (door-1): config, state with a journal and a key."""
    state, config = tmp_path / "state", tmp_path / "accessgw.toml"
    (state / "secrets" / "osdp").mkdir(parents=True)
    config.write_text(minimal_config(state))
    (state / "secrets" / "osdp" / "old-reader.scbk").write_bytes(b"the old reader's key\n")
    (state / "secrets" / "hmac.key").write_bytes(b"h" * 32)
    (state / "journal.sqlite").write_bytes(b"SQLite format 3\x00 door-1's journal")
    (state / "store.sqlite").write_bytes(b"SQLite format 3\x00 door-1's member list")
    return config, state


def contents(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def staged(backup: Backup, config: Path, state: Path) -> None:
    plan = stage_restore(backup.sealed, PASSPHRASE, config_path=config, state_dir=state)
    commit_restore(state, plan.token)


def test_forced_restore_moves_what_was_there_aside(backup: Backup, tmp_path: Path) -> None:
    config, state = this_box(tmp_path)
    old_state, old_config = contents(state), config.read_text()
    with pytest.raises(Exception, match="already holds a gateway's journal"):
        restore_backup(backup.sealed, PASSPHRASE, config_path=config, state_dir=state)
    assert contents(state) == old_state  # refused: nothing changed, nothing left staged
    result = restore_backup(
        backup.sealed, PASSPHRASE, config_path=config, state_dir=state, force=True
    )
    assert result.gateway == "door-2" and result.replaced is not None
    assert result.replaced.parent == state and result.replaced.name.startswith("replaced-")
    assert 'id = "door-2"' in config.read_text()
    assert (state / "secrets" / "hmac.key").read_bytes() == backup.hmac_key
    assert journal_facts(state / "journal.sqlite").last_seq == backup.last_seq
    assert not (state / "store.sqlite").exists()  # comes back by sync, for the new HMAC key
    kept = contents(result.replaced / "state")
    assert {k: v for k, v in old_state.items()} == kept  # every old file, unchanged
    (note,) = (result.replaced / "outside").glob("*.path")
    assert note.read_text() == str(config)
    assert (result.replaced / "outside" / note.stem).read_text() == old_config
    assert json.loads((result.replaced / "restore.json").read_text())["plan"]["gateway"] == "door-2"
    assert restore_status(state)["last"]["replaced"] == str(result.replaced)


def test_a_failure_half_way_is_undone_and_left_staged_with_its_reason(
    backup: Backup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, state = this_box(tmp_path)
    old_state, old_config = contents(state), config.read_text()
    staged(backup, config, state)
    replace, calls = os.replace, []

    def failing(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 9:  # the old state is aside, some new files are in place
            raise OSError(28, "No space left on device")
        replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("gateway.backup.os.replace", failing)
    outcome = apply_staged_restore(state)
    monkeypatch.undo()
    assert outcome is not None and not outcome.applied
    assert "No space left on device" in outcome.message and "nothing changed" in outcome.message
    assert outcome.event()["action"] == "restore_failed"
    on_disk = {k: v for k, v in contents(state).items() if not k.startswith(STAGED)}
    assert on_disk == old_state and config.read_text() == old_config
    assert not list(state.glob("replaced-*"))
    assert json.loads((state / STAGED / FAILED).read_text())["reason"].startswith("it could not")
    assert restore_status(state)["failed"]["reason"].startswith("it could not be put in place")
    again = apply_staged_restore(state)  # not tried at every start: it waits, with its reason
    assert again is not None and not again.applied and "failed earlier" in again.message
    assert contents(state).items() >= old_state.items()


def test_a_start_that_died_half_way_carries_the_restore_through(
    backup: Backup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, state = this_box(tmp_path)
    old_state = contents(state)
    staged(backup, config, state)
    replace, calls = os.replace, []

    def power_cut(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 9:
            raise SystemExit("power cut")
        replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("gateway.backup.os.replace", power_cut)
    with pytest.raises(SystemExit):
        apply_staged_restore(state)
    monkeypatch.undo()
    outcome = apply_staged_restore(state)  # the next start
    assert outcome is not None and outcome.applied, outcome
    assert (state / "secrets" / "hmac.key").read_bytes() == backup.hmac_key
    assert journal_facts(state / "journal.sqlite").last_seq == backup.last_seq
    assert 'id = "door-2"' in config.read_text()
    assert outcome.replaced is not None and contents(outcome.replaced / "state") == old_state
    assert not (state / STAGED).exists()
    assert apply_staged_restore(state) is None  # done once


def test_the_command_line_stages_for_a_running_gateway_and_its_start_applies_it(
    backup: Backup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main
    from gateway.daemon import _apply_staged_restore

    config, state = this_box(tmp_path)
    old_state = contents(state)
    archive, phrase = tmp_path / "door-2.agwbak", tmp_path / "passphrase"
    archive.write_bytes(backup.sealed)
    phrase.write_text(PASSPHRASE + "\n")
    argv = ["restore", "--at-next-start", "--config", str(config), "--state-dir", str(state),
            "--passphrase-file", str(phrase), str(archive)]  # fmt: skip
    assert main(argv) == 0
    assert "applied when the gateway next starts" in capsys.readouterr().out
    assert {k: v for k, v in contents(state).items() if not k.startswith(STAGED)} == old_state
    stage_restore(backup.sealed, PASSPHRASE, config_path=config, state_dir=state)  # unconfirmed
    assert list(state.glob(".restore-pending-*"))
    outcome = _apply_staged_restore(str(config))  # what `accessgw run` does first
    assert not list(state.glob(".restore-pending-*"))  # decrypted, never confirmed: dropped
    assert outcome is not None and outcome.applied
    assert 'id = "door-2"' in config.read_text()
    assert _apply_staged_restore(str(config)) is None
