"""Phone passes (PASSES.md): ``AGP1.<payload>.<signature>``, verified offline.

Parsing is strict and size-limited; verification is pure (the instant, the clock
trust and the seen-token set are arguments). :func:`make_pass` is the small maker
the simulators and tests use, standing in for the member's app.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.entitlements import Member

PREFIX = "AGP1"
MAX_TOKEN_BYTES = 512
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
PAYLOAD_KEYS = frozenset({"m", "d", "t", "n"})

SeenKey = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class PassClaim:
    """What a well-formed token claims; nothing of it is trusted before :func:`verify_pass`."""

    member: str
    device: str
    t: int
    nonce: str
    signed: bytes
    signature: bytes

    @property
    def seen_key(self) -> SeenKey:
        """The replay-cache key ``(d, t, n)``."""
        return (self.device, self.t, self.nonce)


@dataclass(frozen=True, slots=True)
class PassCheck:
    """The outcome of verifying a pass: ``reason`` is None when it verified."""

    reason: str | None
    detail: str
    claim: PassClaim | None = None


def b64url_decode(text: str) -> bytes | None:
    """Decode unpadded base64url; None unless the text is exactly that (no padding, no junk)."""
    if not text or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_pass(token: str) -> PassClaim | str:
    """The token's claim, or a short reason why it is a ``bad_pass``."""
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        return f"token longer than {MAX_TOKEN_BYTES} bytes"
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return "not AGP1.<payload>.<signature>"
    raw_payload, raw_sig = b64url_decode(parts[1]), b64url_decode(parts[2])
    if raw_payload is None or raw_sig is None:
        return "payload or signature is not unpadded base64url"
    try:
        payload = json.loads(raw_payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "payload is not UTF-8 JSON"
    if not isinstance(payload, dict) or set(payload) != PAYLOAD_KEYS:
        return "payload must have exactly the keys m, d, t, n"
    m, d, t, n = payload["m"], payload["d"], payload["t"], payload["n"]
    if not isinstance(m, str) or not isinstance(d, str) or not isinstance(n, str):
        return "m, d and n must be strings"
    if not isinstance(t, int) or isinstance(t, bool):
        return "t must be an integer"
    nonce = b64url_decode(n)
    if nonce is None or len(nonce) != 12:
        return "n must be 12 bytes in unpadded base64url"
    if len(raw_sig) != 64:
        return "signature must be 64 bytes"
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    return PassClaim(m, d, t, n, signed, raw_sig)


def verify_pass(
    claim: PassClaim,
    member: Member | None,
    now: datetime,
    *,
    window_s: int,
    clock_synced: bool,
    seen: frozenset[SeenKey] | set[SeenKey],
) -> PassCheck:
    """Run the checks of PASSES.md after parsing, in order.

    The clock gate sits where the time window is checked: a pass whose signature and
    binding are good is refused ``pass_expired`` while the clock is not known good.
    """
    if member is None:
        return PassCheck("unknown_credential", f"pass names unknown member {claim.member}")
    phone = member.phone
    if phone is None or phone.device != claim.device:
        bound = phone.device if phone else "none"
        return PassCheck("device_not_bound", f"pass from device {claim.device}, bound: {bound}")
    try:
        Ed25519PublicKey.from_public_bytes(phone.public_key).verify(claim.signature, claim.signed)
    except (InvalidSignature, ValueError):
        return PassCheck("bad_pass", "signature does not verify with the bound phone's key")
    if claim.t < int(phone.bound_at.timestamp()):
        return PassCheck("device_not_bound", "pass made before the phone was bound")
    if not clock_synced:
        return PassCheck("pass_expired", "clock not synchronised: passes cannot be timed")
    skew = abs(now.timestamp() - claim.t)
    if skew > window_s:
        return PassCheck("pass_expired", f"pass is {skew:.0f} s from now (window {window_s} s)")
    if claim.seen_key in seen:
        return PassCheck("pass_replayed", "this pass was already presented")
    return PassCheck(None, "pass verified", claim)


def make_pass(
    private_key: Ed25519PrivateKey,
    member: str,
    device: str,
    t: int,
    nonce: bytes | None = None,
) -> str:
    """Make a token as the member's app does (for simulators and tests)."""
    payload = {
        "m": member,
        "d": device,
        "t": t,
        "n": b64url_encode(nonce or secrets.token_bytes(12)),
    }
    body = b64url_encode(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    signed = f"{PREFIX}.{body}"
    return f"{signed}.{b64url_encode(private_key.sign(signed.encode('ascii')))}"


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """The standard-base64 raw public key, as a member's ``phone`` credential carries it."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")
