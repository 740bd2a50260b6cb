"""`accessgw check-config`: ok, or every problem with key and line, exit 1."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def test_the_example_config_is_ok(capsys):
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip() == "ok"


def test_every_problem_is_listed_with_key_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[gateway]\nid = "Door 1"\nsite = "x"\nbogus = 1\n'
        '[[doors]]\nid = "d"\nzone = "gym"\ndirection = "sideways"\n'
    )
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 2: gateway.id" in err
    assert "line 4: gateway.bogus: unknown key" in err
    assert "line 8: doors.0.direction" in err


def test_reference_to_a_missing_door_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[gateway]\nid = "door-1"\nsite = "x"\n'
        '[[readers]]\nid = "r"\nprofile = "pn532-hsu"\ndoor = "nowhere"\n'
    )
    assert main(["check-config", str(bad)]) == 1
    assert "names door 'nowhere'" in capsys.readouterr().err


def test_unknown_profile_is_reported_with_the_known_ones(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[gateway]\nid = "door-1"\nsite = "x"\n[[doors]]\nid = "d"\nzone = "gym"\n'
        'direction = "in"\n[[readers]]\nid = "r"\nprofile = "no-such"\ndoor = "d"\n'
    )
    assert main(["check-config", str(bad)]) == 1
    assert "no firmware profile 'no-such'" in capsys.readouterr().err


def test_broken_toml_is_reported_not_a_crash(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nid=")
    assert main(["check-config", str(bad)]) == 1
    assert "not valid TOML" in capsys.readouterr().err


def test_missing_file_is_reported(tmp_path, capsys):
    assert main(["check-config", str(tmp_path / "none.toml")]) == 1
    assert "file not found" in capsys.readouterr().err
