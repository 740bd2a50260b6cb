"""The disk's own fsync latency while a bench runs, to read its tap figures against.

Every tap waits for its decision's fsync (PROTOCOL.md: durable before the lock moves), so a
disk that stalls stalls the door. This machine's virtual disk does, in some minutes and not
in others: a bare loop of 200-byte writes and fsyncs, nothing else running, read p99 0.7 ms
in some minutes and 35-200 ms (max 282 ms) in others on 2026-12-03. :class:`FsyncProbe`
runs that loop in a thread of the bench's process, on the same file system as the daemon's
state, while the taps run, so that a tap figure comes with the disk's state at that time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType

from bench.figures import percentile

INTERVAL_S = 0.05  # one fsync every 50 ms: a few a second, like a door's taps


class FsyncProbe:
    """``with FsyncProbe(directory) as probe:`` ... ``probe.summary()``."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "fsync-probe"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync probe", daemon=True)
        self.ms: list[float] = []

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while not self._stop.wait(INTERVAL_S):
                os.write(fd, b"x" * 200)
                started = time.perf_counter()
                os.fsync(fd)
                self.ms.append((time.perf_counter() - started) * 1000)
        finally:
            os.close(fd)
            self._path.unlink(missing_ok=True)

    def summary(self) -> str:
        """``a bare fsync on this disk meanwhile: p50 .. ms, p99 .. ms, max .. ms``."""
        return summary(self.ms)


def summary(ms: list[float]) -> str:
    """What fsyncs of ``ms`` milliseconds say of the disk (one probe's, or several's)."""
    ordered = sorted(ms)
    if not ordered:
        return "a bare fsync on this disk meanwhile: not measured"
    return (
        f"a bare fsync on this disk meanwhile: p50 {percentile(ordered, 50):.2f} ms, "
        f"p99 {percentile(ordered, 99):.1f} ms, max {ordered[-1]:.0f} ms"
    )
