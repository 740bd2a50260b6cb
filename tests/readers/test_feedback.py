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


async def test_a_pn532_reader_shows_grant_and_deny_on_led_and_beeper_outputs() -> None:
    from drivers.fake_io import FakeBoard
    from drivers.pn532 import Pn532Reader
    from gateway.config import ReaderFeedback
    from gateway.profiles import build_indicator

    board = FakeBoard("io")
    await board.start()
    feedback = ReaderFeedback.model_validate(
        {
            "green": {"board": "io", "index": 4},
            "red": {"board": "io", "index": 5},
            "beep": {"board": "io", "index": 6},
        }
    )
    reader = Pn532Reader("nfc-1", "/dev/null")
    reader.indicator = build_indicator(feedback, {"io": board})
    reader.indicator.led_seconds = 0.6
    await reader.feedback(True)
    await asyncio.sleep(0.05)
    assert board.outputs.get(4) and board.outputs.get(6) and not board.outputs.get(5)
    await asyncio.sleep(0.7)
    assert board.energised() == []
    await reader.feedback(False)
    await asyncio.sleep(0.8)
    assert [c.value for c in board.changes(6)][-6:] == [True, False] * 3  # three beeps
    assert [c.value for c in board.changes(5)] == [True, False]


def test_a_feedback_output_beyond_the_board_is_refused_by_validation() -> None:
    from gateway.config import BoardConfig, Config, GatewaySection, ReaderConfig
    from gateway.profiles import check_devices

    config = Config(
        gateway=GatewaySection(id="gw-1", site="club"),
        boards=[BoardConfig(id="io", profile="rpi-relay-hat-gpio")],
        doors=[{"id": "front", "zone": "gym", "direction": "in"}],
        readers=[
            ReaderConfig(
                id="nfc-1",
                profile="pn532-hsu",
                door="front",
                port="/dev/ttyS0",
                feedback={"green": {"board": "io", "index": 7}},
            )
        ],
    )
    problems = [str(p) for p in check_devices(config)]
    assert problems == ["readers[nfc-1].feedback.green.index: board 'io' has 3 outputs"]
