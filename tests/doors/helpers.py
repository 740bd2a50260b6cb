"""Shared pieces of the door tests: configs, an event recorder, polling waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from drivers.modbus import ModbusBoard, ModbusSettings
from gateway.config import BoardConfig, ContactPoint, DoorConfig, Point
from gateway.profiles import board_address

LOCK, CONTACT, REX, PASSAGE, FIRE = 0, 0, 1, 2, 3  # outputs / inputs on the test board


def door_config(board: str = "io", **overrides: Any) -> DoorConfig:
    """A door with every input on ``board``, and short times for tests."""
    values: dict[str, Any] = {
        "id": "main-in",
        "zone": "gym",
        "direction": "in",
        "lock": Point(board=board, index=LOCK),
        # the test boards say True for an open door: closed is the inactive level
        "contact": ContactPoint(board=board, index=CONTACT, closed_when="inactive"),
        "rex": Point(board=board, index=REX),
        "fire": Point(board=board, index=FIRE),
        "unlock_seconds": 0.3,
        "held_open_seconds": 0.4,
        "pass_timeout": 0.4,
    }
    values.update(overrides)
    return DoorConfig(**values)


def turnstile_config(board: str = "io", **overrides: Any) -> DoorConfig:
    """A turnstile: open pulse on output 0, rotation on input 2, no contact."""
    values: dict[str, Any] = {
        "kind": "turnstile",
        "contact": None,
        "passage": Point(board=board, index=PASSAGE),
    }
    values.update(overrides)
    return door_config(board, **values)


class Events:
    """Records a door's events; ``types`` in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any], float]] = []

    def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.seen.append((kind, detail, time.monotonic()))

    @property
    def types(self) -> list[str]:
        """The event types, in the order they came."""
        return [kind for kind, _, _ in self.seen]

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The details of every event of type ``kind``."""
        return [detail for k, detail, _ in self.seen if k == kind]


async def until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Wait until ``predicate()`` holds (fails the test after ``within`` seconds).

    Polls, because what it waits for may happen on a simulator's own thread."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)


def modbus_board(config: BoardConfig, settings: dict[str, Any]) -> ModbusBoard:
    """The Modbus driver for a board config entry, with plain test settings."""
    return ModbusBoard(config.id, board_address(config), ModbusSettings(**settings))
