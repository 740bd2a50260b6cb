"""How a member or ticket is kept on disk: the record codec of the entitlement store.

Privacy: credential values (NFC UIDs, codes, ticket codes) are kept only as HMAC-SHA-256
with a per-gateway secret; the stored record JSON has them removed, so a stolen SD card
yields no clonable UID. Phone credentials (public keys) are kept.

A stored record is a row ``(id, kind, hashes, body)``: ``hashes`` is the concatenation of
the record's credential hashes (32 bytes each), ``body`` the JSON without card/code values.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gateway.entitlements import Member, Ticket

Record = Member | Ticket
StoredRow = tuple[str, str, bytes, str]  # (id, kind, credential hashes, body)
UnhashedRow = tuple[str, str, list[str], str]  # (id, kind, credential keys, body)
HASH_SIZE = 32
_SHA256_BLOCK = 64  # bytes: HMAC pads (or first hashes) its key to this
TICKET_CODE_PLACEHOLDER = "#hashed"  # a stored ticket's code: only its hash is kept


def prefix_of(digest: bytes) -> int:
    """The signed 64-bit prefix of a credential hash, the in-memory index key."""
    return int.from_bytes(digest[:8], "big", signed=True)


class RecordCodec:
    """Hashes credentials with the gateway's secret; encodes and decodes stored records."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        # HMAC-SHA-256 (RFC 2104) as its two SHA-256 states, keyed once and copied for each
        # credential: copying OpenSSL's HMAC context (hmac.HMAC.copy) costs about twice as
        # much as copying two digests' (1.2-1.7 against 0.8-0.9 us a credential), and a big
        # set has millions of credentials. The same digests: tests check them against hmac.
        block = (hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else key).ljust(
            _SHA256_BLOCK, b"\0"
        )
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hash(self, key: str) -> bytes:
        """HMAC-SHA-256 of a canonical credential value with the gateway's secret."""
        inner = self._inner.copy()
        inner.update(key.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def stored(self, record: Record) -> StoredRow:
        """(id, kind, credential hashes, JSON without card/code values) of a record."""
        return self.hashed(unhashed(record))

    def hashed(self, row: UnhashedRow) -> StoredRow:
        """The stored row of an :func:`unhashed` one: its credential keys hashed."""
        return self.hashed_rows((row,))[0]

    def hashed_rows(self, rows: Iterable[UnhashedRow]) -> list[StoredRow]:
        """:meth:`hashed` of each of ``rows``: a chunk of a snapshot in one loop, with as
        little Python per credential as :meth:`hash` (a big set has millions)."""
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        stored: list[StoredRow] = []
        for rid, kind, keys, body in rows:
            digests: dict[bytes, None] = {}  # in order, each once
            for key in keys:
                inner = inner_copy()
                inner.update(key.encode("utf-8"))
                outer = outer_copy()
                outer.update(inner.digest())
                digests[outer.digest()] = None
            stored.append((rid, kind, b"".join(digests), body))
        return stored


# A member's credentials all left out of its JSON, "credentials":[] in their place: the same
# JSON as excluding each index, without a set built per record. Never changed.
_EVERY_CREDENTIAL: dict[str, set[int] | set[str]] = {"credentials": {"__all__"}}


def unhashed(record: Record) -> UnhashedRow:
    """(id, kind, canonical credential keys, JSON without card/code values) of a record: all
    of its stored row but the hashing, which needs the key (:meth:`RecordCodec.hashed`).

    Fields at their defaults are left out of the JSON (decoding fills them in again): a
    third of the bytes to write, and to read back at the door.
    """
    keys = record.credential_keys()
    if isinstance(record, Member):
        credentials = record.credentials
        exclude: dict[str, set[int] | set[str]] = _EVERY_CREDENTIAL
        if len(keys) != len(credentials):  # a phone, kept: the others go by index
            exclude = {"credentials": {i for i, c in enumerate(credentials) if c.kind != "phone"}}
        # what model_dump_json returns, from the model's serializer without that method's
        # Python wrapper of keyword arguments (0.7 us of its 3.6 a member)
        body = record.__pydantic_serializer__.to_json(
            record, by_alias=True, exclude=exclude, exclude_defaults=True
        ).decode()
        return record.member, "member", keys, body
    body = record.model_copy(update={"code": TICKET_CODE_PLACEHOLDER}).model_dump_json(
        by_alias=True, exclude_defaults=True
    )
    return record.ticket, "ticket", keys, body


@dataclass(frozen=True)
class EncodedRecords:
    """Records already encoded into stored rows by a :class:`RecordCodec` with the store's
    key, in another process (a big delta is opened, validated and encoded there).

    The rows travel as a few pickled parts: handing back a handful of bytes objects costs
    the receiving process (and its event loop, which shares the GIL) nothing, and each part
    is unpickled by the store's writer thread as it is written, a short step at a time.
    Only ever built by this gateway's own worker process, never from outside data.
    """

    parts: tuple[bytes, ...]
    count: int

    @classmethod
    def of(
        cls, codec: RecordCodec, records: Iterable[Record], per_part: int = 1000
    ) -> EncodedRecords:
        parts: list[bytes] = []
        rows: list[StoredRow] = []
        count = 0
        for record in records:
            rows.append(codec.stored(record))
            if len(rows) == per_part:
                parts.append(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
                count, rows = count + len(rows), []
        if rows:
            parts.append(pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
            count += len(rows)
        return cls(tuple(parts), count)

    def rows(self) -> Iterator[StoredRow]:
        """The stored rows, in the records' order."""
        for part in self.parts:
            rows: list[StoredRow] = pickle.loads(part)  # our own worker process made it
            yield from rows


def decode(kind: str, body: str) -> Record:
    """The record of a stored row's ``kind`` and ``body``."""
    # trusted data (validated before it was stored): no InvalidSet wrapping needed
    if kind == "member":
        return Member.model_validate_json(body, strict=False)
    return Ticket.model_validate_json(body, strict=False)


def index_entries(first_rowid: int, blobs: Sequence[bytes]) -> tuple[array[int], list[int]]:
    """The index entries of consecutive stored rows (rowids from ``first_rowid`` on, their
    ``hashes`` in ``blobs``): the prefix (:func:`prefix_of`) of every hash, all read at
    once in C rather than sliced out one at a time, and each one's rowid."""
    words = array("q", b"".join(blobs))  # each hash as four 64-bit words
    prefixes = words[:: HASH_SIZE // 8]  # the first of each, in the machine's byte order
    if sys.byteorder == "little":
        prefixes.byteswap()  # read big-endian, as prefix_of does
    rowids = [
        rowid
        for rowid, blob in enumerate(blobs, first_rowid)
        for _ in range(len(blob) // HASH_SIZE)
    ]
    return prefixes, rowids


def split_hashes(blob: bytes | None) -> list[bytes]:
    """The credential hashes of a stored row."""
    if not blob:
        return []
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def holds(blob: bytes, digest: bytes) -> bool:
    """Whether a stored row's hashes include ``digest`` (compared in constant time)."""
    return any(hmac.compare_digest(h, digest) for h in split_hashes(blob))


def without(blob: bytes, digest: bytes) -> bytes:
    """A stored row's hashes with ``digest`` taken out."""
    return b"".join(h for h in split_hashes(blob) if h != digest)


def moved_note(earlier: str, later: str) -> str:
    """The note for a credential given to two records (it never names the value)."""
    return f"a card or code of {earlier} was also given to {later}: {later} keeps it"
