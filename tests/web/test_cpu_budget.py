"""Issue 14 point 4: a flood of web requests gets the UI no more than its share of a core.

The budget is a token bucket of CPU seconds (gateway.web.cpu_budget): the UI's process
earns ``share`` a second, saves up to ``burst``, and a request that comes while it is in
debt waits. The tests drive it with a CPU counter the requests advance, so the bound is
exact and no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from gateway.web.cpu_budget import Budgeted, CpuBudget


class Clocks:
    """A CPU counter and a clock the test moves; sleeping moves the clock."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.now = 100.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget_on(c: Clocks, share: float = 0.25, burst: float = 0.5) -> CpuBudget:
    return CpuBudget(share, burst, cpu=lambda: c.cpu_s, clock=lambda: c.now, sleep=c.sleep)


async def test_within_the_burst_requests_do_not_wait() -> None:
    c = Clocks()
    budget = budget_on(c)
    for _ in range(4):
        await budget.take()
        c.cpu_s += 0.1  # 0.4 of the 0.5 saved up
    await budget.take()
    assert c.slept == []


async def test_a_debt_is_paid_by_waiting_at_the_share() -> None:
    c = Clocks()
    budget = budget_on(c)
    await budget.take()
    c.cpu_s += 1.0  # 0.5 more than saved up
    await budget.take()
    assert c.slept == [pytest.approx(2.0)]  # 0.5 CPU-s at 0.25 a second
    assert budget.left == pytest.approx(0.0)
    assert budget.waited_s == pytest.approx(2.0)


async def test_what_a_quiet_time_earns_is_capped_at_the_burst() -> None:
    c = Clocks()
    budget = budget_on(c)
    c.now += 3600  # an hour idle saves no more than the burst
    c.cpu_s += 0.8
    await budget.take()
    assert c.slept == [pytest.approx(1.2)]  # 0.3 over the burst, at 0.25 a second


def test_a_budget_needs_a_share_and_a_burst() -> None:
    with pytest.raises(ValueError):
        CpuBudget(0, 0.5)
    with pytest.raises(ValueError):
        CpuBudget(0.25, 0)


async def test_a_flood_through_the_app_uses_no_more_than_burst_plus_share() -> None:
    """Fifty clients at once on an app whose every request costs 5 ms of CPU: over the
    flood, the CPU the requests used stays within what the budget earned (plus one round
    of the requests that were let in together), however long the flood took here."""
    cpu = {"s": 0.0}
    share, burst, cost = 0.5, 0.05, 0.005
    budget = CpuBudget(share, burst, cpu=lambda: cpu["s"])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        cpu["s"] += cost  # the request's work, as the kernel would count it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=Budgeted(app, budget))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:

        async def poll() -> None:
            for _ in range(2):
                assert (await client.get("/")).status_code == 200

        started = time.monotonic()
        await asyncio.gather(*(poll() for _ in range(50)))
        elapsed = time.monotonic() - started
    assert cpu["s"] == pytest.approx(100 * cost)
    assert budget.waited_s > 0  # the flood was held back
    # a bound, not a timing target: a slower machine only gives the flood more time
    assert cpu["s"] <= burst + share * elapsed + 50 * cost


async def test_lifespan_messages_pass_without_waiting() -> None:
    c = Clocks()
    budget = budget_on(c)
    c.cpu_s += 10  # deep in debt
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await Budgeted(app, budget)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"] and c.slept == []
