"""`accessgw decide`: one JSON object, exit 0 granted or denied; exit 2 on bad input."""

from __future__ import annotations

import json

import pytest

from gateway.cli import main
from tests.decision.helpers import phone, token
from tests.support.sets import contract, member, rules, ticket

AT = "2026-11-25T10:00:00+01:00"


def _run(tmp_path, capsys, records, *extra, state=None, set_rules=None):
    set_file = tmp_path / "set.json"
    set_file.write_text(
        json.dumps({"version": 7, "rules": set_rules or rules(), "records": records})
    )
    argv = [
        "decide",
        "--set",
        str(set_file),
        "--site",
        "oslo-sentrum",
        "--zone",
        "gym",
        "--direction",
        "in",
        "--at",
        AT,
        *extra,
    ]
    if state is not None:
        state_file = tmp_path / "state.json"
        state_file.write_text(json.dumps(state))
        argv += ["--state", str(state_file)]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_granted_decision_prints_the_whole_object(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys, [member()], "--nfc", "04a1b2c3")
    assert code == 0
    assert set(out) >= {
        "decision",
        "reason",
        "warnings",
        "member",
        "contract",
        "charged",
        "message",
        "trace",
    }
    assert (out["decision"], out["reason"], out["member"], out["contract"]) == (
        "granted",
        "ok",
        "M1",
        "C1",
    )
    assert out["message"] == "Welcome, Kari N.!"
    assert out["trace"]


def test_denied_decision_exits_0_with_the_reason_in_the_requested_language(tmp_path, capsys):
    frozen = contract("C1", freezes=[{"from": "2026-11-01", "to": "2026-11-30"}])
    code, out, _ = _run(
        tmp_path,
        capsys,
        [member(contracts=[frozen])],
        "--nfc",
        "04A1B2C3",
        "--lang",
        "nb",
        set_rules=rules(messages={"nb": {"frozen": "Fryst!"}}),
    )
    assert code == 0
    assert (out["decision"], out["reason"], out["contract"], out["message"]) == (
        "denied",
        "frozen",
        None,
        "Fryst!",
    )


def test_state_file_is_used_charges_and_passages(tmp_path, capsys):
    card = contract("K", "clipcard", credits=2)
    state = {
        "charges": [{"member": "M1", "contract": "K", "credits": 2}],
        "passages": [
            {"member": "M1", "zone": "gym", "direction": "in", "at": "2026-11-25T11:00:00+01:00"}
        ],
    }
    code, out, _ = _run(
        tmp_path, capsys, [member(contracts=[card])], "--nfc", "04A1B2C3", state=state
    )
    assert (code, out["reason"]) == (0, "no_credits")  # the later passage is ignored


def test_ticket_output_carries_the_ticket_and_no_member(tmp_path, capsys):
    code, out, _ = _run(
        tmp_path,
        capsys,
        [
            ticket(
                zones=["gym"],
                valid_from="2026-11-25T09:00:00+01:00",
                valid_to="2026-11-25T12:00:00+01:00",
            )
        ],
        "--code",
        "EVT-1",
    )
    assert (code, out["ticket"], out["member"], out["reason"]) == (0, "T-1", None, "ok")


def test_phone_pass(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys, [member(credentials=[phone()])], "--pass", token())
    assert (code, out["reason"], out["member"]) == (0, "ok", "M1")


def test_seen_passes_in_state_make_a_replay(tmp_path, capsys):
    tok = token()
    from gateway.passes import parse_pass

    claim = parse_pass(tok)
    state = {"seen_passes": [[claim.device, claim.t, claim.nonce]]}
    code, out, _ = _run(
        tmp_path, capsys, [member(credentials=[phone()])], "--pass", tok, state=state
    )
    assert (code, out["reason"], out["member"]) == (0, "pass_replayed", None)


@pytest.mark.parametrize(
    ("records", "set_rules", "problem"),
    [
        ([member(role="boss")], None, "role"),
        ([member(contracts=[contract("C1", schedule="nope")])], None, "not defined"),
        ([member()], {**rules(), "opening_schedule": "missing"}, "not defined"),
        ([member(unpaid="yes")], None, "unpaid"),
        ([{"nobody": 1}], None, "neither"),
    ],
    ids=[
        "unknown_enum",
        "undefined_contract_schedule",
        "undefined_opening_schedule",
        "wrong_type",
        "record_of_no_kind",
    ],
)
def test_invalid_set_exits_2_listing_the_problems(tmp_path, capsys, records, set_rules, problem):
    code, _, err = _run(tmp_path, capsys, records, "--nfc", "04A1B2C3", set_rules=set_rules)
    assert code == 2
    assert problem in err


def test_bad_state_file_exits_2(tmp_path, capsys):
    code, _, err = _run(
        tmp_path,
        capsys,
        [member()],
        "--nfc",
        "04A1B2C3",
        state={"passages": [{"member": "M1", "zone": "gym", "direction": "up", "at": AT}]},
    )
    assert code == 2 and "passages[0].direction" in err


def test_instant_without_offset_exits_2(tmp_path, capsys):
    set_file = tmp_path / "set.json"
    set_file.write_text(json.dumps({"version": 1, "rules": rules(), "records": []}))
    code = main(
        [
            "decide",
            "--set",
            str(set_file),
            "--site",
            "s",
            "--zone",
            "gym",
            "--direction",
            "in",
            "--at",
            "2026-11-25T10:00:00",
            "--nfc",
            "04A1B2C3",
        ]
    )
    assert code == 2 and "offset" in capsys.readouterr().err


def test_missing_set_file_exits_2(tmp_path, capsys):
    code = main(
        [
            "decide",
            "--set",
            str(tmp_path / "none.json"),
            "--site",
            "s",
            "--zone",
            "gym",
            "--direction",
            "in",
            "--at",
            AT,
            "--nfc",
            "04A1B2C3",
        ]
    )
    assert code == 2 and "not found" in capsys.readouterr().err


def test_set_that_is_not_json_exits_2(tmp_path, capsys):
    bad = tmp_path / "set.json"
    bad.write_text("{not json")
    code = main(
        [
            "decide",
            "--set",
            str(bad),
            "--site",
            "s",
            "--zone",
            "gym",
            "--direction",
            "in",
            "--at",
            AT,
            "--nfc",
            "04A1B2C3",
        ]
    )
    assert code == 2 and "not valid JSON" in capsys.readouterr().err


def test_unknown_credential_value_is_a_decision_not_bad_input(tmp_path, capsys):
    code, out, _ = _run(tmp_path, capsys, [member()], "--nfc", "not-hex-at-all")
    assert (code, out["reason"]) == (0, "unknown_credential")
