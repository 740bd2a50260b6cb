"""The entry pipeline: journal before the lock moves; charge only when someone walks through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest

from gateway.entry import DoorPlace, Entrance
from gateway.journal import Journal
from gateway.pass_cache import PassCache
from gateway.readers import CredentialRead
from gateway.state import LocalState
from tests.decision.helpers import phone, token
from tests.support.sets import MemorySet, contract, member, rules

AT = datetime.fromisoformat("2026-11-25T10:00:00+01:00")


class VersionedSet(MemorySet):
    """The decision's view plus what the entrance reads of the store."""

    version = 42
    updated_at = None


@dataclass
class Outcome:
    passed: bool


class ScriptedDoor:
    """A door that reports whether someone walked through, and what the journal held then."""

    def __init__(self, journal: Journal, passed: bool = True) -> None:
        self.journal = journal
        self.passed = passed
        self.mode = "normal"
        self.releases = 0
        self.journal_at_release: list[int] = []

    async def release(self) -> Outcome:
        self.releases += 1
        self.journal_at_release.append(self.journal.last_seq)
        return Outcome(self.passed)


@pytest.fixture
async def parts(tmp_path):
    journal = await Journal.open(tmp_path / "journal.sqlite", "door-1")
    passes = PassCache.open(tmp_path / "passes.sqlite")
    yield journal, passes
    await journal.close()
    passes.close()


def entrance(parts, records, *, passed=True, zone="pool", state=None):
    journal, passes = parts
    door = ScriptedDoor(journal, passed)
    published = []
    e = Entrance(
        DoorPlace("main-in", zone, "in"),
        door,
        site="oslo-sentrum",
        store=VersionedSet(rules(), records),
        state=state or LocalState(),
        journal=journal,
        passes=passes,
        online=lambda: True,
        published=published.append,
    )
    return e, door, published


def read(value="04A1B2C3", kind="nfc"):
    return CredentialRead("nfc-1", kind, value, AT)


async def test_grant_is_journalled_before_the_door_moves_and_charged_once_passed(parts):
    e, door, published = entrance(parts, [member(contracts=[contract("K", "clipcard")])])
    final = await e.present(read())
    assert door.journal_at_release == [final["seq"]]  # durable before the lock moved
    assert (final["decision"], final["passed"], final["charged"], final["contract"]) == (
        "granted",
        True,
        1,
        "K",
    )
    assert e.state.charged("M1", "K") == 1 and e.state.own_inside == {"pool": 1}
    assert published == [final]
    [record] = await parts[0].unacked()
    assert record["message"] == final


async def test_grant_nobody_walks_through_charges_nothing(parts):
    e, _door, _ = entrance(parts, [member(contracts=[contract("K", "clipcard")])], passed=False)
    final = await e.present(read())
    assert (final["decision"], final["passed"], final["charged"]) == ("granted", False, 0)
    assert e.state.charged("M1", "K") == 0 and e.state.passages == {}


async def test_denial_never_moves_the_door(parts):
    e, door, _ = entrance(parts, [member()])
    final = await e.present(read("04FFFFFF"))
    assert (final["decision"], final["reason"], door.releases) == (
        "denied",
        "unknown_credential",
        0,
    )
    assert final["seq"] == 1 and final["passed"] is False


async def test_checkin_carries_what_the_protocol_asks(parts):
    e, _, _ = entrance(parts, [member(message="Husk attest")])
    final = await e.present(read())
    for key in (
        "id",
        "seq",
        "gw",
        "at",
        "door",
        "zone",
        "direction",
        "credential",
        "member",
        "ticket",
        "decision",
        "reason",
        "contract",
        "charged",
        "passed",
        "warnings",
        "offline",
        "entitlements_version",
    ):
        assert key in final
    assert (final["gw"], final["entitlements_version"], final["offline"]) == ("door-1", 42, False)
    assert final["at"].endswith("+01:00")  # local time of the site
    assert final["member_message"] == "Husk attest"


async def test_a_presented_pass_stays_used_even_when_refused(parts):
    e, _, _ = entrance(parts, [member(credentials=[phone()], contracts=[])])
    tok = token(when=AT.isoformat())
    first = await e.present(read(tok, "pass"))
    assert first["reason"] == "no_contract"
    second = await e.present(read(tok, "pass"))
    assert second["reason"] == "pass_replayed"
    assert len(parts[1].entries()) == 1  # durable in the replay cache


async def test_locked_down_door_refuses(parts):
    e, door, _ = entrance(parts, [member()])
    door.mode = "lockdown"
    assert (await e.present(read()))["reason"] == "locked_down"


async def test_unsynced_clock_records_an_event_beside_the_refusal(parts):
    e, _, _ = entrance(parts, [member(credentials=[phone()])], state=LocalState(clock_synced=False))
    final = await e.present(read(token(when=AT.isoformat()), "pass"))
    assert final["reason"] == "pass_expired"
    records = await parts[0].unacked()
    assert [r["message"].get("type") for r in records if r["kind"] == "event"] == ["clock_unsynced"]
