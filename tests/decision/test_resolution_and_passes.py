"""Check 1: the credential resolves to a member or ticket; a phone pass must verify (PASSES.md)."""

from __future__ import annotations

import pytest

from gateway.state import LocalState
from tests.decision.helpers import OTHER_KEY, WED_10, check, phone, token
from tests.support.sets import member, ticket

CASES = [
    # (rule, records, presentation, expected decision, expected reason)
    ("known_nfc_uid_is_granted", [member()], {"nfc": "04A1B2C3"}, "granted", "ok"),
    ("unknown_nfc_uid_is_refused", [member()], {"nfc": "04FFFFFF"}, "denied", "unknown_credential"),
    (
        "uid_matches_ignoring_case_and_separators",
        [member()],
        {"nfc": "04:a1-b2 c3"},
        "granted",
        "ok",
    ),
    (
        "malformed_uid_is_unknown_not_an_error",
        [member()],
        {"nfc": "zz"},
        "denied",
        "unknown_credential",
    ),
    (
        "code_matches_after_trimming_white_space",
        [member(credentials=[{"kind": "code", "value": "FLX-1"}])],
        {"code": "  FLX-1 \r\n"},
        "granted",
        "ok",
    ),
    (
        "code_is_case_sensitive",
        [member(credentials=[{"kind": "code", "value": "FLX-1"}])],
        {"code": "flx-1"},
        "denied",
        "unknown_credential",
    ),
    (
        "ticket_code_resolves_to_the_ticket",
        [ticket()],
        {"code": "EVT-1", "zone": "hall", "when": "2026-11-22T19:00:00+01:00"},
        "granted",
        "ok",
    ),
    (
        "good_pass_from_bound_phone_is_granted",
        [member(credentials=[phone()])],
        {"pass_token": token()},
        "granted",
        "ok",
    ),
    (
        "garbage_token_is_bad_pass",
        [member(credentials=[phone()])],
        {"pass_token": "AGP1.not-json.sig"},
        "denied",
        "bad_pass",
    ),
    (
        "wrong_prefix_is_bad_pass",
        [member(credentials=[phone()])],
        {"pass_token": token().replace("AGP1.", "AGP2.", 1)},
        "denied",
        "bad_pass",
    ),
    (
        "padded_base64_is_bad_pass",
        [member(credentials=[phone()])],
        {"pass_token": token() + "=="},
        "denied",
        "bad_pass",
    ),
    (
        "token_over_512_bytes_is_bad_pass",
        [member(credentials=[phone()])],
        {"pass_token": "AGP1." + "A" * 600 + ".B"},
        "denied",
        "bad_pass",
    ),
    (
        "signature_by_another_key_is_bad_pass",
        [member(credentials=[phone()])],
        {"pass_token": token(key=OTHER_KEY)},
        "denied",
        "bad_pass",
    ),
    (
        "pass_for_unknown_member_is_unknown_credential",
        [member(credentials=[phone()])],
        {"pass_token": token(member="M404")},
        "denied",
        "unknown_credential",
    ),
    (
        "pass_from_another_device_is_device_not_bound",
        [member(credentials=[phone()])],
        {"pass_token": token(device="dev-2")},
        "denied",
        "device_not_bound",
    ),
    (
        "pass_for_member_without_phone_is_device_not_bound",
        [member()],
        {"pass_token": token()},
        "denied",
        "device_not_bound",
    ),
    (
        "pass_made_before_binding_is_device_not_bound",
        [member(credentials=[phone(bound_at="2026-11-25T10:00:01+01:00")])],
        {"pass_token": token(), "when": "2026-11-25T10:00:05+01:00"},
        "denied",
        "device_not_bound",
    ),
    (
        "pass_31_s_old_is_expired",
        [member(credentials=[phone()])],
        {"pass_token": token(), "when": "2026-11-25T10:00:31+01:00"},
        "denied",
        "pass_expired",
    ),
    (
        "pass_30_s_old_is_still_good",
        [member(credentials=[phone()])],
        {"pass_token": token(), "when": "2026-11-25T10:00:30+01:00"},
        "granted",
        "ok",
    ),
    (
        "pass_30_s_in_the_future_is_still_good",
        [member(credentials=[phone()])],
        {"pass_token": token(), "when": "2026-11-25T09:59:30+01:00"},
        "granted",
        "ok",
    ),
]


@pytest.mark.parametrize(
    ("rule", "records", "presentation", "decision", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_credential_resolution(rule, records, presentation, decision, reason):
    result = check(records, **presentation)
    assert (result.decision, result.reason) == (decision, reason), result.trace


def test_replayed_pass_is_refused_even_if_first_use_was_denied():
    tok = token()
    first = check([member(credentials=[phone()], contracts=[])], pass_token=tok)
    assert first.decision == "denied" and first.reason == "no_contract"
    assert first.pass_seen is not None
    state = LocalState(seen_passes={first.pass_seen})
    again = check([member(credentials=[phone()])], pass_token=tok, state=state)
    assert again.reason == "pass_replayed"


def test_a_pass_that_did_not_verify_never_reports_the_member():
    result = check([member(credentials=[phone()])], pass_token=token(key=OTHER_KEY))
    assert result.member is None and result.display is None


def test_unsynchronised_clock_refuses_passes_as_expired_and_flags_the_event():
    state = LocalState(clock_synced=False)
    result = check([member(credentials=[phone()])], pass_token=token(), state=state)
    assert (result.reason, result.clock_unsynced) == ("pass_expired", True)


def test_cards_still_work_while_the_clock_is_unsynchronised():
    assert check([member()], state=LocalState(clock_synced=False)).reason == "ok"


def test_pass_payload_with_extra_key_is_bad_pass():
    import json

    from gateway.passes import b64url_encode
    from tests.decision.helpers import PHONE_KEY, at

    payload = {
        "m": "M1",
        "d": "dev-1",
        "t": int(at(WED_10).timestamp()),
        "n": b64url_encode(b"\x02" * 12),
        "x": 1,
    }
    body = b64url_encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    signed = f"AGP1.{body}"
    tok = f"{signed}.{b64url_encode(PHONE_KEY.sign(signed.encode()))}"
    assert check([member(credentials=[phone()])], pass_token=tok).reason == "bad_pass"


def test_pass_with_string_time_is_bad_pass():
    import json

    from gateway.passes import b64url_encode
    from tests.decision.helpers import PHONE_KEY

    payload = {"m": "M1", "d": "dev-1", "t": "1795597200", "n": b64url_encode(b"\x02" * 12)}
    body = b64url_encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    signed = f"AGP1.{body}"
    tok = f"{signed}.{b64url_encode(PHONE_KEY.sign(signed.encode()))}"
    assert check([member(credentials=[phone()])], pass_token=tok).reason == "bad_pass"


def test_pass_with_short_nonce_is_bad_pass():
    tok = token(nonce=b"\x01" * 11)
    assert check([member(credentials=[phone()])], pass_token=tok).reason == "bad_pass"
