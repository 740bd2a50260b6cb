"""ENTITLEMENTS.md, records validated strictly: a list of records (a snapshot's chunk, a
delta's upserts) validated at once gives the records, and for an invalid one the problems,
that validating record by record gives.

The reference is the record-by-record loop (:func:`collect_each`): :func:`parse_record` of
each, its problems gathered until there are ten. Records are drawn from the record codec's
seeded generator (every credential kind, tickets among members, defaults given or left out),
and broken in every way a record can be.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from gateway.entitlements import Contract, Member, Ticket, collect_each, collect_records
from tests.core.test_record_codec import SEED, raw_member, raw_ticket


def raws(count: int, seed: int, tickets: float) -> list[Any]:
    rng = random.Random(seed)
    return [
        raw_ticket(rng, i) if rng.random() < tickets else raw_member(rng, i) for i in range(count)
    ]


# one way each to break a record, from its kind to a field of a field
BREAKS: list[Any] = [
    "not a record",
    {"display": "neither a member nor a ticket"},
    {"member": 7},
    {"member": "M-x", "role": "owner"},
    {"member": "M-x", "credentials": [{"kind": "nfc", "uid": "not hex"}]},
    {"member": "M-x", "credentials": [{"kind": "nfc", "uid": "12a", "format": "h10301"}]},
    {"member": "M-x", "credentials": [{"kind": "code", "value": "   "}]},
    {"member": "M-x", "credentials": [{"kind": "badge", "value": "1"}]},
    {"member": "M-x", "contracts": [{"id": "C", "type": "clipcard"}]},
    {"member": "M-x", "contracts": [{"id": "C", "type": "recurring", "start": "2026-1-1"}]},
    {"member": "M-x", "contracts": [{"id": "C", "type": "fixed", "end": 20261231}]},
    {"member": "M-x", "blocks": [{"from": "2026-11-01T00:00:00", "to": "2026-11-30T00:00:00Z"}]},
    {"member": "M-x", "unpaid": "no"},
    {"ticket": "T-x", "code": " ", "valid_from": "2026-11-25T08:00:00+01:00",
     "valid_to": "2026-11-25T22:00:00+01:00"},
    {"ticket": "T-x", "code": "TK", "valid_from": "2026-11-25T08:00:00+01:00",
     "valid_to": "2026-11-25T22:00:00+01:00", "uses": 0},
    {"ticket": "T-x", "member": 5},  # both keys: validated as a member, and invalid as one
]  # fmt: skip


@pytest.mark.parametrize("tickets", [0.0, 0.15, 1.0], ids=["members", "mixed", "tickets"])
def test_valid_records_at_once_are_those_validated_one_by_one(tickets: float) -> None:
    chunk = raws(2000, SEED + 3, tickets)
    records, problems = collect_records(chunk, "chunk7.records")
    assert problems == []
    assert records == collect_each(chunk, "chunk7.records")[0]
    assert [type(r) for r in records] == [Ticket if "ticket" in r else Member for r in chunk]


@pytest.mark.parametrize("broken", BREAKS, ids=range(len(BREAKS)))
def test_one_invalid_record_among_valid_ones_gives_its_problems_as_alone(broken: Any) -> None:
    chunk = raws(300, SEED + 4, 0.15)
    chunk.insert(137, copy.deepcopy(broken))
    records, problems = collect_records(chunk, "chunk2.records")
    assert problems and (records, problems) == collect_each(chunk, "chunk2.records")
    assert all(p.startswith("chunk2.records[137]") for p in problems)


def test_many_invalid_records_give_the_first_ten_problems_in_order() -> None:
    chunk = raws(400, SEED + 5, 0.15)
    for at, broken in zip(range(390, 0, -24), BREAKS * 2, strict=False):
        chunk.insert(at, copy.deepcopy(broken))
    records, problems = collect_records(chunk, "records")
    assert len(problems) >= 10
    assert (records, problems) == collect_each(chunk, "records")


def test_records_given_as_another_iterable_or_an_empty_list_are_validated_alike() -> None:
    chunk = raws(50, SEED + 6, 0.15)
    assert collect_records(iter(chunk), "records") == collect_each(chunk, "records")
    assert collect_records([], "records") == ([], [])


def test_sites_and_zones_left_out_are_each_a_list_of_their_own() -> None:
    first = Contract.model_validate({"id": "C1", "type": "fixed"})
    second = Contract.model_validate({"id": "C2", "type": "fixed"})
    assert first.sites == first.zones == second.sites == ["*"]
    assert first.sites is not second.sites and first.sites is not first.zones
    first.sites.append("oslo-sentrum")  # never done, but a shared default would show it
    assert second.sites == ["*"] == Contract.model_validate({"id": "C3", "type": "fixed"}).zones
    assert (
        Contract.model_validate({"id": "C4", "type": "fixed"}).model_dump_json(
            exclude_defaults=True
        )
        == '{"id":"C4","type":"fixed"}'
    )


def test_a_big_list_of_invalid_records_gives_the_first_ten_problems() -> None:
    # the list is validated at once only until its first invalid record (fail fast)
    chunk: list[Any] = [{"member": "M1"}] + [{"member": i} for i in range(1, 20_001)]
    records, problems = collect_records(chunk, "records")
    assert len(records) == 1 and len(problems) == 10
    assert problems[0] == "records[1](1).member: Input should be a valid string"
    assert (records, problems) == collect_each(chunk, "records")
