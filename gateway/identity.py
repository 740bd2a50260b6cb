"""The gateway's own Ed25519 identity, and the signature on everything it publishes.

PROTOCOL.md, "Trust between gateways": each gateway makes a key pair on first start and
keeps the private key in the state directory's secrets (``secrets/gateway.key``, the raw
32-byte seed, mode 0600, written atomically so a power cut never leaves half a key). The
central system registers the public key (``accessgw id CONFIG`` prints it) and hands the
site's keys to every gateway in ``rules.gateways``.

Check-ins, events, ``occupancy``, ``sync`` and ``cmd/result`` carry ``"gw"`` and ``"sig"``:
Ed25519 over the canonical JSON of the message without ``sig`` (the envelopes' canonical
form), base64url without padding. :class:`MessageSigner` is the one place that signs: the
link passes every payload it publishes through it, so no publisher can forget.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.errors import AccessGwError
from gateway.journal import RecordSigner
from gateway.passes import b64url_decode, b64url_encode
from gateway.state_dir import create_secret_atomically
from gateway.sync.envelopes import canonical, sign
from gateway.sync.topics import gw_topic

log = logging.getLogger(__name__)

KEY_FILE = "gateway.key"
SEED_BYTES = 32
# What a gateway publishes signed (PROTOCOL.md); ``status`` stays unsigned, for people.
SIGNED_KINDS = frozenset({"checkin", "event", "occupancy", "sync", "cmd/result"})


@dataclass(frozen=True)
class Identity:
    """This gateway's id, site and key pair."""

    gw: str
    site: str
    private_key: Ed25519PrivateKey

    @property
    def public_key_b64(self) -> str:
        """The raw public key in standard base64, as ``rules.gateways`` carries it."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def record_signer(self) -> RecordSigner:
        """Signs the journal's final records as they will be published (gateway.journal)."""
        key = self.private_key
        return RecordSigner(self.public_key_b64, lambda m: signed_bytes(m, self.gw, key))

    def describe(self) -> dict[str, str]:
        """What ``accessgw id`` prints, for registration in the central system."""
        return {"gw": self.gw, "site": self.site, "public_key": self.public_key_b64}


def load_or_create_key(secrets_dir: Path) -> Ed25519PrivateKey:
    """The gateway's private key from ``secrets_dir/gateway.key``, made there on first use.

    Raises :class:`AccessGwError` saying what to do when the file is damaged or the
    directory cannot be written.
    """
    path = secrets_dir / KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise AccessGwError(
            f"gateway key {path} cannot be read ({exc.strerror}): check that the service "
            "user owns gateway.state_dir"
        ) from exc
    if len(seed) != SEED_BYTES:
        raise AccessGwError(
            f"gateway key {path} has {len(seed)} bytes, expected {SEED_BYTES}: it is damaged; "
            "restore it from backup, or delete it and register the new key (accessgw id) "
            "with the central system"
        )
    return Ed25519PrivateKey.from_private_bytes(seed)


def _create(path: Path) -> Ed25519PrivateKey:
    """Make a key pair and write its seed atomically, never over a key made meanwhile."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not create_secret_atomically(path, seed):
            # another process made the key meanwhile: use theirs, never replace it
            return load_or_create_key(path.parent)
    except OSError as exc:
        raise AccessGwError(
            f"gateway key {path} cannot be written ({exc.strerror}): set gateway.state_dir to "
            "a writable path owned by the service user"
        ) from exc
    log.info("made this gateway's key pair (%s); register it with: accessgw id CONFIG", path)
    return key


def load_identity(gw: str, site: str, state_dir: Path) -> Identity:
    """This gateway's identity, its key pair made on first use."""
    return Identity(gw, site, load_or_create_key(Path(state_dir) / "secrets"))


# --- signing what the gateway publishes ---------------------------------------------------


def _no_floats(value: Any) -> Any:
    """Canonical JSON has no floats: whole ones become integers, others strings (an event's
    detail from a driver may carry one; its signature must still be possible)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    if isinstance(value, dict):
        return {k: _no_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_floats(v) for v in value]
    return value


def sign_message(message: Mapping[str, Any], gw: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """``message`` with ``gw`` and ``sig`` (PROTOCOL.md, Signed messages from gateways)."""
    plain = _no_floats({k: v for k, v in message.items() if k != "sig"})
    plain["gw"] = gw
    return sign(plain, key)


def signed_bytes(message: Mapping[str, Any], gw: str, key: Ed25519PrivateKey) -> bytes:
    """:func:`sign_message` as the canonical bytes to publish, checked and encoded once
    (the outbox signs every record of a backlog drain on the event loop)."""
    plain = _no_floats({k: v for k, v in message.items() if k != "sig"})
    plain["gw"] = gw
    plain["sig"] = b64url_encode(key.sign(canonical(plain)))  # canonical() checks it is plain
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class MessageSigner:
    """Signs a payload the link is about to publish when its topic calls for it.

    A payload that is not a JSON object (it never happens for what the gateway builds)
    goes out as it is and is logged: the receivers then drop it as unsigned.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._signed = frozenset(
            gw_topic(identity.site, identity.gw, kind) for kind in SIGNED_KINDS
        )

    def __call__(self, topic: str, payload: bytes) -> bytes:
        """The payload to publish on ``topic``: signed for the kinds that are signed."""
        if topic not in self._signed:
            return payload
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.error("not signing the payload on %s: it is not a JSON object", topic)
            return payload
        try:
            return signed_bytes(message, self.identity.gw, self.identity.private_key)
        except (ValueError, UnicodeError) as exc:  # not plain JSON: a bug upstream, said once
            log.error("not signing the payload on %s: %s", topic, exc)
            return payload


# --- verifying what others publish --------------------------------------------------------


def signature_problem(
    message: Mapping[str, Any], topic_gw: str, keys: Mapping[str, Ed25519PublicKey | None]
) -> str | None:
    """Why ``message`` published on ``gw/{topic_gw}/...`` is not authentic, or None.

    Checks, in order: ``gw`` present and equal to the topic's, ``gw`` registered in
    ``rules.gateways`` (with a well-formed key), ``sig`` present and verifying over the
    canonical JSON of the message without ``sig``.
    """
    gw = message.get("gw")
    if not isinstance(gw, str):
        return "gw missing"
    if gw != topic_gw:
        return "gw does not match the topic"
    if gw not in keys:
        return f"gateway {gw[:64]} is not registered in rules.gateways"
    key = keys[gw]
    if key is None:
        return f"gateway {gw[:64]} has a malformed key in rules.gateways"
    if "sig" not in message:
        return "unsigned"
    sig = _decode_sig(message["sig"])
    if sig is None:
        return "bad signature (not 64 bytes of base64url)"
    try:
        signed = canonical({k: v for k, v in message.items() if k != "sig"})
    except ValueError:
        return "not canonical JSON (floats?)"
    try:
        key.verify(sig, signed)
    except InvalidSignature:
        return "bad signature"
    return None


def _decode_sig(value: Any) -> bytes | None:
    """The 64 signature bytes, or None unless ``value`` is exactly their unpadded base64url
    (another spelling of the same bytes is refused, not accepted as equivalent)."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    raw = b64url_decode(value)
    if raw is None or len(raw) != 64 or b64url_encode(raw) != value:
        return None
    return raw


def describe_identity(config_path: str) -> dict[str, str]:
    """``accessgw id CONFIG``: the identity of the configured gateway (made if missing)."""
    from gateway.config import load_config

    cfg = load_config(config_path)
    identity = load_identity(cfg.gateway.id, cfg.gateway.site, cfg.gateway.state_dir)
    return identity.describe()
