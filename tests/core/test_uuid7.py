"""PROTOCOL.md, Check-ins: ``id`` is a UUIDv7 (time-ordered, unique)."""

from __future__ import annotations

import uuid

from gateway.uuid7 import uuid7


def test_uuid7_has_version_7_and_the_rfc_variant():
    u = uuid7()
    assert (u.version, u.variant) == (7, uuid.RFC_4122)


def test_uuid7_carries_the_unix_milliseconds_in_its_first_48_bits():
    assert uuid7(1_795_000_000_123).int >> 80 == 1_795_000_000_123


def test_uuid7_sort_by_time():
    ids = [uuid7(1_795_000_000_000 + i) for i in range(1000)]
    assert ids == sorted(ids)


def test_uuid7_made_one_after_another_sort_in_the_order_they_were_made():
    ids = [uuid7() for _ in range(10_000)]
    assert ids == sorted(ids)


def test_uuid7_are_unique_even_within_one_millisecond():
    assert len({uuid7(1_795_000_000_000) for _ in range(50_000)}) == 50_000
    assert len({uuid7() for _ in range(50_000)}) == 50_000
