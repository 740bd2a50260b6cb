"""Reader latency, by hand (not in CI): ``python -m bench.readers [--reads 1000]``.

PN532: the time from the simulator writing the last byte of an InListPassiveTarget
answer (a card on the reader) to that read arriving at the gateway out of
``Pn532Reader.reads()``. QR: the time from the scanner simulator writing a code's line
ending to the read arriving out of ``SerialScanner.reads()``. Both print p50/p99/max in
milliseconds; the target is p99 <= 5 ms. The simulators run on threads of this process,
so the figures include the pty and the GIL, as a daemon sharing a Pi's cores would see.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import latency_line
from drivers.pn532 import Pn532Reader, Pn532Settings
from drivers.serial_scanner import SerialScanner
from simulators.pn532 import Pn532Simulator
from simulators.scanner import ScannerSimulator

TARGET_P99_MS = 5.0


def summary(name: str, samples: list[float]) -> str:
    """p50 / p99 / max of ``samples`` (seconds) in milliseconds, against the target."""
    return latency_line(
        name, [s * 1000 for s in samples], unit="reads", target_p99_ms=TARGET_P99_MS
    )


async def pn532_latencies(count: int) -> list[float]:
    """Latency of ``count`` card reads, a card held on the reader, polled back to back."""
    samples: list[float] = []
    with Pn532Simulator("04A1B2C3") as sim:
        reader = Pn532Reader("bench", sim.path, Pn532Settings(poll_interval=0.0))
        reads = reader.reads()
        try:
            async for _ in reads:
                arrived = time.perf_counter()
                samples.append(arrived - sim.answered_at)
                if len(samples) >= count:
                    break
        finally:
            await reader.close()
            await reads.aclose()
    return samples


async def scanner_latencies(count: int) -> list[float]:
    """Latency of ``count`` scanned codes, one at a time."""
    samples: list[float] = []
    with ScannerSimulator() as sim:
        reader = SerialScanner("bench", sim.path)
        reads = reader.reads()
        try:
            pending = asyncio.ensure_future(anext(reads))
            await asyncio.sleep(0.2)  # the port opens
            for i in range(count):
                sim.scan(f"CODE-{i:06d}")
                await pending
                samples.append(time.perf_counter() - sim.written_at)
                pending = asyncio.ensure_future(anext(reads))
            pending.cancel()
        finally:
            await reader.close()
            await reads.aclose()
    return samples


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=1000)
    args = parser.parse_args(argv)
    print(
        summary(
            "PN532 InListPassiveTarget answer -> read", asyncio.run(pn532_latencies(args.reads))
        )
    )
    print(summary("QR scanner line end -> read", asyncio.run(scanner_latencies(args.reads))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
