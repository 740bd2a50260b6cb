"""Relays and inputs on the Linux GPIO character device, through gpiod (libgpiod v2).

Extra ``gpio`` (``pip install 'accessgw[gpio]'``); gpiod is imported only when a board
with this driver starts, so the rest of the gateway runs without it. Edges come from the
kernel (with its own de-bounce, ``debounce_period``) and are read on the event loop: the
line request's file descriptor goes to ``loop.add_reader``, so nothing blocks and nothing
polls.

Settings (see gateway/firmware_profiles/rpi-relay-hat-gpio.toml): ``chip``, ``outputs`` and
``inputs`` (lists of line offsets; a door's point index n is the n-th entry),
``outputs_active_low``, ``inputs_active_low``, ``bias`` and ``debounce`` (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import time
from datetime import timedelta
from typing import Any

from gateway.config import BoardConfig
from gateway.errors import ConfigError, DeviceNotFound
from gateway.outputs import Board, BoardOffline
from gateway.profiles import Profile

BIASES = ("pull-up", "pull-down", "disabled", "as-is")


class GpioMissing(DeviceNotFound):
    """gpiod is not installed, or the GPIO chip does not exist."""


def _import_gpiod() -> Any:
    try:
        import gpiod
    except ImportError as exc:
        raise GpioMissing(
            "the gpio driver needs gpiod (libgpiod v2 bindings): "
            "pip install 'accessgw[gpio]' (or pip install 'gpiod>=2.2,<3')"
        ) from exc
    return gpiod


def _check_chip(chip: str) -> None:
    """Raise GpioMissing, listing the chips there are, if ``chip`` does not exist."""
    if not os.path.exists(chip):
        seen = ", ".join(sorted(glob.glob("/dev/gpiochip*"))) or "none"
        raise GpioMissing(
            f"GPIO chip {chip} not found: is this the right board/chip? chips seen: {seen}"
        )


class GpioBoard(Board):
    """Relays and dry-contact inputs on one GPIO chip."""

    def __init__(self, board_id: str, settings: dict[str, Any]) -> None:
        super().__init__(board_id, settings)
        s = self.settings
        self.chip = str(s.get("chip", "/dev/gpiochip0"))
        self.outputs = [int(o) for o in s.get("outputs", [])]
        self.inputs = [int(i) for i in s.get("inputs", [])]
        self.bias = str(s.get("bias", "pull-up"))
        if self.bias not in BIASES:
            raise ConfigError(f"board {board_id}", [f"bias must be one of {', '.join(BIASES)}"])
        if set(self.outputs) & set(self.inputs):
            raise ConfigError(f"board {board_id}", ["a GPIO line is both an output and an input"])
        self._request: Any = None
        self._gpiod: Any = None
        # the kernel de-bounces (debounce_period); edges come one by one, with no later
        # sample to confirm them, so the software filter must let each one through
        self.kernel_debounce, self.debounce = self.debounce, 0.0

    async def start(self) -> None:
        """Request the lines (outputs start inactive) and read edges on the event loop."""
        gpiod = _import_gpiod()
        _check_chip(self.chip)
        self._gpiod = gpiod
        self._request = await asyncio.to_thread(
            gpiod.request_lines, self.chip, consumer="accessgw", config=self._line_config()
        )
        now = time.monotonic()
        for index, offset in enumerate(self.inputs):
            self._sample(index, self._active(self._request.get_value(offset)), now)
        asyncio.get_running_loop().add_reader(self._request.fd, self._read_edges)
        self._report(True)

    def _line_config(self) -> dict[Any, Any]:
        from gpiod.line import Bias, Direction, Edge, Value

        config: dict[Any, Any] = {}
        if self.outputs:
            config[tuple(self.outputs)] = self._gpiod.LineSettings(
                direction=Direction.OUTPUT,
                output_value=Value.INACTIVE,
                active_low=bool(self.settings.get("outputs_active_low", False)),
            )
        if self.inputs:
            bias = {
                "pull-up": Bias.PULL_UP,
                "pull-down": Bias.PULL_DOWN,
                "disabled": Bias.DISABLED,
                "as-is": Bias.AS_IS,
            }[self.bias]
            config[tuple(self.inputs)] = self._gpiod.LineSettings(
                direction=Direction.INPUT,
                edge_detection=Edge.BOTH,
                bias=bias,
                active_low=bool(self.settings.get("inputs_active_low", False)),
                debounce_period=timedelta(seconds=self.kernel_debounce),
            )
        return config

    def _active(self, value: Any) -> bool:
        from gpiod.line import Value

        return bool(value == Value.ACTIVE)

    def _read_edges(self) -> None:
        """Called by the loop when the request's fd is readable: never blocks."""
        from gpiod.edge_event import EdgeEvent

        now_ns, now = time.monotonic_ns(), time.monotonic()
        for event in self._request.read_edge_events():
            index = self.inputs.index(event.line_offset)
            at = now - (now_ns - event.timestamp_ns) / 1e9  # MONOTONIC event clock
            self._sample(index, event.event_type == EdgeEvent.Type.RISING_EDGE, at)

    async def _write(self, index: int, on: bool) -> None:
        from gpiod.line import Value

        if self._request is None:
            raise BoardOffline(self.id, "not started")
        if not 0 <= index < len(self.outputs):
            raise self._fault(index, f"no such output: the profile lists {len(self.outputs)}")
        offset = self.outputs[index]
        self._request.set_value(offset, Value.ACTIVE if on else Value.INACTIVE)
        if self._active(self._request.get_value(offset)) != on:
            raise self._fault(index, "GPIO line reads back the other level")

    async def _read_output(self, index: int) -> bool:
        if self._request is None:
            raise BoardOffline(self.id, "not started")
        return self._active(self._request.get_value(self.outputs[index]))

    async def close(self) -> None:
        """Outputs inactive, then release the lines."""
        await super().close()
        request, self._request = self._request, None
        if request is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(request.fd)
            request.release()


def create_board(config: BoardConfig, profile: Profile) -> GpioBoard:
    """The driver factory (see gateway/profiles.py)."""
    return GpioBoard(config.id, profile.merged(config.options))
