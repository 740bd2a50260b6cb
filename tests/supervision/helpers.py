"""A gateway without a broker, a scripted reader, and reading back its journal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.readers import CredentialRead, Reader
from gateway.supervisor import Backoff
from tests.support.configs import standalone_header

FAST = Backoff(initial=0.05, maximum=0.2, healthy_after=30)


def offline_config(state: Path, *, doors: str = "") -> str:
    """Two doors on a fake board, no broker, no web UI."""
    return (
        standalone_header(state)
        + f"""
[[boards]]
id = "io"
profile = "fake-io"
[[doors]]
id = "in"
zone = "gym"
direction = "in"
lock = {{ board = "io", index = 0 }}
unlock_seconds = 0.1
[[doors]]
id = "out"
zone = "gym"
direction = "out"
lock = {{ board = "io", index = 1 }}
unlock_seconds = 0.1
{doors}
"""
    )


class ScriptedReader(Reader):
    """Reads (or exceptions to raise) put in its queue; counts its feedback."""

    def __init__(self, reader_id: str, gateway: Gateway | None = None) -> None:
        super().__init__(reader_id, gateway.reader_health if gateway else None)
        self.queue: asyncio.Queue[CredentialRead | BaseException] = asyncio.Queue()
        self.feedbacks: list[bool] = []
        self.loops = 0

    def nfc(self, uid: str) -> None:
        self.queue.put_nowait(CredentialRead(self.id, "nfc", uid, datetime.now(UTC)))

    async def reads(self) -> AsyncIterator[CredentialRead]:  # type: ignore[override]
        self.loops += 1
        self.report(True)
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def feedback(self, granted: bool) -> None:
        self.feedbacks.append(granted)


@contextlib.asynccontextmanager
async def running(text: str, **kwargs: Any) -> AsyncIterator[Gateway]:
    """A started gateway (fast back-off), stopped afterwards."""
    gateway = Gateway(parse_config(text, "test config"), backoff=FAST, **kwargs)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def events(gateway: Gateway, type_: str) -> list[dict[str, Any]]:
    """The journalled events of one type, in seq order."""
    records = await gateway.journal.unacked(0, 10_000)
    return [r["message"] for r in records if r["kind"] == "event" and r["message"]["type"] == type_]


async def until(condition: Any, within: float = 10.0) -> None:
    """Wait for ``condition()`` (sync or async) to be true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def load_members(gateway: Gateway, *numbers: int) -> None:
    """Load a set with members M{n} (card 04{n:06X}) straight into the store."""
    from gateway.entitlements import parse_records, parse_rules
    from tests.integration.gateways import RULES, member

    rules = parse_rules({**RULES, "site": gateway.site})
    records = parse_records([member(n) for n in numbers], rules)
    gateway.store.replace(1, rules, records, {}, datetime.now(UTC))
