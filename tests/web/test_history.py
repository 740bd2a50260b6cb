"""Issue 10 point 3: a bounded local history (>= 100,000 rows) kept across restarts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.web.eventlog import EventLog, Filter


def _decision(n: int, at: datetime, door: str = "main-in", reason: str = "ok") -> dict[str, object]:
    decision = "granted" if reason == "ok" else "denied"
    return {"kind": "decision", "at": at.isoformat(), "door": door, "member": f"M{n % 500}",
            "display": f"Member {n % 500}", "decision": decision, "reason": reason,
            "credential": "nfc", "value": "04AABBCCDD", "uid": "04AABBCCDD"}  # fmt: skip


def test_the_history_keeps_its_bound_across_a_restart_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "web-events.sqlite"
    log = EventLog(path, max_rows=100_000)
    now = datetime.now(UTC)
    conn = sqlite3.connect(path, isolation_level=None)
    log.store(conn, [_decision(n, now) for n in range(100_500)])
    conn.close()
    log.prune_now()
    log.stop()
    again = EventLog(path, max_rows=100_000)  # a restart
    assert again.count() == 100_000
    newest = again.page(Filter(), limit=1)[0]
    assert newest["id"] == 100_500  # the oldest 500 went, the newest stayed
    again.stop()


def test_old_rows_are_pruned_by_age(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "h.sqlite", max_age=timedelta(days=30))
    conn = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    now = datetime.now(UTC)
    log.store(conn, [_decision(1, now - timedelta(days=40)), _decision(2, now)])
    conn.close()
    log.prune_now()
    assert [r["member"] for r in log.page(Filter())] == ["M2"]
    log.stop()


def test_filters_page_back_and_no_credential_value_is_kept(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "h.sqlite")
    conn = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    now = datetime.now(UTC)
    items = [_decision(n, now, door="side" if n % 2 else "main-in",
                       reason="expired" if n % 3 == 0 else "ok") for n in range(300)]  # fmt: skip
    log.store(conn, items)
    conn.close()
    first = log.page(Filter(door="side", what="expired"), limit=20)
    assert len(first) == 20 and all(r["door"] == "side" and r["what"] == "expired" for r in first)
    older = log.page(Filter(door="side", what="expired"), before=first[-1]["id"], limit=100)
    assert older and max(r["id"] for r in older) < first[-1]["id"]
    assert len(first) + len(older) == 50  # odd multiples of 3 below 300
    by_name = {r["member"] for r in log.page(Filter(member="member 7"), limit=500)}
    assert by_name == {"M7", *(f"M7{i}" for i in range(10))}  # the start of a name
    assert {r["member"] for r in log.page(Filter(member="M7"), limit=500)} == {"M7"}  # an id
    assert log.members_named("member 12")[0][0].startswith("M12")
    dump = "\n".join(sqlite3.connect(tmp_path / "h.sqlite").iterdump())
    assert "04AABBCCDD" not in dump
    log.stop()


def test_the_writer_thread_stores_what_the_gateway_offers(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "h.sqlite")
    seen: list[int] = []
    log.on_rows(lambda rows: seen.extend(r["id"] for r in rows))
    log.start()
    for n in range(1000):
        log.offer(_decision(n, datetime.now(UTC)))
    log.stop()
    assert len(seen) == 1000
    assert EventLog(tmp_path / "h.sqlite").count() == 1000
