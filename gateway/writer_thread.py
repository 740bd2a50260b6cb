"""One thread that owns one SQLite connection: writes leave the event loop, in order.

A write with ``synchronous=FULL`` waits for fsync, which on an SD card can take tens of
milliseconds: never on the event loop (COMMON rules). Everything submitted runs on the one
thread, first in, first out, so writes keep the order they were submitted in, and a
caller that needs durability awaits the returned future (``asyncio.wrap_future``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriterThread:
    """A single worker thread for one database's statements."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the thread after everything submitted before it.

        A failure is logged even when nobody waits for the result (a write that is
        fire-and-forget for its caller must not fail silently).
        """
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._log_failure)
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and wait for it (start-up, shutdown, reads)."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
        self._executor.shutdown(wait=True)

    def _log_failure(self, future: Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("%s: a write failed: %s", self.name, future.exception())


class InlineWriter(WriterThread):
    """Runs each statement at once in the caller's thread: for a read-only look at a
    database from a tool (no event loop to keep free, a connection bound to its thread)."""

    def __init__(self, name: str = "inline") -> None:
        self.name = name

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` now; its outcome as a finished future."""
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` now."""
        return fn(*args)

    def close(self) -> None:
        """Nothing to stop."""
