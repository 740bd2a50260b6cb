"""``accessgw decide`` never crashes: every odd input is a clear error and exit 2 (defect 7).

Before: ``--at 9999-12-31T23:59:59-23:59`` -> OverflowError, ``--code $'\\xff'`` ->
UnicodeEncodeError, ``--nfc ² --format wiegand26`` -> ValueError, 5,000 digits -> the int
conversion limit, each a traceback and exit 1.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from tests.fuzz.budget import budget
from tests.support.sets import member, rules

AT = "2026-11-25T10:00:00+01:00"


@pytest.fixture(scope="module")
def set_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("decide") / "set.json"
    path.write_text(json.dumps({"version": 7, "rules": rules(), "records": [member()]}))
    return str(path)


def decide(set_file: str, *extra: str, at: str = AT) -> int:
    argv = ["decide", "--set", set_file, "--site", "oslo-sentrum", "--zone", "gym"]
    argv += ["--direction", "in", "--at", at, *extra]
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


def undecodable(text: str) -> str:
    """A command-line argument as Python sees bytes that are not UTF-8 (surrogateescape)."""
    return os.fsdecode(text.encode("latin-1"))


@pytest.mark.parametrize(
    ("extra", "at", "says"),
    [
        (["--nfc", "04a1b2c3"], "9999-12-31T23:59:59-23:59", "between the years"),
        (["--nfc", "04a1b2c3"], "0001-01-01T00:00:00+23:59", "between the years"),
        (["--code", undecodable("\xff")], AT, "not UTF-8"),
        (["--nfc", "²", "--format", "wiegand26"], AT, "1 to 20 digits"),
        (["--nfc", "1" * 5000, "--format", "wiegand26"], AT, "at most"),
        (["--nfc", "9" * 30, "--format", "wiegand26"], AT, "1 to 20 digits"),
        (["--code", "x" * 5000], AT, "at most"),
        (["--pass", "AGP1." + "A" * 5000], AT, "at most"),
        (["--nfc", "04a1b2c3", "--zone", undecodable("\xfe")], AT, "not UTF-8"),
    ],
)
def test_odd_inputs_are_a_clear_error_and_exit_2(set_file, capsys, extra, at, says):
    assert decide(set_file, *extra, at=at) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_the_card_number_check_takes_ascii_digits_only():
    from gateway.entitlements import credential_key

    assert credential_key("nfc", "²", "wiegand26") is None
    assert credential_key("nfc", "٣", "wiegand26") is None  # an Arabic-Indic 3
    assert credential_key("nfc", "1" * 5000, "wiegand26") is None
    assert credential_key("nfc", "0012345", "wiegand26") == "nfc:wiegand26:12345"


texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEF:-+ .T²٣", max_size=60),
    st.binary(max_size=30).map(os.fsdecode),
    st.sampled_from(["", " ", "AGP1.", "AGP1.x.y", "9" * 5000, "wiegand26", "26", "-"]),
)
instants = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "", "now"]),
    texts,
)
credential = st.sampled_from(["--nfc", "--code", "--pass"])


@budget(ci=300, long=100_000)
@given(kind=credential, value=texts, fmt=st.none() | texts, at=instants, zone=texts)
def test_decide_never_crashes(set_file, kind, value, fmt, at, zone):
    extra = [kind, value, "--zone", zone]
    if fmt is not None:
        extra += ["--format", fmt]
    if value.startswith("-") or zone.startswith("-") or (fmt or "").startswith("-"):
        extra = [f"{kind}={value}", f"--zone={zone}"] + ([f"--format={fmt}"] if fmt else [])
    assert decide(set_file, *extra, at=at) in (0, 2)
