"""One validation for check-config, run and the web UI (issue 11, point 1).

One table of broken configurations drives both ``accessgw check-config`` and ``accessgw
run``: each must be reported by check-config with the exact key path (with ids), line and
message, and ``run`` must refuse it with the same words before anything starts. Rows marked
``at_start`` are problems that the gateway's start-up itself raises when it is given the
config without the validation: check-config catches them first.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config
from gateway.daemon import Gateway
from gateway.errors import AccessGwError
from gateway.validation import key_lines, validate_file, validate_text

KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def base(state_dir: Path, *, mqtt: str = "[mqtt]\nenabled = false\n", extra: str = "") -> str:
    """A valid config (fake board, MQTT and web off) that a case breaks in one place."""
    return (
        "[gateway]\n"
        'id = "door-1"\n'
        'site = "oslo-sentrum"\n'
        f'state_dir = "{state_dir}"\n'
        'language = "nb"\n'
        f"{mqtt}"
        "[web]\nenabled = false\n"
        "[[boards]]\n"
        'id = "io"\n'
        'profile = "fake-io"\n'
        "[[doors]]\n"
        'id = "main-in"\n'
        'zone = "gym"\n'
        'direction = "in"\n'
        'lock = { board = "io", index = 0 }\n'
        f"{extra}"
    )


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the one line that contains ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


@dataclass(frozen=True)
class Case:
    """A broken config: what is changed, and the problem expected."""

    name: str
    old: str  # replaced in the base config (appended when empty)
    new: str
    key: str
    line_at: str | None  # the text on the expected line (None: no line)
    message: str
    at_start: bool = False  # the unvalidated gateway's start-up raises for it too
    mqtt: str = "[mqtt]\nenabled = false\n"
    line_offset: int = 0  # the expected line relative to ``line_at`` (a table's header)

    def text(self, state_dir: Path) -> str:
        """The broken config."""
        text = base(state_dir, mqtt=self.mqtt)
        return text.replace(self.old, self.new, 1) if self.old else text + self.new


RTU = '[[boards]]\nid = "rtu"\nprofile = "waveshare-modbus-rtu-relay-8ch"\nport = "/dev/ttyUSB9"\n'
MQTT_ON = f'[central]\npublic_key = "{KEY}"\n[mqtt]\nhost = "127.0.0.1"\n'
CASES = [
    Case(
        "a Modbus TCP board without host",
        "",
        '[[boards]]\nid = "tcp"\nprofile = "modbus-tcp-relay"\n',
        "boards[tcp].host",
        'id = "tcp"',
        "is required for a Modbus TCP board",
        at_start=True,
        line_offset=-1,
    ),
    Case(
        "a board option with a typo (baudrat)",
        "",
        RTU + "options = { baudrat = 19200 }\n",
        "boards[rtu].options.baudrat",
        "options =",
        "unknown setting (a typo?); settings of this driver: baudrate, bytesize,",
        at_start=True,
    ),
    Case(
        "a board option with a typo (poll_intreval)",
        "",
        RTU + "options = { poll_intreval = 0.1 }\n",
        "boards[rtu].options.poll_intreval",
        "options =",
        "unknown setting (a typo?); settings of this driver:",
        at_start=True,
    ),
    Case(
        "a parity that does not exist",
        "",
        RTU + 'options = { parity = "X" }\n',
        "boards[rtu].options.parity",
        "options =",
        "Input should be 'N', 'E' or 'O'",
        at_start=True,
    ),
    Case(
        "a reader without port",
        "",
        '[[readers]]\nid = "nfc"\nprofile = "pn532-hsu"\ndoor = "main-in"\n',
        "readers[nfc].port",
        'id = "nfc"',
        'is required for this profile (e.g. port = "/dev/ttyUSB0")',
        at_start=True,
        line_offset=-1,
    ),
    Case(
        "output 9 on an 8-relay board",
        'lock = { board = "io", index = 0 }\n',
        'lock = { board = "rtu", index = 9 }\n' + RTU,
        "doors[main-in].lock.index",
        "lock = {",
        "board 'rtu' has 8 outputs (index 0..7)",
    ),
    Case(
        "a scanner on the relay board's serial port",
        "",
        RTU + '[[readers]]\nid = "qr"\nprofile = "newland-fm430"\ndoor = "main-in"\n'
        'port = "/dev/ttyUSB9"\n',
        "readers[qr].port",
        'id = "qr"',
        "serial port /dev/ttyUSB9 is used by boards[rtu], readers[qr], and readers[qr] cannot "
        "share a port",
        line_offset=3,
    ),
    Case(
        "a typo in a gateway key",
        'language = "nb"',
        'langauge = "nb"',
        "gateway.langauge",
        "langauge",
        "unknown key (a typo?); keys allowed here: id, site, state_dir, language, clock",
    ),
    Case(
        "a door names a board that does not exist",
        'lock = { board = "io", index = 0 }',
        'lock = { board = "relays", index = 0 }',
        "doors[main-in].lock.board",
        "lock = {",
        "board 'relays' is not configured; boards: io",
    ),
    Case(
        "a reader names a door that does not exist",
        "",
        '[[readers]]\nid = "nfc"\nprofile = "pn532-hsu"\ndoor = "main-out"\nport = "/dev/null"\n',
        "readers[nfc].door",
        'door = "main-out"',
        "door 'main-out' is not configured; doors: main-in",
    ),
    Case(
        "two doors with one id",
        "",
        '[[doors]]\nid = "main-in"\nzone = "gym"\ndirection = "out"\n',
        "doors[main-in].id",
        'direction = "out"',  # placeholder, replaced below: the second id line
        "id 'main-in' is used twice; ids must be unique",
    ),
    Case(
        "a Modbus unit id of 0 (broadcast)",
        'profile = "fake-io"',
        'profile = "fake-io"\nunit = 0',
        "boards[io].unit",
        "unit = 0",
        "Input should be greater than or equal to 1",
    ),
    Case(
        "a Modbus unit id beyond 247",
        'profile = "fake-io"',
        'profile = "fake-io"\nunit = 248',
        "boards[io].unit",
        "unit = 248",
        "Input should be less than or equal to 247",
    ),
    Case(
        "a direction that is not in or out",
        'direction = "in"',
        'direction = "inward"',
        "doors[main-in].direction",
        'direction = "inward"',
        "Input should be 'in' or 'out'",
    ),
    Case(
        "an id with capitals and spaces",
        'id = "main-in"',
        'id = "Main In"',
        "doors[Main In].id",
        'id = "Main In"',
        "must be 1-64 characters of a-z, 0-9 and - (e.g. main-in)",
    ),
    Case(
        "a state directory that cannot be made",
        "",
        "",
        "gateway.state_dir",
        "state_dir =",
        "/proc/nope cannot be created (in /proc)",
        at_start=True,
    ),
    Case(
        "an unknown firmware profile",
        'profile = "fake-io"',
        'profile = "fake-oi"',
        "boards[io].profile",
        'profile = "fake-oi"',
        "no firmware profile 'fake-oi'; profiles: acr122u, fake-io,",
        at_start=True,
    ),
    Case(
        "MQTT on without the central system's key",
        "",
        "",
        "central.public_key",
        None,
        "is required when MQTT is on",
        mqtt='[mqtt]\nhost = "127.0.0.1"\n',
    ),
    Case(
        "plain MQTT to another host",
        "",
        "",
        "mqtt.tls",
        "[mqtt]",
        "plain TCP without TLS to 10.0.0.5:1883 is refused",
        mqtt=f'[central]\npublic_key = "{KEY}"\n[mqtt]\nhost = "10.0.0.5"\n',
    ),
    Case(
        "the web UI on the network without TLS",
        "[web]\nenabled = false\n",
        '[web]\nlisten = "0.0.0.0"\n',
        "web.listen",
        'listen = "0.0.0.0"',
        "web.listen = '0.0.0.0' serves the installer UI to the network without TLS",
    ),
    Case(
        "a CA file that does not exist",
        "",
        '[mqtt.tls]\nca_file = "/nonexistent/ca.crt"\n',
        "mqtt.tls.ca_file",
        "ca_file =",
        "file /nonexistent/ca.crt does not exist",
        mqtt=MQTT_ON,
    ),
    Case(
        "a CA file that is a directory",
        "",
        '[mqtt.tls]\nca_file = "/tmp"\n',
        "mqtt.tls.ca_file",
        "ca_file =",
        "/tmp is a directory, not a file",
        mqtt=MQTT_ON,
    ),
    Case(
        "a password file that does not exist",
        "",
        "",
        "mqtt.password_file",
        "password_file",
        "file /nonexistent/mqtt.password does not exist",
        mqtt=MQTT_ON + 'username = "door-1"\npassword_file = "/nonexistent/mqtt.password"\n',
    ),
    Case(
        "a client certificate without its key",
        "",
        '[mqtt.tls]\nca_file = "/etc/hostname"\ncert_file = "/etc/hostname"\n',
        "mqtt.tls",
        "[mqtt.tls]",
        "cert_file and key_file go together",
        mqtt=MQTT_ON,
    ),
    Case(
        "a door's lock index beyond what a point allows",
        "index = 0 }",
        "index = -1 }",
        "doors[main-in].lock.index",
        "index = -1",
        "Input should be greater than or equal to 0",
    ),
]


def _text(case: Case, state_dir: Path) -> str:
    text = case.text(state_dir)
    if case.name == "a state directory that cannot be made":
        text = text.replace(f'state_dir = "{state_dir}"', 'state_dir = "/proc/nope"')
    return text


def _expected_line(case: Case, text: str) -> int | None:
    if case.line_at is None:
        return None
    if case.name == "two doors with one id":
        return [n for n, line in enumerate(text.splitlines(), 1) if 'id = "main-in"' in line][1]
    return line_of(text, case.line_at) + case.line_offset


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_config_names_the_key_line_and_what_is_allowed(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _text(case, tmp_path / "state")
    path = tmp_path / "accessgw.toml"
    path.write_text(text)
    assert main(["check-config", "--json", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    matching = [p for p in report["problems"] if p["key"] == case.key]
    assert matching, report["problems"]
    problem = matching[0]
    assert case.message in problem["message"]
    assert problem["line"] == _expected_line(case, text)
    assert problem["file"] == str(path)

    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    line = _expected_line(case, text)
    assert (f"line {line}: " if line else "") + f"{case.key}: {case.message}" in err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_run_refuses_what_check_config_reports_before_starting_anything(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    path = tmp_path / "accessgw.toml"
    path.write_text(_text(case, state_dir))
    assert main(["check-config", str(path)]) == 1
    checked = capsys.readouterr().err.splitlines()[1:]
    assert main(["run", str(path)]) == 1
    refused = capsys.readouterr().err
    for problem in checked:
        assert problem.strip() in refused
    assert not state_dir.exists()  # nothing was started


START_CASES = [c for c in CASES if c.at_start]


@pytest.mark.parametrize("case", START_CASES, ids=[c.name for c in START_CASES])
async def test_what_start_up_raises_without_validation_is_caught_by_check_config(
    case: Case, tmp_path: Path
) -> None:
    import tomllib

    text = _text(case, tmp_path / "state")
    config = Config.model_validate(tomllib.loads(text))  # the schema alone lets it through
    gateway = Gateway(config)
    with pytest.raises(AccessGwError):
        try:
            await gateway.start()
        finally:
            with contextlib.suppress(Exception):
                await gateway.stop()
    report = validate_text(text, "accessgw.toml")
    assert case.key in [p.key for p in report.problems]


def test_a_valid_config_is_ok_and_run_would_start_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "accessgw.toml"
    path.write_text(base(tmp_path / "state"))
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    assert main(["check-config", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "file": str(path),
        "problems": [],
        "warnings": [],
    }


def test_the_example_config_is_ok_once_its_files_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text()
    for name in ("ca.crt", "door-1.crt", "door-1.key"):
        (tmp_path / name).write_text("x")
        text = text.replace(f"/etc/accessgw/pki/{name}", str(tmp_path / name))
    text = text.replace('"/var/lib/accessgw"', f'"{tmp_path / "state"}"')
    path = tmp_path / "accessgw.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "ok"


def test_the_example_config_on_a_box_without_its_files_names_each_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    text = EXAMPLE.read_text()
    line = line_of(text, "ca_file =")
    assert f"line {line}: mqtt.tls.ca_file: file /etc/accessgw/pki/ca.crt does not exist" in err


@pytest.mark.parametrize(
    ("change", "key", "line_at", "message"),
    [
        (
            ('language = "nb"', 'language = "sv"'),
            "gateway.language",
            'language = "sv"',
            "language 'sv' has no texts; members see English. Languages: en, nb, da, fr",
        ),
        (
            (
                "[web]\nenabled = false\n",
                '[web]\nlisten = "0.0.0.0"\nallow_insecure_listen = true\n',
            ),
            "web.allow_insecure_listen",
            "allow_insecure_listen",
            "the web UI serves plain HTTP on 0.0.0.0",
        ),
        (
            (
                "[mqtt]\nenabled = false\n",
                f'[central]\npublic_key = "{KEY}"\n[mqtt]\nhost = "broker.example.net"\n'
                "allow_insecure = true\n",
            ),
            "mqtt.tls",
            "[mqtt]",  # the table that lacks [mqtt.tls]
            "plain TCP without TLS to broker.example.net:1883 (allowed by mqtt.allow_insecure)",
        ),
    ],
    ids=["unknown language", "web beyond loopback", "mqtt in clear text"],
)
def test_warnings_are_listed_apart_and_do_not_fail(
    change: tuple[str, str],
    key: str,
    line_at: str | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = base(tmp_path / "state").replace(*change)
    path = tmp_path / "accessgw.toml"
    path.write_text(text)
    assert main(["check-config", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    (warning,) = [w for w in report["warnings"] if w["key"] == key]
    assert message in warning["message"]
    assert warning["line"] == (line_of(text, line_at) if line_at else None)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "ok"
    assert "warning: " in err and message in err


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        base(tmp_path / "state")
        .replace('direction = "in"', 'direction = "sideways"')
        .replace('language = "nb"', 'language = "nb"\nbogus = 1')
        .replace('id = "door-1"', 'id = "Door 1"')
    )
    report = validate_text(text, "x.toml")
    assert [(p.line, p.key) for p in report.problems] == [
        (2, "gateway.id"),
        (6, "gateway.bogus"),
        (line_of(text, "sideways"), "doors[main-in].direction"),
    ]


def test_broken_toml_names_its_line(tmp_path: Path) -> None:
    report = validate_text('[gateway]\nid = "a"\nsite = \n', "x.toml")
    (problem,) = report.problems
    assert problem.line == 3
    assert "not valid TOML" in problem.message


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    report = validate_file(tmp_path / "none.toml")
    assert [str(p) for p in report.problems] == ["(file): file not found"]


def test_key_lines_follow_arrays_sub_tables_and_inline_tables() -> None:
    text = (
        '[gateway]\nid = "a"\n[[doors]]\nid = "x"\n[[doors]]\nid = "y"\n'
        'lock = { board = "b", index = 1 }\n[doors.contact]\nboard = "b"\n'
        'note = """\nid = "not a key"\n"""\n[[boards]]\nid = "b"\n'
    )
    lines = key_lines(text)
    assert lines[("doors", 1, "id")] == 6
    assert lines[("doors", 1, "lock")] == 7
    assert lines[("doors", 1, "contact", "board")] == 9
    assert lines[("boards", 0, "id")] == 14
    assert ("doors", 1, "contact", "id") not in lines
