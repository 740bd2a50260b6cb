"""A Wiegand reader on two GPIO lines (D0, D1) of a modelled GPIO chip.

It drives the lines as a reader's open-collector outputs do: both idle high; each bit is
a low pulse (``pulse`` long, 50 µs by default) on D0 for a 0 or on D1 for a 1, one every
``interval`` (2 ms by default); a frame is followed by silence. Edge times are given to
the chip as kernel timestamps, so a whole frame is sent at once without sleeping, with
exactly the timing asked for (also a wrong one, for tests).

Card numbers are encoded here, with the simulator's own parity code (not the driver's).
"""

from __future__ import annotations

import time

from simulators.gpio_chip import FakeChip


def frame_bits(number: int, length: int = 26) -> str:
    """The bits a reader sends for ``number``: 26-bit H10301 (24 data bits) or 34-bit
    (32 data bits), even parity over the first half, odd over the second."""
    data_bits = length - 2
    if not 0 <= number < 1 << data_bits:
        raise ValueError(f"{number} does not fit in {data_bits} data bits")
    data = format(number, f"0{data_bits}b")
    half = data_bits // 2
    first_ones = sum(1 for bit in data[:half] if bit == "1")
    second_ones = sum(1 for bit in data[half:] if bit == "1")
    even = "1" if first_ones % 2 == 1 else "0"  # makes the first half's ones even
    odd = "0" if second_ones % 2 == 1 else "1"  # makes the second half's ones odd
    return even + data + odd


class WiegandSimulator:
    """A reader wired to lines ``d0`` and ``d1`` of ``chip``."""

    def __init__(self, chip: FakeChip, d0: int, d1: int) -> None:
        self.chip, self.d0, self.d1 = chip, d0, d1

    def send(self, bits: str, *, interval: float = 0.002, pulse: float = 0.00005) -> None:
        """Pulse ``bits`` ("0"/"1") onto the lines with the given timing."""
        start = time.monotonic_ns()
        for i, bit in enumerate(bits):
            line = self.d1 if bit == "1" else self.d0
            at = start + round(i * interval * 1e9)
            self.chip.drive(line, False, at_ns=at)
            self.chip.drive(line, True, at_ns=at + round(pulse * 1e9))

    def present(self, number: int, length: int = 26) -> None:
        """Present a card: its 26- or 34-bit frame."""
        self.send(frame_bits(number, length))
