"""Signed envelopes from the central system (PROTOCOL.md, Signed envelopes).

An envelope is ``{"type", "site", "issued_at", "body", "sig"}``, plus ``"gw"`` on the
per-gateway topics ``gw/{gw}/...`` (PROTOCOL.md, Trust between gateways); ``sig`` is the
Ed25519 signature over the canonical JSON of the envelope without ``sig`` (keys sorted,
separators ``,``/``:``, UTF-8, no floats anywhere). :func:`open_envelope` checks everything
before the caller sees any of it and raises :class:`BadMessage` with a short reason that
never quotes the payload: payloads from the broker are untrusted and are never logged whole.

Untrusted bytes cost memory once parsed (a 16 MiB payload of ``{},{},...`` becomes hundreds
of MiB of dicts), so a payload over :data:`VERIFY_BEFORE_PARSE` is authenticated on its
bytes before it is parsed when it is the canonical JSON with the ``sig`` member added (what
:func:`seal` sends). The spec signs the canonical form but does not require it on the wire, so
a big payload in another layout is still parsed (off the loop) and verified after, unless it
is so dense in JSON values that parsing it is the attack (:func:`_too_dense`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
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
from gateway.sync.topics import max_bytes as topic_max_bytes
from gateway.sync.topics import parse as parse_topic

TYPES = ("delta", "snapshot", "command", "time", "ack")
# The envelope types each of the central system's topics to a gateway carries (PROTOCOL.md,
# Topics); any other type on it is refused as ``wrong_topic``. ``gw/{gw}/delta`` also
# answers a sync with ``time``.
CARRIES = {
    "entitlements/delta": ("delta",),
    "time": ("time",),
    "delta": ("delta", "time"),
    "snapshot": ("snapshot",),
    "cmd": ("command",),
}
MAX_PAYLOAD = 16 * 2**20
MAX_COMMAND = 64 * 2**10
FIELDS = ("type", "site", "issued_at", "body")
SIG_BYTES = 64
OFF_LOOP = 64 * 2**10  # bodies bigger than this are opened in a worker thread
VERIFY_BEFORE_PARSE = 2**20  # bodies bigger than this are authenticated before parsing
# ... where they are canonical; others are parsed only if not denser than this (_too_dense)
MIN_BYTES_PER_VALUE = 6
# A JSON escape of a UTF-16 surrogate: where one appears, the parsed text may hold a lone
# surrogate, which cannot be encoded as UTF-8 (so cannot be canonical, stored or logged).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


@dataclass(frozen=True)
class Envelope:
    """An opened, verified envelope: what the central system said, to whom, and when."""

    type: str
    site: str
    issued_at: datetime
    body: dict[str, Any]
    gw: str | None = None


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
    type_: str,
    site: str,
    body: dict[str, Any],
    private_key: Ed25519PrivateKey,
    at: datetime,
    gw: str | None = None,
) -> bytes:
    """A signed envelope as the bytes to publish (the central system's side); ``gw`` for
    the envelopes sent on one gateway's ``gw/{gw}/...`` topics, None for site-wide ones."""
    env: dict[str, Any] = {"type": type_, "site": site, "issued_at": at.isoformat(), "body": body}
    if gw is not None:
        env["gw"] = gw
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
    max_bytes: int | None = None,
) -> Envelope:
    """Check and open one envelope; raise :class:`BadMessage` (reason, topic) when it is
    too large for its topic (or ``max_bytes``), not JSON, not an envelope, for another site
    or another gateway, of an unknown type, or not signed by ``public_key``.

    An envelope on a per-gateway topic ``gw/{gw}/...`` must carry ``"gw"`` equal to that
    ``{gw}`` (covered by the signature), so that one signed for another gateway cannot be
    copied onto this gateway's topics. Site-wide envelopes carry none.
    """
    limit = min(max_bytes, topic_max_bytes(topic)) if max_bytes else topic_max_bytes(topic)
    if len(payload) > limit:
        raise BadMessage(f"too large: {len(payload)} bytes, the limit is {limit}", topic)
    sig_text = None
    if len(payload) > VERIFY_BEFORE_PARSE:
        sig_text = _verified_before_parse(payload, public_key)
        if sig_text is None and _too_dense(payload):
            raise BadMessage(
                "bad signature (over 1 MiB, not verifiable on its bytes, and too dense in "
                "JSON values to be parsed before it is authenticated)",
                topic,
            )
    env = _parse(payload, topic)
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
    gw = _bound_gw(env, topic)
    if issued_at is None:
        raise BadMessage("issued_at is not an ISO 8601 time with offset", topic)
    if not isinstance(body, dict):
        raise BadMessage("body is not an object", topic)
    if sig_text is not None:  # authenticated on its bytes: sound only if that was the sig
        if env["sig"] != sig_text:
            raise BadMessage("bad signature", topic)
    elif not _verifies_as_sent(payload, env["sig"], sig, public_key):
        unsigned = {k: v for k, v in env.items() if k != "sig"}
        try:
            public_key.verify(sig, _dumps(unsigned))
        except InvalidSignature:
            raise BadMessage("bad signature", topic) from None
    return Envelope(kind, site, issued_at, body, gw)


def wrong_topic(kind: Any) -> str:
    """The ``bad_message`` reason for an envelope on a topic that does not carry its type
    (Clarifications: ``wrong_topic``)."""
    return f"wrong_topic: a {str(kind)[:16]} envelope does not belong on this topic"


def open_carried(
    payload: bytes, *, public_key: Ed25519PublicKey, site: str, topic: str, types: tuple[str, ...]
) -> Envelope:
    """:func:`open_envelope`, and the envelope's type must be one of ``types`` (those
    ``topic`` carries, :data:`CARRIES`): the one check every message of the central system
    passes first, in the gateway (entitlement sync, the snapshot builder, commands) and in
    the wire process, which refuses junk with the very same reason before it crosses."""
    env = open_envelope(payload, public_key=public_key, site=site, topic=topic)
    if env.type not in types:
        raise BadMessage(wrong_topic(env.type), topic)
    return env


def carried(topic: str, site: str, gw: str) -> tuple[str, ...] | None:
    """The envelope types ``topic`` carries to gateway ``gw`` of ``site``; None unless it
    is one of the central system's topics to that gateway."""
    where = parse_topic(topic)
    if where is None or where.site != site or where.gw not in (None, gw):
        return None
    return CARRIES.get(where.kind)


async def open_envelope_off_loop(
    payload: bytes,
    *,
    public_key: Ed25519PublicKey,
    site: str,
    topic: str,
    max_bytes: int | None = None,
) -> Envelope:
    """:func:`open_envelope`, in a worker thread for bodies over 64 KiB (JSON parsing and
    the signature over megabytes would stall the doors' decisions for a fraction of a
    second); small ones are opened at once, a thread hop costing more than they do."""
    kwargs: dict[str, Any] = {
        "public_key": public_key, "site": site, "topic": topic, "max_bytes": max_bytes,
    }  # fmt: skip
    if len(payload) > OFF_LOOP:
        return await asyncio.to_thread(open_envelope, payload, **kwargs)
    return open_envelope(payload, **kwargs)


def _parse(payload: bytes, topic: str) -> Any:
    """The JSON of ``payload``, or BadMessage for anything that is not plain, encodable JSON
    (floats, invalid UTF-8, nesting deeper than the parser's recursion limit, lone
    surrogates)."""
    try:
        env = _strict_loads(payload)
    except _Float:
        raise BadMessage("floats are not allowed in envelopes", topic) from None
    except (UnicodeDecodeError, ValueError):
        raise BadMessage("not valid JSON in UTF-8", topic) from None
    except RecursionError:
        raise BadMessage("JSON nested too deeply", topic) from None
    if _SURROGATE_ESCAPE.search(payload) is not None:  # rare: only then the full check
        try:
            _dumps(env)
        except UnicodeEncodeError:
            raise BadMessage("a string holds a lone UTF-16 surrogate (not UTF-8)", topic) from None
        except (ValueError, RecursionError):
            raise BadMessage("not plain JSON", topic) from None
    return env


def _bound_gw(env: dict[str, Any], topic: str) -> str | None:
    """The envelope's ``gw`` when it came on a per-gateway topic, which must name it."""
    where = parse_topic(topic)
    if where is None or where.gw is None:
        return None  # site-wide (or a caller's own topic name): nothing to bind to
    gw = env.get("gw")
    if gw is None:
        raise BadMessage("gw missing (envelopes on gw/{gw}/ topics must name their gateway)", topic)
    if gw != where.gw:
        raise BadMessage("for another gateway (gw does not match the topic)", topic)
    return where.gw


def _too_dense(payload: bytes) -> bool:
    """Whether a big payload that could not be authenticated on its bytes holds so many
    JSON values for its size that parsing it would cost many times its size in memory
    (``{},{},...``: about 100 bytes of objects per 3 bytes sent). Real entitlement records
    average well over :data:`MIN_BYTES_PER_VALUE` bytes per value; what passes costs at most
    a few times its size to parse, off the event loop, before the signature is checked."""
    values = payload.count(b"{") + payload.count(b"[") + payload.count(b",")
    return values * MIN_BYTES_PER_VALUE > len(payload)


def _verified_before_parse(payload: bytes, key: Ed25519PublicKey) -> str | None:
    """The ``sig`` text when ``payload`` is a canonical envelope whose last ``"sig":"..."``
    member, cut out, leaves bytes that ``key`` signed; None otherwise. Nothing is parsed."""
    at = payload.rfind(b'"sig":"')
    if at < 0:
        return None
    start = at + len(b'"sig":"')
    end = payload.find(b'"', start, start + 101)
    if end < 0:
        return None
    try:
        sig_text = payload[start:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    sig = _decode_sig(sig_text)
    if sig is None or not _verifies_as_sent(payload, sig_text, sig, key):
        return None
    return sig_text


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
    view = memoryview(payload)  # one copy of a big payload, not three
    if before == b",":
        unsigned = b"".join((view[: at - 1], view[at + len(member) :]))
    elif before == b"{" and after == b",":
        unsigned = b"".join((view[:at], view[at + len(member) + 1 :]))
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
