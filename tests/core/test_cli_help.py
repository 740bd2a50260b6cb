"""The command line itself: --version, plain-text --help with examples, no masked errors."""

from __future__ import annotations

import sys

import pytest

from gateway import __version__, demo
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.profiles import find_profile


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"accessgw {__version__}"


def test_help_is_plain_text_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "accessgw check-config /etc/accessgw/accessgw.toml" in out
    assert "\x1b[" not in out  # no terminal colour codes
    for command in ("run", "demo", "check-config", "decide", "simulate"):
        assert command in out


def test_each_command_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check-config", "--help"])
    assert "examples:\n  accessgw check-config" in capsys.readouterr().out


def test_a_failing_demo_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    async def broken(*_: object) -> None:
        raise ConfigError("demo config", ["boards.0: it broke"])

    monkeypatch.setattr(demo, "run_demo_async", broken)
    assert main(["demo", "--state-dir", str(tmp_path), "--seconds", "0"]) == 1
    assert "it broke" in capsys.readouterr().err


def test_a_missing_optional_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "drivers.osdp", raising=False)
    monkeypatch.setitem(sys.modules, "osdp", None)  # as if libosdp were not installed
    with pytest.raises(ConfigError) as err:
        find_profile("osdp-generic-v2").driver_module()
    assert "pip install 'accessgw[osdp]'" in str(err.value)


def test_a_broken_driver_import_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "drivers.pn532", raising=False)
    monkeypatch.setitem(sys.modules, "drivers.serial_port", None)
    with pytest.raises(ImportError):
        find_profile("pn532-hsu").driver_module()
