"""HARDWARE.md, Door and reader practice: reader feedback (LED, beeper) comes as soon as
the decision is made, for grants as for denials, never after the passage."""

from __future__ import annotations

import asyncio

from gateway.entry import DoorPlace, Entrance
from gateway.state import LocalState
from tests.core.test_entry import VersionedSet, parts, read  # noqa: F401 - fixture
from tests.support.sets import contract, member, rules


class SlowPassageDoor:
    """A door whose member takes their time to walk through (until told)."""

    def __init__(self) -> None:
        self.mode = "normal"
        self.walk = asyncio.Event()

    async def release(self) -> object:
        await self.walk.wait()

        class Passed:
            passed = True

        return Passed()


async def test_grant_feedback_comes_before_the_passage(parts) -> None:  # noqa: F811
    journal, passes = parts
    door = SlowPassageDoor()
    e = Entrance(
        DoorPlace("main-in", "pool", "in"),
        door,
        site="oslo-sentrum",
        store=VersionedSet(rules(), [member(contracts=[contract("K", "clipcard")])]),
        state=LocalState(),
        journal=journal,
        passes=passes,
        online=lambda: True,
        published=lambda _: None,
    )
    told: list[bool] = []
    presenting = asyncio.create_task(e.present(read(), told.append))
    for _ in range(200):
        if told:
            break
        await asyncio.sleep(0.005)
    assert told == [True], "the reader stayed dark while the door waited for the passage"
    assert not presenting.done()
    door.walk.set()
    final = await presenting
    assert final["passed"] and told == [True]
