"""Supervision of the gateway's long-lived tasks: none may die silently.

Each part (a reader loop, a door, housekeeping, sync, the web UI) runs under a
:class:`Supervisor` as a coroutine factory. When the coroutine raises, or ends although it
should run for ever, the failure is logged with its traceback, reported (``on_failure``:
the daemon journals a ``component_failed`` event and shows it in the status) and the part
is started again after a back-off: 1 s, doubling up to 60 s, back to 1 s once the part has
run healthily for a while. One part failing never stops another: each has its own task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial

log = logging.getLogger(__name__)

RunPart = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before a restart: ``initial`` doubling to ``maximum``; reset to
    ``initial`` when the part ran at least ``healthy_after`` seconds before failing."""

    initial: float = 1.0
    maximum: float = 60.0
    healthy_after: float = 60.0

    def next(self, previous: float | None, ran_for: float) -> float:
        """The delay after a failure, given the previous delay and how long the part ran."""
        if previous is None or ran_for >= self.healthy_after:
            return self.initial
        return min(previous * 2, self.maximum)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure of a part: which part, why, and when it is started again."""

    component: str
    error: str
    failures: int
    restart_in: float


@dataclass(slots=True)
class PartState:
    """What the status shows of one supervised part."""

    state: str = "running"  # running | restarting | finishing | stopped
    failures: int = 0
    last_error: str | None = None

    def as_status(self) -> dict[str, object]:
        """The part's entry in the status payload."""
        return {"state": self.state, "failures": self.failures, "last_error": self.last_error}


FailureSink = Callable[[Failure], None]


def describe(exc: BaseException | None) -> str:
    """A failure's cause in one line (type and message), bounded in length."""
    if exc is None:
        return "ended although it should run until the gateway stops"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]


class Supervisor:
    """Runs parts in their own tasks and restarts any that fails, with back-off."""

    def __init__(
        self,
        on_failure: FailureSink | None = None,
        *,
        backoff: Backoff = Backoff(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_failure = on_failure
        self._backoff = backoff
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, PartState] = {}

    def start(
        self,
        component: str,
        run: RunPart,
        *,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Run ``run()`` as ``component`` until :meth:`stop`, restarting it whenever it fails.

        ``on_failure`` is the part's own extra report (e.g. a reader marks itself offline).
        """
        if component in self._tasks:
            raise ValueError(f"component {component!r} is supervised already")
        self._states[component] = PartState()
        task = asyncio.get_running_loop().create_task(
            self._keep_running(component, run, on_failure), name=component
        )
        self._tasks[component] = task

    def status(self) -> dict[str, dict[str, object]]:
        """Every supervised part: its state, failures so far and the last error."""
        return {name: state.as_status() for name, state in self._states.items()}

    def failed(self) -> list[str]:
        """The parts waiting to be restarted after a failure."""
        return [name for name, state in self._states.items() if state.state == "restarting"]

    async def finish(self, component: str, grace: float) -> None:
        """Let a part that was asked to end (e.g. a server told to exit) end by itself
        within ``grace`` seconds (its normal return is no failure now), then cancel it."""
        task = self._tasks.get(component)
        if task is None:
            return
        self._states[component].state = "finishing"
        await asyncio.wait({task}, timeout=grace)
        await self.stop([component])

    async def stop(self, components: Iterable[str] | None = None) -> None:
        """Cancel some parts (or all) and wait for them; an error while stopping is logged."""
        wanted = list(self._tasks) if components is None else list(components)
        names = [n for n in wanted if n in self._tasks]
        tasks = [self._tasks.pop(n) for n in names]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for name, result in zip(names, results, strict=False):
            self._states[name].state = "stopped"
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s failed while stopping: %s", name, describe(result), exc_info=result)

    async def _keep_running(
        self,
        component: str,
        run: RunPart,
        on_failure: Callable[[BaseException | None], None] | None,
    ) -> None:
        state = self._states[component]
        delay: float | None = None
        while True:
            started = self._clock()
            error: BaseException | None = None
            try:
                if state.state != "finishing":
                    state.state = "running"
                await run()
                if state.state == "finishing":
                    return  # asked to end (finish): a normal return is the way it ends
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervised: logged, reported and restarted below
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # failed while being stopped: stop() logs it, no restart
                error = exc
            delay = self._backoff.next(delay, self._clock() - started)
            state.state, state.failures = "restarting", state.failures + 1
            state.last_error = describe(error)
            log.error(
                "%s failed (%s); restarting in %.3g s",
                component,
                state.last_error,
                delay,
                exc_info=error,
            )
            failure = Failure(component, state.last_error, state.failures, delay)
            if on_failure is not None:
                self._tell(component, partial(on_failure, error))
            if self._on_failure is not None:
                self._tell(component, partial(self._on_failure, failure))
            await asyncio.sleep(delay)

    @staticmethod
    def _tell(component: str, report: Callable[[], None]) -> None:
        """Run one report of a failure; a report's own bug must not stop the restart."""
        try:
            report()
        except Exception:
            log.exception("%s: reporting its failure failed", component)
