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
import glob
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.errors import DeviceNotFound
from gateway.outputs import Board, BoardOffline
from gateway.profiles import BoardDriverSpec, DeviceAddress, DriverSettings

BIASES = ("pull-up", "pull-down", "disabled", "as-is")
LineOffset = int
# gpiod.request_lines, or a stand-in at that boundary (simulators/gpio_chip.py in tests)
RequestLines = Callable[..., Any]


class GpioSettings(DriverSettings):
    """What a GPIO board profile may set (``[settings]``, overridden by ``options``)."""

    chip: str = "/dev/gpiochip0"
    outputs: list[Annotated[int, Field(ge=0, le=1023)]] = Field(default_factory=list)
    inputs: list[Annotated[int, Field(ge=0, le=1023)]] = Field(default_factory=list)
    outputs_active_low: bool = Field(
        False, description="a relay is ON while its pin is LOW (the Waveshare RPi relay HAT)"
    )
    inputs_active_low: bool = False
    bias: Literal["pull-up", "pull-down", "disabled", "as-is"] = "pull-up"
    debounce: float = Field(0.0, ge=0, le=1.0)

    @model_validator(mode="after")
    def _lines_once(self) -> GpioSettings:
        both = set(self.outputs) & set(self.inputs)
        if both:
            raise ValueError(
                f"GPIO line(s) {sorted(both)} are both an output and an input: a line is one or "
                "the other"
            )
        if len(set(self.outputs)) != len(self.outputs) or len(set(self.inputs)) != len(self.inputs):
            raise ValueError("a GPIO line is listed twice")
        return self

    @property
    def output_count(self) -> int:
        """How many outputs a door can name (index 0..n-1)."""
        return len(self.outputs)

    @property
    def input_count(self) -> int:
        """How many inputs a door can name (index 0..n-1)."""
        return len(self.inputs)


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

    def __init__(
        self,
        board_id: str,
        settings: GpioSettings,
        *,
        request_lines: RequestLines | None = None,
    ) -> None:
        super().__init__(board_id, settings.model_dump())
        self.config = settings
        self.chip = settings.chip
        self.outputs = list(settings.outputs)
        self.inputs = list(settings.inputs)
        self.bias = settings.bias
        self._request_lines = request_lines
        self._request: Any = None
        self._gpiod: Any = None
        # the kernel de-bounces (debounce_period); edges come one by one, with no later
        # sample to confirm them, so the software filter must let each one through
        self.kernel_debounce, self.debounce = settings.debounce, 0.0

    @property
    def output_count(self) -> int:
        """How many outputs this board has (a door's index must be below it)."""
        return len(self.outputs)

    async def start(self) -> None:
        """Request the lines (outputs start at their safe level) and read edges on the loop."""
        gpiod = _import_gpiod()
        request_lines = self._request_lines
        if request_lines is None:
            _check_chip(self.chip)
            request_lines = gpiod.request_lines
        self._gpiod = gpiod
        self._request = await asyncio.to_thread(
            request_lines, self.chip, consumer="accessgw", config=self._line_config()
        )
        self._sample_all()
        self._report(True)
        self._run_loop(self._watch_edges)  # supervised (gateway/outputs.py)

    def _sample_all(self) -> None:
        now = time.monotonic()
        for index, offset in enumerate(self.inputs):
            self._sample(index, self._active(self._request.get_value(offset)), now)

    async def _watch_edges(self) -> None:
        """Until cancelled: take the kernel's edge events as the request's fd has them.
        (Re)started after a failure, it reads every input's level first (they were
        forgotten) and shows the board online again."""
        request = self._request
        if request is None:
            raise BoardOffline(self.id, "not started")
        self._sample_all()
        self._report(True)
        readable = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(request.fd, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                self._read_edges()
        finally:
            loop.remove_reader(request.fd)

    def _line_config(self) -> dict[Any, Any]:
        from gpiod.line import Bias, Direction, Edge, Value

        config: dict[Any, Any] = {}
        for index, offset in enumerate(self.outputs):
            # each output starts at the level a door declared safe for it (de-energised
            # unless told otherwise): the relay never clicks on at start
            config[offset] = self._gpiod.LineSettings(
                direction=Direction.OUTPUT,
                output_value=Value.ACTIVE if self.safe_level(index) else Value.INACTIVE,
                active_low=self.config.outputs_active_low,
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
                active_low=self.config.inputs_active_low,
                debounce_period=timedelta(seconds=self.kernel_debounce),
            )
        return config

    def _active(self, value: Any) -> bool:
        from gpiod.line import Value

        return bool(value == Value.ACTIVE)

    def _read_edges(self) -> None:
        """Called when the request's fd is readable: never blocks."""
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
        await self._stop_loop()
        request, self._request = self._request, None
        if request is not None:
            request.release()


def create_board(board_id: str, address: DeviceAddress, settings: GpioSettings) -> GpioBoard:
    """The driver factory (see gateway/profiles.py): the chip is in the settings."""
    return GpioBoard(board_id, settings)


BOARD_DRIVER = BoardDriverSpec(GpioSettings, create_board)
