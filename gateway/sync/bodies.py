"""The bodies of the central system's entitlement envelopes, validated (PROTOCOL.md,
Entitlement sync): one chunk of a snapshot, and the parts a delta shares with it (a delta
as a whole: :mod:`gateway.sync.deltas`).

Each raises :class:`gateway.errors.InvalidSet` naming what is wrong; nothing of an invalid
body is ever applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.entitlements import (
    Member,
    Ticket,
    collect_records,
)
from gateway.errors import InvalidSet

CHUNK_RECORDS = 2000
MAX_CHUNKS = 5000  # 10 million records: anything beyond is not a gym's member list

Record = Member | Ticket


@dataclass(frozen=True)
class ChunkHeader:
    """Where a snapshot chunk belongs: version N, chunk i of k."""

    version: int
    chunk: int
    chunks: int


def count(body: Mapping[str, Any], key: str) -> int:
    """A required non-negative integer of a body."""
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidSet([f"{key}: must be a non-negative integer"])
    return value


def parse_checkins_upto(raw: Any) -> dict[str, int] | None:
    """``checkins_upto`` as {gw: seq}; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in raw.items()
    ):
        raise InvalidSet(["checkins_upto: must map gateway ids to non-negative integers"])
    return dict(raw)


def parse_chunk_header(body: Mapping[str, Any]) -> ChunkHeader:
    """Version, chunk and chunks of a snapshot chunk, within the protocol's limits."""
    version, chunk, chunks = count(body, "version"), count(body, "chunk"), count(body, "chunks")
    if not 1 <= chunks <= MAX_CHUNKS or chunk >= chunks:
        raise InvalidSet([f"chunk/chunks: chunk must be below chunks, chunks 1..{MAX_CHUNKS}"])
    return ChunkHeader(version, chunk, chunks)


def parse_chunk_records(body: Mapping[str, Any], chunk: int) -> list[Record]:
    """One chunk's records, validated (their schedules are checked once the rules are in)."""
    raws = body.get("records", [])
    if not isinstance(raws, list) or len(raws) > CHUNK_RECORDS:
        raise InvalidSet([f"records: must be a list of at most {CHUNK_RECORDS} records"])
    records, problems = collect_records(raws, f"chunk{chunk}.records")
    if problems:
        raise InvalidSet(problems)
    return records
