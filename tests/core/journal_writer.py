"""A child process for the SIGKILL test: writes decisions until it is killed.

After each ``record_decision`` returns (durable), it prints ``D <seq> <id>``; before an
ack it prints ``A <upto>``. The parent kills it at random moments.
"""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import UTC, datetime

from gateway.journal import Journal


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    journal = await Journal.open(path, "door-1")
    while True:
        entry = await journal.record_decision({"at": datetime.now(UTC).isoformat(), "n": seed})
        print(f"D {entry.seq} {entry.id}", flush=True)
        if rng.random() < 0.5:
            await journal.finalise(entry.seq, passed=True, charged=1)
        if rng.random() < 0.05:
            await journal.record_event("door_closed", door="d", detail={}, at=datetime.now(UTC))
        if rng.random() < 0.03:
            upto = entry.seq - rng.randint(0, 3)
            print(f"A {upto}", flush=True)
            await journal.ack(upto)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
