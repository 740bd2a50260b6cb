"""The wire thread: the MQTT link and the outbox on an event loop of their own.

A gateway back from a day offline drains its backlog as fast as the broker acknowledges:
thousands of check-ins a second, each encoded, signed (Ed25519) and handed to paho, and
as many PUBACKs read back. On the doors' event loop that work came in turns of several
milliseconds, and every tap waited behind them (loop lag p99 14-18 ms, tap to relay p99
20-33 ms under the bench's load). Here it runs on a thread with its own loop: the doors'
loop only wakes for what concerns it (a batch of journal records, an ack, a verified
message), and the GIL, handed over every millisecond (``gateway.daemon.GIL_SWITCH_S``),
bounds how long a tap waits for the wire.

What crosses between the loops, and how:

- a coroutine to run on the other loop, awaited by the caller: :func:`on_loop`;
- a plain call that needs no answer (a message for the dispatcher, an event, a nudge):
  a :class:`Mailbox`, one wake-up of the receiving loop per burst rather than per call.

Everything that changes the gateway's state (journal, history, store, doors) still runs on
the doors' loop: only the link, its signing and the outbox's pipeline live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
PER_WAKE = 64  # mailbox calls run per turn of the receiving loop, so a burst cannot hog it


class WireThread:
    """A daemon thread running an asyncio loop until :meth:`stop`."""

    def __init__(self, name: str = "mqtt wire") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The wire's loop (only once started)."""
        if self._loop is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._loop

    def start(self) -> None:
        """Start the thread and its loop; returns once the loop runs."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                _close(loop)

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the wire's loop and wait for it on the caller's.

        Cancelling the caller cancels ``coro`` and waits until it has finished (the link
        says ``offline`` and disconnects before the thread is stopped).
        """
        home = asyncio.get_running_loop()
        finished: asyncio.Future[T] = home.create_future()
        started: list[asyncio.Task[T]] = []

        def settle(task: asyncio.Task[T]) -> None:  # on the home loop
            if finished.done():
                return
            if task.cancelled():
                finished.cancel()
            elif (exc := task.exception()) is not None:
                finished.set_exception(exc)
            else:
                finished.set_result(task.result())

        def begin() -> None:  # on the wire loop
            task = self.loop.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda t: _post(home, settle, t))

        self.loop.call_soon_threadsafe(begin)
        try:
            return await asyncio.shield(finished)
        except asyncio.CancelledError:
            # ``begin`` ran before this (one queue, first in first out), so the task exists.
            self.loop.call_soon_threadsafe(lambda: [task.cancel() for task in started])
            with contextlib.suppress(BaseException):
                await finished
            raise

    async def stop(self) -> None:
        """Stop the loop (its leftover tasks are cancelled) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        self._thread = None


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on a stopped loop, let it finish, and close the loop."""
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon_threadsafe``, except when ``loop`` is closed (the gateway stopped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


async def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (another thread's) and await its result here."""
    if loop is asyncio.get_running_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class Mailbox:
    """Plain calls posted from any thread, run in order on one loop.

    A burst of posts costs the receiving loop one wake-up, and each turn of that loop runs
    at most ``PER_WAKE`` of them, so a flood on the wire cannot hold the doors' loop.
    A call that raises is logged and the rest still run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon on the mailbox's loop."""
        with self._lock:
            self._calls.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        if threading.get_ident() == getattr(self.loop, "_thread_id", None):
            self.loop.call_soon(self._run)
        else:
            _post(self.loop, self._run)

    def waiting(self) -> int:
        """Calls posted and not run yet."""
        return len(self._calls)

    def _run(self) -> None:
        for _ in range(PER_WAKE):
            with self._lock:
                if not self._calls:
                    self._scheduled = False
                    return
                fn, args = self._calls.popleft()
            try:
                fn(*args)
            except Exception:  # one call's bug must not lose the calls behind it
                log.exception("%s: %r failed", self.name, fn)
        self.loop.call_soon(self._run)  # more waiting: after what else is ready
