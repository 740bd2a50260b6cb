"""Helpers for the reader tests: run a reader, take its reads, watch its health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.readers import CredentialRead, Reader, ReaderHealth


class HealthLog:
    """Every health change a reader reported, with a way to wait for one."""

    def __init__(self) -> None:
        self.changes: list[ReaderHealth] = []
        self._changed = asyncio.Event()

    def __call__(self, health: ReaderHealth) -> None:
        self.changes.append(health)
        self._changed.set()

    @property
    def last(self) -> ReaderHealth | None:
        """The latest report."""
        return self.changes[-1] if self.changes else None

    async def wait_for(
        self, check: Callable[[ReaderHealth], bool], within: float = 10.0
    ) -> ReaderHealth:
        """The first report (past or future) that passes ``check``."""
        async with asyncio.timeout(within):
            seen = 0
            while True:
                for health in self.changes[seen:]:
                    if check(health):
                        return health
                seen = len(self.changes)
                self._changed.clear()
                await self._changed.wait()

    async def wait_online(self, within: float = 10.0) -> ReaderHealth:
        """Wait until the latest report says online."""
        async with asyncio.timeout(within):
            while self.last is None or not self.last.online:
                self._changed.clear()
                await self._changed.wait()
        return self.last


class Reads:
    """A running reader's reads, pumped into a queue by a task (so waiting can time out
    without cancelling the reader itself)."""

    def __init__(self, stream: AsyncIterator[CredentialRead]) -> None:
        self.queue: asyncio.Queue[CredentialRead] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream: AsyncIterator[CredentialRead]) -> None:
        async for read in stream:
            self.queue.put_nowait(read)

    async def next(self, within: float = 10.0) -> CredentialRead:
        """The next read, failing the test after ``within`` seconds."""
        if self.task.done():
            self.task.result()  # raise what ended the reader
        return await asyncio.wait_for(self.queue.get(), within)

    async def next_where(
        self, check: Callable[[CredentialRead], bool], within: float = 10.0
    ) -> CredentialRead:
        """The next read that passes ``check`` (others are skipped)."""
        async with asyncio.timeout(within):
            while True:
                read = await self.next(within)
                if check(read):
                    return read

    def drain(self) -> list[CredentialRead]:
        """The reads queued so far, removed from the queue."""
        reads = []
        while not self.queue.empty():
            reads.append(self.queue.get_nowait())
        return reads

    async def none_within(self, seconds: float) -> bool:
        """True if no read comes within ``seconds``."""
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


@asynccontextmanager
async def running(
    reader: Reader, stream: AsyncIterator[CredentialRead] | None = None
) -> AsyncIterator[Reads]:
    """Run ``reader`` (or a stream built on its reads) for the block; close it after."""
    reads = Reads(stream if stream is not None else reader.reads())
    try:
        yield reads
    finally:
        await reader.close()
        reads.task.cancel()
        await asyncio.gather(reads.task, return_exceptions=True)
