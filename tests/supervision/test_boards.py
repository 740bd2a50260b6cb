"""A board's input polling is supervised like every other part (issue 9, defect 1).

Before, each Modbus board ran its connect/poll loop as a bare task of its own: anything
but a wire failure (a door's watcher that raised, an answer the driver did not expect)
ended the task without a line in the log, and the board's inputs froze at their last
level while the status still said all was well. Two boards on two pymodbus servers; a
raise injected at the driver's boundary (its discrete-input read) of one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus import ModbusBoard
from simulators.relay_board import RelayBoardSim
from tests.supervision.helpers import FAST, ScriptedReader, events, load_members, running, until
from tests.supervision.test_components import until_events
from tests.support.configs import standalone_header


@pytest.fixture
def sims() -> Iterator[tuple[RelayBoardSim, RelayBoardSim]]:
    first, second = RelayBoardSim().start_tcp(), RelayBoardSim().start_tcp()
    yield first, second
    first.close()
    second.close()


def two_board_config(state: Path, left: int, right: int) -> str:
    """Door ``in`` (with a contact) on board ``left``, door ``out`` on board ``right``."""
    options = "{ poll_interval = 0.02, debounce = 0.0, timeout = 0.3, retries = 0 }"
    return (
        standalone_header(state)
        + f"""
[[boards]]
id = "left"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {left}
options = {options}
[[boards]]
id = "right"
profile = "modbus-tcp-relay"
host = "127.0.0.1"
tcp_port = {right}
options = {options}
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = {{ board = "left", index = 0 }}
contact = {{ board = "left", index = 0 }}
unlock_seconds = 0.3
[[doors]]
id = "out"
zone = "gym"
direction = "out"
lock = {{ board = "right", index = 0 }}
unlock_seconds = 0.3
"""
    )


async def test_a_board_poll_loop_that_raises_is_reported_restarted_and_other_doors_go_on(
    tmp_path: Path, sims: tuple[RelayBoardSim, RelayBoardSim], caplog: pytest.LogCaptureFixture
) -> None:
    left_sim, right_sim = sims
    async with running(two_board_config(tmp_path, left_sim.port, right_sim.port)) as gw:
        load_members(gw, 1, 2)
        left = gw.boards["left"]
        assert isinstance(left, ModbusBoard)
        await until(lambda: left.health.online and gw.boards["right"].health.online)
        await until(lambda: gw.doors["in"].status()["contact"] == "open")  # input 0 is low

        real_read = left._read_inputs
        crashes = 0

        async def crashing_read() -> list[bool]:  # the injected fault, at the driver's wire
            nonlocal crashes
            if crashes == 0:
                crashes += 1
                raise RuntimeError("injected poll bug")
            return await real_read()

        caplog.set_level(logging.ERROR)
        left._read_inputs = crashing_read  # type: ignore[method-assign]
        [failed] = await until_events(gw, "component_failed")
        assert failed["detail"]["component"] == "board left"
        assert "injected poll bug" in failed["detail"]["error"]
        assert any(
            "board left failed" in r.getMessage() and "injected poll bug" in r.getMessage()
            for r in caplog.records
        )
        assert gw.status()["components"]["board left"]["failures"] == 1
        # meanwhile the board shows offline and its door's inputs unknown, with a fault
        faults = await events(gw, "relay_fault")
        assert any(f["door"] == "in" and "input polling failed" in str(f["detail"]) for f in faults)

        out = ScriptedReader("r-out")
        gw.attach_reader(out, "out", 0)
        out.nfc("04000002")  # the door on the other board never stopped
        await until(lambda: out.feedbacks == [True])
        await until(lambda: right_sim.coil(0))

        # restarted with back-off: polling again, the contact followed, the door releases
        await until(lambda: gw.status()["components"]["board left"]["state"] == "running")
        await until(lambda: left.health.online)
        left_sim.set_input(0, True)
        await until(lambda: gw.doors["in"].status()["contact"] == "closed")
        reader = ScriptedReader("r-in")
        gw.attach_reader(reader, "in", 0)
        reader.nfc("04000001")
        await until(lambda: reader.feedbacks == [True])
        await until(lambda: left_sim.coil(0))
        assert crashes == 1


async def test_a_gpio_board_whose_edge_reading_raises_is_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The GPIO driver reads edges when the kernel's fd is readable: a failure there
    (injected at the driver's boundary, the edge read) was an "Exception in callback" of
    the loop, repeated for every edge; now the board's loop is supervised like Modbus's."""
    pytest.importorskip("gpiod", reason="the gpio extra (gpiod) is not installed")
    from drivers.gpio import GpioBoard, GpioSettings
    from gateway.supervisor import Supervisor
    from simulators.gpio_chip import FakeChip

    line = 17
    chip = FakeChip()
    settings = GpioSettings(chip=chip.path, outputs=[26], inputs=[line])
    board = GpioBoard("hat", settings, request_lines=chip.request_lines)
    failures: list[str] = []
    board.supervise_with(Supervisor(lambda f: failures.append(f"{f.component}: {f.error}"),
                                    backoff=FAST))  # fmt: skip
    board.watch(0, lambda edge: None)
    await board.start()
    try:
        real_read = board._read_edges
        crashes = 0

        def crashing_read() -> None:
            nonlocal crashes
            if crashes == 0:
                crashes += 1
                raise RuntimeError("injected edge bug")
            real_read()

        board._read_edges = crashing_read  # type: ignore[method-assign]
        caplog.set_level(logging.ERROR)
        level = board.input_state(0)
        assert level is not None
        chip.drive(line, not level)  # an edge: read by the injected failure
        await until(lambda: failures == ["board hat: RuntimeError: injected edge bug"])
        assert any("board hat failed" in r.getMessage() for r in caplog.records)
        await until(lambda: board.health.online)  # restarted: the levels read again
        await until(lambda: board.input_state(0) is (not level))
        chip.drive(line, level)
        await until(lambda: board.input_state(0) is level)  # edges come again
    finally:
        await board.close()
