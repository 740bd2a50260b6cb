"""Safe defaults (issue 13 point 6): no plain MQTT across a network without saying so."""

from __future__ import annotations

import json

import pytest

from gateway.broker_safety import broker_warnings, is_loopback
from gateway.cli import main
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.profiles import find_profile

GATEWAY = '[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state}"\n'


def write(tmp_path, mqtt: str):
    path = tmp_path / "accessgw.toml"
    path.write_text(GATEWAY.format(state=tmp_path / "state") + "[web]\nenabled = false\n" + mqtt)
    return path


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("10.0.0.5", False), ("broker.club.example", False),
     ("localhost.evil.example", False), ("0.0.0.0", False)],
)  # fmt: skip
def test_only_this_machine_counts_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_run_refuses_plain_mqtt_to_another_host(tmp_path, capsys):
    path = write(tmp_path, '[mqtt]\nhost = "10.0.0.5"\n')
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "plain TCP without TLS to 10.0.0.5:1883 is refused" in err
    assert "[mqtt.tls]" in err and "allow_insecure" in err
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_check_config_refuses_what_run_refuses_and_warns_when_allowed(tmp_path, capsys):
    key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    (tmp_path / "p").write_text("secret")
    mqtt = f'[central]\npublic_key = "{key}"\n[mqtt]\nhost = "10.0.0.5"\nusername = "gw"\n'
    mqtt += f'password_file = "{tmp_path / "p"}"\n'
    path = write(tmp_path, mqtt)
    assert main(["check-config", str(path)]) == 1  # what run refuses, check-config reports
    assert "mqtt.tls: plain TCP without TLS to 10.0.0.5:1883 is refused" in capsys.readouterr().err
    path = write(tmp_path, mqtt + "allow_insecure = true\n")
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: line 9: mqtt.tls: plain TCP without TLS to 10.0.0.5:1883" in err
    assert "mqtt.password_file: the broker password is sent in clear" in err
    assert main(["check-config", "--json", str(path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["warnings"]) == 2


def test_a_loopback_broker_or_tls_needs_no_warning(tmp_path):
    local = parse_config(GATEWAY.format(state="/s") + "[mqtt]\nport = 1883\n")
    tls = parse_config(
        GATEWAY.format(state="/s") + '[mqtt]\nhost = "10.0.0.5"\n[mqtt.tls]\nca_file = "/ca"\n'
    )
    assert broker_warnings(local.mqtt) == [] and broker_warnings(tls.mqtt) == []


def test_allow_insecure_lets_run_start_but_check_config_still_warns(tmp_path):
    cfg = parse_config(
        GATEWAY.format(state="/s") + '[mqtt]\nhost = "10.0.0.5"\nallow_insecure = true\n'
    )
    from gateway.broker_safety import refuse_insecure_broker

    refuse_insecure_broker(cfg.mqtt, "cfg")  # no exception
    assert "allowed by mqtt.allow_insecure" in broker_warnings(cfg.mqtt)[0]


@pytest.mark.parametrize("name", ["../config/example", "/etc/passwd", "PN532-hsu", "a.b", ""])
def test_a_firmware_profile_name_is_a_name_never_a_path(name):
    with pytest.raises(ConfigError) as err:
        find_profile(name)
    assert "a-z, 0-9 and '-' only" in err.value.problems[0]


def test_a_profile_outside_the_profile_directory_is_never_loaded(tmp_path, capsys):
    (tmp_path / "evil.toml").write_text('model = "x"\nrole = "reader"\ndriver = "os"\n')
    path = write(tmp_path, "[mqtt]\nenabled = false\n")
    text = path.read_text() + (
        '[[doors]]\nid = "d"\nzone = "gym"\ndirection = "in"\n'
        f'[[readers]]\nid = "r"\nprofile = "../../../../../../..{tmp_path}/evil"\ndoor = "d"\n'
    )
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    assert "a-z, 0-9 and '-' only" in capsys.readouterr().err
