"""UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, random bits.

Ids made later sort later, which keeps check-in ids in time order for the central
system's indexes. The 12 bits after the milliseconds hold the sub-millisecond fraction
(RFC 9562 section 6.2, method 3), so ids made one after the other in the same
millisecond still sort in the order they were made; 62 random bits keep them unique.
"""

from __future__ import annotations

import os
import time
import uuid

_NS_PER_MS = 1_000_000


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7 for now, or for ``unix_ms`` (then the sub-millisecond bits are random)."""
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    if unix_ms is None:
        ns = time.time_ns()
        ms, fraction = divmod(ns, _NS_PER_MS)
        rand_a = fraction * 4096 // _NS_PER_MS  # 12 bits of sub-millisecond time
    else:
        ms, rand_a = unix_ms, int.from_bytes(os.urandom(2), "big") & 0xFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= rand_a << 64
    value |= 0b10 << 62  # variant
    value |= rand_b
    return uuid.UUID(int=value)
