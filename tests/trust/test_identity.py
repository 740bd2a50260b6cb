"""Gateway keys and signed messages (PROTOCOL.md, "Trust between gateways": Gateway keys,
Signed messages from gateways) and ``rules.gateways`` (ENTITLEMENTS.md)."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from gateway.cli import main
from gateway.entitlements import parse_rules
from gateway.errors import AccessGwError, InvalidSet
from gateway.identity import MessageSigner, load_identity, signature_problem
from tests.support.sets import RULES

SITE = "oslo-sentrum"


def write_config(tmp_path, gw="door-1"):
    path = tmp_path / f"{gw}.toml"
    path.write_text(f'[gateway]\nid = "{gw}"\nsite = "{SITE}"\nstate_dir = "{tmp_path / gw}"\n')
    return path


def test_accessgw_id_makes_the_key_pair_once_and_prints_gw_site_and_the_raw_public_key(
    tmp_path, capsys
):
    config = write_config(tmp_path)
    assert main(["id", str(config)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["id", str(config)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert first == again and set(first) == {"gw", "site", "public_key"}
    assert (first["gw"], first["site"]) == ("door-1", SITE)
    assert len(base64.b64decode(first["public_key"], validate=True)) == 32
    key_file = tmp_path / "door-1" / "secrets" / "gateway.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_damaged_key_file_is_a_clear_error_not_a_new_identity(tmp_path):
    identity = load_identity("door-1", SITE, tmp_path)
    (tmp_path / "secrets" / "gateway.key").write_bytes(b"short")
    with pytest.raises(AccessGwError, match="damaged"):
        load_identity("door-1", SITE, tmp_path)
    assert identity.public_key_b64  # the first one was made


def keys_of(*identities):
    return {i.gw: i.private_key.public_key() for i in identities}


@pytest.mark.parametrize("kind", ["checkin", "event", "occupancy", "sync", "cmd/result"])
def test_what_a_gateway_publishes_is_signed_with_gw_and_verifies(tmp_path, kind):
    identity = load_identity("door-1", SITE, tmp_path)
    payload = MessageSigner(identity)(
        f"acs/v1/{SITE}/gw/door-1/{kind}", json.dumps({"seq": 3, "zone": "gym"}).encode()
    )
    message = json.loads(payload)
    assert message["gw"] == "door-1" and isinstance(message["sig"], str)
    assert "=" not in message["sig"] and len(base64.urlsafe_b64decode(message["sig"] + "==")) == 64
    assert signature_problem(message, "door-1", keys_of(identity)) is None
    # canonical JSON: sorted keys, no white space
    assert payload == json.dumps(message, sort_keys=True, separators=(",", ":")).encode()


def test_status_stays_unsigned(tmp_path):
    identity = load_identity("door-1", SITE, tmp_path)
    status = b'{"state":"online"}'
    assert MessageSigner(identity)(f"acs/v1/{SITE}/gw/door-1/status", status) == status


def test_forged_or_misdirected_messages_fail_verification(tmp_path):
    one = load_identity("door-1", SITE, tmp_path / "1")
    two = load_identity("door-2", SITE, tmp_path / "2")
    keys = keys_of(one, two)
    signed = json.loads(MessageSigner(one)(f"acs/v1/{SITE}/gw/door-1/checkin", b'{"charged":1}'))
    assert signature_problem({**signed, "charged": -100}, "door-1", keys) == "bad signature"
    assert signature_problem(signed, "door-2", keys) == "gw does not match the topic"
    unsigned = {k: v for k, v in signed.items() if k != "sig"}
    assert signature_problem(unsigned, "door-1", keys) == "unsigned"
    assert "not registered" in signature_problem(signed, "door-1", keys_of(two))
    by_two = json.loads(MessageSigner(two)(f"acs/v1/{SITE}/gw/door-2/checkin", b'{"charged":1}'))
    assert signature_problem({**by_two, "gw": "door-1"}, "door-1", keys) == "bad signature"
    assert signature_problem({**signed, "sig": signed["sig"] + "="}, "door-1", keys).startswith(
        "bad signature"
    )


def test_rules_gateways_are_validated_and_a_malformed_key_only_refuses_that_gateway(tmp_path):
    key = load_identity("door-1", SITE, tmp_path).public_key_b64
    rules = parse_rules({**RULES, "gateways": {"door-1": key, "door-2": "not-a-key"}})
    keys = rules.gateway_keys()
    assert keys["door-1"] is not None and keys["door-2"] is None
    with pytest.raises(InvalidSet, match="gateways"):
        parse_rules({**RULES, "gateways": {"Door 1": key}})
    with pytest.raises(InvalidSet, match="gateways"):
        parse_rules({**RULES, "gateways": {"door-1": 42}})
    assert parse_rules(RULES).gateways == {}


def test_a_payload_that_cannot_be_signed_goes_out_as_it_is_rather_than_stopping_the_link(
    tmp_path,
):
    identity = load_identity("door-1", SITE, tmp_path)
    bad = b'{"member": "\\ud800"}'  # a lone surrogate: no UTF-8 for it
    assert MessageSigner(identity)(f"acs/v1/{SITE}/gw/door-1/event", bad) == bad
