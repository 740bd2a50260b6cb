"""PROTOCOL.md, Signed envelopes: canonical JSON, Ed25519 signatures, defensive opening."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadMessage
from gateway.sync.envelopes import (
    Envelope,
    canonical,
    load_public_key,
    open_envelope,
    public_key_b64,
    seal,
    sign,
)
from gateway.sync.topics import gw_topic, parse, topic

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
SITE = "oslo-sentrum"
TOPIC = "acs/v1/oslo-sentrum/entitlements/delta"
AT = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def opened(payload: bytes, **kw: Any) -> Envelope:
    kw.setdefault("site", SITE)
    kw.setdefault("topic", TOPIC)
    return open_envelope(payload, public_key=kw.pop("key", PUB), **kw)


def sealed(body: dict[str, Any], type_: str = "delta", site: str = SITE) -> bytes:
    return seal(type_, site, body, KEY, AT)


def reason(payload: bytes, **kw: Any) -> str:
    with pytest.raises(BadMessage) as err:
        opened(payload, **kw)
    assert err.value.topic == kw.get("topic", TOPIC)
    return err.value.reason


# --- canonical JSON ----------------------------------------------------------------------


def test_canonical_json_sorts_keys_without_white_space_in_utf8() -> None:
    assert canonical({"b": 1, "a": {"d": [1, "é"], "c": None}}) == (
        '{"a":{"c":null,"d":[1,"é"]},"b":1}'.encode()
    )


@pytest.mark.parametrize("value", [1.5, 1.0, float("nan"), [0.1], {"x": {"y": 2.0}}])
def test_canonical_json_refuses_floats_anywhere(value: Any) -> None:
    with pytest.raises(ValueError):
        canonical({"body": value})


@pytest.mark.parametrize("value", [{1: "int key"}, (1, 2), b"bytes", {"s": {1, 2}}])
def test_canonical_json_refuses_what_json_cannot_carry_exactly(value: Any) -> None:
    with pytest.raises(ValueError):
        canonical({"body": value})


# --- round trip and tampering ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@settings(max_examples=150, deadline=None)
@given(body=bodies, type_=st.sampled_from(["delta", "snapshot", "command", "time", "ack"]))
def test_a_signed_envelope_opens_to_what_was_signed(body: dict[str, Any], type_: str) -> None:
    env = opened(sealed(body, type_))
    assert (env.type, env.site, env.issued_at, env.body) == (type_, SITE, AT, body)


@settings(max_examples=300, deadline=None)
@given(body=bodies, data=st.data())
def test_any_single_byte_change_is_refused_or_changes_nothing(
    body: dict[str, Any], data: st.DataObject
) -> None:
    payload = bytearray(sealed(body))
    i = data.draw(st.integers(0, len(payload) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != payload[i]))
    payload[i] = new
    try:
        env = opened(bytes(payload))
    except BadMessage:
        return
    # Only a change that JSON reads as the same text can pass (e.g. the case of a hex digit
    # in a "\u001f" escape): what the gateway applies is still exactly what was signed.
    assert env.body == body and env.type == "delta" and env.issued_at == AT


def test_every_single_byte_change_of_a_delta_breaks_its_signature() -> None:
    payload = sealed({"version": 8, "base": 7, "upsert": [{"member": "M1"}], "delete": ["M2"]})
    for i in range(len(payload)):
        for new in {payload[i] ^ 1, payload[i] ^ 0x20, ord("0"), ord(" ")} - {payload[i]}:
            changed = payload[:i] + bytes([new]) + payload[i + 1 :]
            with pytest.raises(BadMessage):
                opened(changed)


def test_a_signature_by_another_key_is_refused() -> None:
    payload = seal("delta", SITE, {"version": 1}, Ed25519PrivateKey.generate(), AT)
    assert reason(payload) == "bad signature"


# --- what is dropped, and why --------------------------------------------------------------


def test_invalid_json_is_refused_without_quoting_it() -> None:
    secret = b'{"type":"delta","body":{"uid":"04A1B2C3D4"'
    r = reason(secret)
    assert r == "not valid JSON in UTF-8" and "04A1" not in r


def test_invalid_utf8_is_refused() -> None:
    assert reason(b'{"type":"\xff"}') == "not valid JSON in UTF-8"


def test_a_missing_signature_is_refused() -> None:
    env = json.loads(sealed({"version": 1}))
    del env["sig"]
    assert reason(json.dumps(env).encode()) == "missing field sig"


@pytest.mark.parametrize("field", ["type", "site", "issued_at", "body"])
def test_a_missing_field_is_refused(field: str) -> None:
    env = json.loads(sealed({"version": 1}))
    del env[field]
    assert reason(json.dumps(env).encode()) == f"missing field {field}"


def test_an_envelope_for_another_site_is_refused_even_when_signed() -> None:
    assert reason(sealed({"version": 1}, site="bergen")) == "for another site"


def test_an_unknown_type_is_refused_even_when_signed() -> None:
    env = sign({"type": "reboot", "site": SITE, "issued_at": AT.isoformat(), "body": {}}, KEY)
    assert reason(json.dumps(env).encode()) == "unknown type"


def test_floats_are_refused() -> None:
    raw = sealed({"version": 1}).replace(b'"version":1', b'"version":1.0')
    assert reason(raw) == "floats are not allowed in envelopes"


@pytest.mark.parametrize("sig", ["", "abc", 5, None, "A" * 86 + "=="])
def test_a_malformed_signature_is_refused(sig: Any) -> None:
    env = json.loads(sealed({"version": 1}))
    env["sig"] = sig
    assert reason(json.dumps(env).encode()).startswith("bad signature")


def test_a_naive_issued_at_is_refused() -> None:
    env = sign({"type": "time", "site": SITE, "issued_at": "2026-11-22T18:00:00", "body": {}}, KEY)
    assert "issued_at" in reason(json.dumps(env).encode())


def test_a_body_that_is_not_an_object_is_refused() -> None:
    env = sign({"type": "ack", "site": SITE, "issued_at": AT.isoformat(), "body": [1]}, KEY)
    assert reason(json.dumps(env).encode()) == "body is not an object"


def test_a_payload_over_the_size_limit_is_refused_before_parsing() -> None:
    payload = sealed({"records": ["x" * 2000]})
    assert reason(payload, max_bytes=1000).startswith("too large")


def test_commands_are_limited_to_64_kib() -> None:
    big = sealed({"id": "c1", "op": "open", "pad": "x" * 70_000}, type_="command")
    assert reason(big).startswith("command too large")
    assert opened(sealed({"id": "c1", "op": "open"}, type_="command")).type == "command"


def test_a_pretty_printed_envelope_verifies_over_its_canonical_form() -> None:
    env = json.loads(sealed({"version": 3, "delete": ["M1"]}))
    assert opened(json.dumps(env, indent=2).encode()).body == {"version": 3, "delete": ["M1"]}


def test_the_public_key_travels_as_standard_base64_of_32_bytes() -> None:
    b64 = public_key_b64(PUB)
    assert len(base64.b64decode(b64)) == 32
    assert opened(sealed({"v": 1}), key=load_public_key(b64)).body == {"v": 1}
    with pytest.raises(ValueError, match=r"central\.public_key"):
        load_public_key("not-a-key")


# --- topics ------------------------------------------------------------------------------


def test_topics_are_built_under_the_site() -> None:
    assert topic(SITE, "time") == "acs/v1/oslo-sentrum/time"
    assert gw_topic(SITE, "door-1", "checkin/ack") == "acs/v1/oslo-sentrum/gw/door-1/checkin/ack"
    with pytest.raises(ValueError):
        topic("Oslo Sentrum", "time")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acs/v1/oslo/entitlements/delta", ("oslo", None, "entitlements/delta")),
        ("acs/v1/oslo/time", ("oslo", None, "time")),
        ("acs/v1/oslo/gw/door-1/checkin", ("oslo", "door-1", "checkin")),
        ("acs/v1/oslo/gw/door-1/checkin/ack", ("oslo", "door-1", "checkin/ack")),
        ("acs/v1/oslo/gw/door-1/snapshot", ("oslo", "door-1", "snapshot")),
        ("acs/v2/oslo/time", None),
        ("acs/v1/oslo/gw/Door 1/checkin", None),
        ("acs/v1/oslo/gw/door-1/reboot", None),
        ("acs/v1/oslo", None),
    ],
)
def test_inbound_topics_are_told_apart(name: str, expected: tuple[Any, ...] | None) -> None:
    got = parse(name)
    assert (None if got is None else (got.site, got.gw, got.kind)) == expected
