"""Issue 12 point 4: a lock point with ``active_low = true`` is at its door's safe
*physical* level from the first instant, not for the milliseconds between a board's
start and its door's start.

The whole daemon start is run (gateway.daemon.Gateway), and every level each output is
given is recorded where the hardware would see it: the GPIO chip at the gpiod boundary
(simulators/gpio_chip.py) and the Modbus board's own record of coil writes
(pymodbus's server, simulators/relay_board.py). The first level of each lock output is
its safe one, and no other comes before the door controls it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

gpiod = pytest.importorskip("gpiod", reason="the gpio extra (gpiod) is not installed")

from drivers import gpio as gpio_driver  # noqa: E402
from simulators.gpio_chip import FakeChip  # noqa: E402
from simulators.relay_board import RelayBoardSim  # noqa: E402
from tests.supervision.helpers import running  # noqa: E402
from tests.support.configs import standalone_header  # noqa: E402

CH1, CH2 = 26, 20  # the relay HAT's BCM lines of relay CH1 and CH2
MODBUS_LOCK = 3


def config(state: Path, board_sim: RelayBoardSim) -> str:
    return (
        standalone_header(state)
        + f"""
[[boards]]
id = "hat"
profile = "rpi-relay-hat-gpio"
[[boards]]
id = "net"
profile = "modbus-tcp-relay"
host = "{board_sim.host}"
tcp_port = {board_sim.port}
options = {{ poll_interval = 0.02, timeout = 0.3, retries = 0 }}
[[doors]]
id = "maglock"
zone = "gym"
direction = "in"
lock = {{ board = "hat", index = 0, active_low = true }}
[[doors]]
id = "strike"
zone = "gym"
direction = "out"
lock = {{ board = "hat", index = 1 }}
[[doors]]
id = "side"
zone = "gym"
direction = "in"
lock = {{ board = "net", index = {MODBUS_LOCK}, active_low = true }}
"""
    )


async def test_every_output_is_first_given_its_doors_safe_physical_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chip = FakeChip()
    monkeypatch.setattr(gpiod, "request_lines", chip.request_lines)  # the gpiod boundary
    monkeypatch.setattr(gpio_driver, "_check_chip", lambda _chip: None)
    with RelayBoardSim() as board_sim:
        board_sim.start_tcp()
        async with running(config(tmp_path / "state", board_sim)):
            # the HAT's relay is ON while its pin is LOW (outputs_active_low = true):
            # the active-low lock's safe state is its relay ON (pin LOW), from the start
            ch1 = [high for offset, high in chip.output_levels if offset == CH1]
            assert ch1 and set(ch1) == {False}, f"CH1 pin levels from the start: {ch1}"
            ch2 = [high for offset, high in chip.output_levels if offset == CH2]
            assert ch2 and set(ch2) == {True}, f"CH2 pin levels from the start: {ch2}"
            writes = [w.value for w in board_sim.writes(MODBUS_LOCK)]
            assert writes and set(writes) == {True}, f"coil writes from the start: {writes}"
