"""An in-process fake relay/IO board, for tests and the demo (profile ``fake-io``).

Outputs record every change with its monotonic time; inputs are set by the test (or the
demo) with :meth:`FakeBoard.set_input`. Writes can be made slow (``write_delay``), a relay
``stuck`` (the write is taken but the relay does not move: read-back disagrees) and the
board ``unplugged``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from gateway.outputs import Board, BoardOffline
from gateway.profiles import BoardDriverSpec, DeviceAddress, DriverSettings


class FakeSettings(DriverSettings):
    """What the fake board's profile may set."""

    debounce: float = Field(0.0, ge=0, le=5)
    outputs: int = Field(16, ge=1, le=1024)
    inputs: int = Field(16, ge=0, le=1024)

    @property
    def output_count(self) -> int:
        """Outputs a door may name."""
        return self.outputs

    @property
    def input_count(self) -> int:
        """Inputs a door may name."""
        return self.inputs


@dataclass(frozen=True, slots=True)
class OutputChange:
    """One change of a fake relay: which, to what, when (time.monotonic())."""

    index: int
    value: bool
    at: float

    @property
    def on(self) -> bool:
        """The same as ``value``: whether the relay was switched on."""
        return self.value


class FakeBoard(Board):
    """A board that lives in memory; everything it did can be inspected."""

    def __init__(self, board_id: str = "fake", settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(board_id, settings)
        self.outputs: dict[int, bool] = {}
        self.history: list[OutputChange] = []
        self.stuck: set[int] = set()
        self.plugged = True
        self.write_delay = 0.0  # seconds each write takes, like a slow bus
        self.debounce = 0.0  # inputs are set edge by edge: nothing later would confirm them

    async def start(self) -> None:
        """Come online (if plugged in)."""
        self._report(self.plugged, "" if self.plugged else "unplugged")

    async def _write(self, index: int, on: bool) -> None:
        if self.write_delay:
            await asyncio.sleep(self.write_delay)
        if not self.plugged:
            raise BoardOffline(self.id, "unplugged")
        if index in self.stuck:
            raise self._fault(index, f"read-back {self.outputs.get(index, False)} after write {on}")
        if self.outputs.get(index, False) != on or index not in self.outputs:
            self.history.append(OutputChange(index, on, time.monotonic()))
        self.outputs[index] = on

    async def _read_output(self, index: int) -> bool:
        if not self.plugged:
            raise BoardOffline(self.id, "unplugged")
        return self.outputs.get(index, False)

    def set_input(self, index: int, value: bool) -> None:
        """Put a level on input ``index`` (watchers hear of it at once, de-bounce aside)."""
        self._sample(index, value)

    def unplug(self) -> None:
        """The board stops answering; its inputs become unknown."""
        self.plugged = False
        self._forget_inputs()
        self._report(False, "unplugged")

    def plug(self) -> None:
        """The board answers again."""
        self.plugged = True
        self._report(True)

    def changes(self, index: int) -> list[OutputChange]:
        """The recorded changes of output ``index``."""
        return [c for c in self.history if c.index == index]

    def energised(self) -> list[int]:
        """The outputs that are on right now."""
        return sorted(i for i, on in self.outputs.items() if on)


def create_board(board_id: str, address: DeviceAddress, settings: FakeSettings) -> FakeBoard:
    """The driver factory (see gateway/profiles.py): a fake board named by the config."""
    return FakeBoard(board_id, settings.model_dump())


BOARD_DRIVER = BoardDriverSpec(FakeSettings, create_board)
