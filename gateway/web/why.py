"""``accessgw why``: why was this member refused, from the running gateway's own files.

Reads, never writes: the entitlement store (one record by id, and the site rules), the
passage history (to rebuild the local state the decision looks at) and the web UI's
history of decisions. It opens them read-only, so it is safe beside the running daemon
and answers in well under a second at 1,000,000 members (one indexed lookup).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.decision import DoorContext, Presented, Request, decide
from gateway.entitlements import Member, SiteRules, Ticket, parse_rules
from gateway.errors import AccessGwError
from gateway.history import History
from gateway.messages import render
from gateway.web.eventlog import EventLog, Filter
from gateway.web.words import describe_record, shown


def _read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AccessGwError(f"{path} does not exist: has the gateway run with this config?")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA query_only=1")
    return conn


@dataclass
class StoredSet:
    """The entitlement set as the store file holds it, looked up by id only."""

    conn: sqlite3.Connection
    gen: int
    version: int
    rules: SiteRules
    updated_at: datetime
    checkins_upto: dict[str, int]

    @classmethod
    def open(cls, path: Path) -> StoredSet:
        """Open the store file read-only."""
        conn = _read_only(path)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "gen" not in meta:
            raise AccessGwError(f"{path} holds no entitlement set yet")
        return cls(
            conn,
            int(meta["gen"]),
            int(meta["version"]),
            parse_rules(json.loads(meta["rules"])),
            datetime.fromisoformat(meta["updated_at"]),
            dict(json.loads(meta.get("checkins_upto", "{}"))),
        )

    def record(self, rid: str) -> Member | Ticket | None:
        """The newest stored record with this id."""
        row = self.conn.execute(
            "SELECT kind, body FROM records WHERE gen = ? AND rid = ? ORDER BY rowid DESC LIMIT 1",
            (self.gen, rid),
        ).fetchone()
        if row is None:
            return None
        kind, body = row
        if kind == "member":
            return Member.model_validate_json(body, strict=False)
        return Ticket.model_validate_json(body, strict=False)


@dataclass(frozen=True)
class _OneRecord:
    """The decision's view of the set, where any credential is this member's."""

    found: Member | Ticket
    stored: StoredSet

    @property
    def rules(self) -> SiteRules | None:
        return self.stored.rules

    def find(self, kind: str, value: str, fmt: str | None = None) -> Member | Ticket | None:
        return self.found

    def member(self, member_id: str) -> Member | None:
        record = self.stored.record(member_id)
        return record if isinstance(record, Member) else None


def why(
    config: Config, member: str, door: str | None, *, now: datetime | None = None
) -> dict[str, Any]:
    """The member's record, last decisions and (with ``door``) what would happen now."""
    state_dir = config.gateway.state_dir
    now = now or datetime.now(UTC)
    stored = StoredSet.open(state_dir / "store.sqlite")
    try:
        record = stored.record(member)
        answer: dict[str, Any] = {
            "member": member,
            "entitlements_version": stored.version,
            "record": describe_record(record)["record"] if record else None,
        }
        language = config.gateway.language
        tz = str(stored.rules.tz)
        history_path = state_dir / "web-events.sqlite"
        decisions: list[dict[str, Any]] = []
        if history_path.exists():
            log = EventLog.reading(history_path)
            try:
                rows = log.page(Filter(member=member, kind="decision"), limit=10)
            finally:
                log.close()
            for row in rows:
                r = shown(row, tz, language)
                decisions.append(
                    {k: r[k] for k in ("local", "door", "decision", "what", "text", "trace")}
                )
        answer["last_decisions"] = decisions
        if door is not None:
            answer["now"] = _what_now(config, stored, record, member, door, now)
        return answer
    finally:
        stored.conn.close()


def _what_now(
    config: Config,
    stored: StoredSet,
    record: Member | Ticket | None,
    member: str,
    door_id: str,
    now: datetime,
) -> dict[str, Any]:
    door = next((d for d in config.doors if d.id == door_id), None)
    if door is None:
        known = ", ".join(d.id for d in config.doors) or "none"
        raise AccessGwError(f"there is no door {door_id!r} (doors: {known})")
    if record is None:
        return {"decision": "denied", "reason": "unknown_credential",
                "message": f"{member} is not in the entitlement set", "trace": []}  # fmt: skip
    history = History(_read_only(config.gateway.state_dir / "history.sqlite"))
    try:
        state = history.rebuild(config.gateway.id, now, stored.rules.tz, stored.checkins_upto)
    finally:
        history.close()
    state.entitlements_at = stored.updated_at
    state.clock_synced = True  # the question is about the member, not about this box's clock
    context = DoorContext(door.id, door.zone, door.direction, site=config.gateway.site)
    request = Request(Presented("nfc", "(any of the member's cards)"), context, now)
    decision = decide(request, _OneRecord(record, stored), state)
    language = door.language or config.gateway.language
    message = render(decision.reason, decision.display, language, stored.rules.messages)
    return decision.summary(message)
