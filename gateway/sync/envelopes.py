"""Signed envelopes from the central system (PROTOCOL.md, Signed envelopes).

An envelope is ``{"type", "site", "issued_at", "body", "sig"}``; ``sig`` is the Ed25519
signature over the canonical JSON of the envelope without ``sig`` (keys sorted, separators
``,``/``:``, UTF-8, no floats anywhere). :func:`open_envelope` checks everything before the
caller sees any of it and raises :class:`BadMessage` with a short reason that never quotes
the payload: payloads from the broker are untrusted and are never logged whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.errors import BadMessage

TYPES = ("delta", "snapshot", "command", "time", "ack")
MAX_PAYLOAD = 16 * 2**20
MAX_COMMAND = 64 * 2**10
FIELDS = ("type", "site", "issued_at", "body")
SIG_BYTES = 64


@dataclass(frozen=True)
class Envelope:
    """An opened, verified envelope: what the central system said, to whom, and when."""

    type: str
    site: str
    issued_at: datetime
    body: dict[str, Any]


class _Float(ValueError):
    """A float or a NaN/Infinity constant in a payload (canonical JSON has none)."""


def _no_float(text: str) -> Any:
    raise _Float("floats are not allowed")


def _strict_loads(data: bytes | str) -> Any:
    """json.loads that refuses floats and NaN/Infinity (the hooks cost nothing otherwise)."""
    return json.loads(data, parse_float=_no_float, parse_constant=_no_float)


def _dumps(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def canonical(obj: Any) -> bytes:
    """The canonical JSON of ``obj``: sorted keys, no white space, UTF-8, no floats.

    Raises ValueError for anything that is not plain JSON of dicts with string keys, lists,
    strings, integers, booleans and null (a float, a tuple, an int key...). The check is a
    strict re-parse compared with the input, both in C, so it stays cheap for big snapshots.
    """
    try:
        out = _dumps(obj)
    except TypeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if _strict_loads(out) != obj:
        raise ValueError("not plain JSON (tuples, non-string keys or other lossy values)")
    return out


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign(env: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``env`` with ``sig``: base64url (no padding) of the signature over its
    canonical JSON without ``sig``."""
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    return {**unsigned, "sig": _b64url(private_key.sign(canonical(unsigned)))}


def seal(
    type_: str, site: str, body: dict[str, Any], private_key: Ed25519PrivateKey, at: datetime
) -> bytes:
    """A signed envelope as the bytes to publish (the central system's side)."""
    env = {"type": type_, "site": site, "issued_at": at.isoformat(), "body": body}
    return _dumps(sign(env, private_key))


def _decode_sig(value: Any) -> bytes | None:
    """The 64 signature bytes, or None unless ``value`` is their exact base64url form.

    Base64 leaves spare bits in the last character; comparing with our own encoding makes
    any change to the text a different (failing) signature rather than an equivalent one.
    """
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    encoded = _b64url(raw)
    if len(raw) != SIG_BYTES or value not in (encoded, encoded + "=" * (-len(encoded) % 4)):
        return None
    return raw


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.utcoffset() is not None else None


def open_envelope(
    payload: bytes,
    *,
    public_key: Ed25519PublicKey,
    site: str,
    topic: str,
    max_bytes: int = MAX_PAYLOAD,
) -> Envelope:
    """Check and open one envelope; raise :class:`BadMessage` (reason, topic) when it is
    too large, not JSON, not an envelope, for another site, of an unknown type, or not
    signed by ``public_key``. Commands are limited to 64 KiB whatever ``max_bytes`` says."""
    if len(payload) > max_bytes:
        raise BadMessage(f"too large: {len(payload)} bytes, the limit is {max_bytes}", topic)
    try:
        env = _strict_loads(payload)
    except _Float:
        raise BadMessage("floats are not allowed in envelopes", topic) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadMessage("not valid JSON in UTF-8", topic) from None
    if not isinstance(env, dict):
        raise BadMessage("not an envelope (not a JSON object)", topic)
    missing = [f for f in (*FIELDS, "sig") if f not in env]
    if missing:
        raise BadMessage(f"missing field {missing[0]}", topic)
    sig = _decode_sig(env["sig"])
    if sig is None:
        raise BadMessage("bad signature (not 64 bytes of base64url)", topic)
    kind, issued_at, body = env["type"], _parse_time(env["issued_at"]), env["body"]
    if kind not in TYPES:
        raise BadMessage("unknown type", topic)
    if kind == "command" and len(payload) > MAX_COMMAND:
        raise BadMessage(f"command too large: {len(payload)} bytes, the limit is 65536", topic)
    if env["site"] != site:
        raise BadMessage("for another site", topic)
    if issued_at is None:
        raise BadMessage("issued_at is not an ISO 8601 time with offset", topic)
    if not isinstance(body, dict):
        raise BadMessage("body is not an object", topic)
    if not _verifies_as_sent(payload, env["sig"], sig, public_key):
        unsigned = {k: v for k, v in env.items() if k != "sig"}
        try:
            public_key.verify(sig, _dumps(unsigned))
        except InvalidSignature:
            raise BadMessage("bad signature", topic) from None
    return Envelope(kind, site, issued_at, body)


def _verifies_as_sent(payload: bytes, sig_text: str, sig: bytes, key: Ed25519PublicKey) -> bool:
    """The fast path for canonical payloads (what the central sends): verify the payload's
    own bytes with the top-level ``"sig"`` member cut out, saving a re-serialisation of a
    snapshot chunk. Sound because the parsed payload has a top-level ``sig`` equal to the
    one cut out, so the cut was that member and the rest is exactly the signed bytes: an
    envelope without ``sig`` never has a top-level ``sig`` of its own. Anything else (a
    pretty-printed envelope...) takes the slow path: re-serialise, then verify."""
    member = b'"sig":"' + sig_text.encode("ascii") + b'"'
    at = payload.rfind(member)
    if at < 1:
        return False
    before, after = payload[at - 1 : at], payload[at + len(member) : at + len(member) + 1]
    if before == b",":
        unsigned = payload[: at - 1] + payload[at + len(member) :]
    elif before == b"{" and after == b",":
        unsigned = payload[:at] + payload[at + len(member) + 1 :]
    else:
        return False
    try:
        key.verify(sig, unsigned)
    except InvalidSignature:
        return False
    return True


# --- keys --------------------------------------------------------------------------------


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw public key in standard base64: the form ``central.public_key`` takes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(b64: str) -> Ed25519PublicKey:
    """The central system's public key from ``central.public_key`` (standard base64, 32 bytes)."""
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            "central.public_key must be the central system's raw Ed25519 public key "
            f"(32 bytes) in standard base64: {exc}"
        ) from None
