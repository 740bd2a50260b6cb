"""A fuzz test per parser that takes outside bytes: no crash (only the parser's own,
explained refusal), no grant from garbage, buffers bounded.

Modest counts in CI; ``ACCESSGW_FUZZ_LONG=1`` runs 1,000,000 inputs each (by hand:
``ACCESSGW_FUZZ_LONG=1 .venv/bin/python -m pytest tests/fuzz -q``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from drivers import pn532_frames as pf
from drivers.osdp import BadCard, card_read
from drivers.serial_scanner import LineReader
from gateway.config import parse_config
from gateway.decision import DoorContext, Presented, Request, decide
from gateway.errors import BadMessage, ConfigError
from gateway.passes import parse_pass
from gateway.state import LocalState
from gateway.sync.envelopes import open_envelope, seal
from gateway.sync.peers import checkin_problem, parse_message
from tests.fuzz.budget import budget
from tests.support.sets import MemorySet, member, rules

AT = datetime(2026, 11, 25, 10, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
SITE = "oslo-sentrum"
SET = MemorySet(rules(), [member()])
DOOR = DoorContext("main-in", "gym", "in", site=SITE)

chunks = st.lists(st.binary(max_size=300), max_size=8)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with a few bytes flipped, cut short or with bytes inserted."""

    def mutate(draw_ops: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(valid)
        for op, where, value in draw_ops:
            if not data:
                break
            where %= len(data)
            if op == 0:
                data[where] ^= value or 1
            elif op == 1:
                del data[where:]
            else:
                data.insert(where, value)
        return bytes(data)

    ops = st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255))
    return st.lists(ops, min_size=1, max_size=4).map(mutate)


# --- readers -----------------------------------------------------------------------


@budget(ci=300)
@given(chunks)
def test_pn532_frames(pieces: list[bytes]) -> None:
    parser = pf.FrameParser()
    for piece in pieces:
        parser.feed(piece)
        assert parser.buffered <= pf.MAX_BUFFER
    parser.resync()


@budget(ci=300)
@given(chunks)
def test_scanner_lines(pieces: list[bytes]) -> None:
    reader = LineReader()
    for piece in pieces:
        for line in reader.feed(piece):
            assert line and line.isprintable() and len(line) <= reader.max_length
        assert reader.buffered <= reader.max_length


@budget(ci=300)
@given(
    st.integers(-10, 2000) | st.none(),
    st.binary(max_size=300) | st.none(),
    st.integers(-5, 300) | st.none(),
)
def test_osdp_card_data(length, data, fmt) -> None:  # type: ignore[no-untyped-def]
    try:
        read = card_read("osdp", {"length": length, "data": data, "format": fmt})
    except BadCard:
        return
    presented = Presented("nfc", read.value, read.format)
    decision = decide(Request(presented, DOOR, AT), SET, LocalState())
    assert not decision.granted


# --- MQTT -----------------------------------------------------------------------------

VALID_DELTA = seal("delta", SITE, {"version": 2, "base": 1, "upsert": [], "delete": []}, KEY, AT)


@budget(ci=300)
@given(st.binary(max_size=400) | mutated(VALID_DELTA))
def test_mqtt_envelopes(payload: bytes) -> None:
    try:
        open_envelope(
            payload,
            public_key=KEY.public_key(),
            site=SITE,
            topic=f"acs/v1/{SITE}/delta",
            max_bytes=64 * 1024,
        )
    except BadMessage:
        return
    # only the signed envelope itself opens (white space between JSON tokens may differ)
    assert json.loads(payload) == json.loads(VALID_DELTA)


VALID_CHECKIN = (
    b'{"id":"018f","seq":7,"gw":"door-2","at":"2026-11-25T10:00:00.000+01:00","door":"in",'
    b'"zone":"gym","direction":"in","credential":"nfc","member":"M1","ticket":null,'
    b'"decision":"granted","reason":"ok","contract":"C1","charged":1,"passed":true,'
    b'"warnings":[],"offline":false,"entitlements_version":3}'
)


@budget(ci=300)
@given(st.binary(max_size=400) | mutated(VALID_CHECKIN))
def test_mqtt_records(payload: bytes) -> None:
    try:
        message = parse_message(payload, 16 * 1024, "gw/door-2/checkin")
    except BadMessage:
        return
    problem = checkin_problem(message, SET.rules, AT, True)
    assert problem is None or isinstance(problem, str)


# --- passes and config ------------------------------------------------------------------


@budget(ci=300)
@given(
    st.text(max_size=300)
    | st.text(alphabet="AGP1.-_=abcdefXYZ0123456789", max_size=300).map(lambda t: "AGP1." + t)
)
def test_pass_tokens(token: str) -> None:
    claim = parse_pass(token)
    assert isinstance(claim, str) or claim is not None
    presented = Presented("pass", token)
    decision = decide(Request(presented, DOOR, AT), SET, LocalState())
    assert not decision.granted


VALID_CONFIG = """
[gateway]
id = "door-1"
site = "oslo-sentrum"
state_dir = "/tmp/x"
[[boards]]
id = "io"
profile = "fake-io"
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = { board = "io", index = 0 }
"""


@budget(ci=200)
@given(
    st.text(max_size=300)
    | mutated(VALID_CONFIG.encode()).map(lambda b: b.decode("utf-8", "replace"))
)
def test_config_files(text: str) -> None:
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems  # every refusal says what is wrong
