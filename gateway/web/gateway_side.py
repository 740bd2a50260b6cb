"""What the web UI asks of the running gateway, carried out on the gateway's own loop.

The UI runs in a process of its own (gateway.web.server); it never touches the gateway's
objects. Every question and command is one of the coroutines below, called by name over
the UI's channel (gateway.web.channel) and run on the gateway's loop: a snapshot is built
there as plain data, a command is carried out there, so nothing is read while it changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway import __version__
from gateway.decision import Decision, DoorContext, Presented, Request, decide
from gateway.entitlements import Member, SiteRules, Ticket
from gateway.messages import render
from gateway.readers import CredentialRead
from gateway.web import i18n
from gateway.web.config_side import ConfigSide
from gateway.web.next_card import NextCard
from gateway.web.words import describe_record

PULSE_MAX_SECONDS = 60
DOOR_TEST_MAX_SECONDS = 300


class InstallerRefused(Exception):
    """A tool cannot do what was asked (unknown door, no MQTT...): told to the installer."""


class WebGateway(Protocol):
    """The parts of ``gateway.daemon.Gateway`` the web UI reads and drives (on its loop)."""

    @property
    def config(self) -> Any: ...

    @property
    def gw(self) -> str: ...

    @property
    def site(self) -> str: ...

    @property
    def doors(self) -> Mapping[str, Any]: ...

    @property
    def boards(self) -> Mapping[str, Any]: ...

    @property
    def readers(self) -> Mapping[str, Any]: ...

    @property
    def entrances(self) -> Mapping[str, Any]: ...

    @property
    def activity(self) -> Any: ...

    @property
    def store(self) -> Any: ...

    @property
    def state(self) -> Any: ...

    @property
    def journal(self) -> Any: ...

    @property
    def sync(self) -> Any: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def next_card(self) -> NextCard: ...

    def now(self) -> datetime: ...

    def record_event(self, type_: str, door: str | None, detail: dict[str, Any]) -> None: ...

    async def open_once(self, door: str, seconds: int | None) -> None: ...

    async def set_mode(self, door: str, mode: str) -> None: ...


@dataclass(frozen=True)
class _MemberOnly:
    """The store as the decision sees it, where any credential is this member's.

    "What would happen now if M1001 presented a valid card at door X": the card's value
    is not known here (the store keeps only hashes), so the lookup is answered by id.
    """

    store: Any
    record: Member | Ticket

    @property
    def rules(self) -> SiteRules | None:
        rules: SiteRules | None = self.store.rules
        return rules

    def find(self, kind: str, value: str, fmt: str | None = None) -> Member | Ticket | None:
        return self.record

    def member(self, member_id: str) -> Member | None:
        found: Member | None = self.store.member(member_id)
        return found


class GatewaySide(ConfigSide):
    """The web UI's questions and commands, each one run on the gateway's loop."""

    def __init__(self, gateway: WebGateway, *, clock: Callable[[], float] = time.monotonic):
        self.gateway = gateway
        self.clock = clock
        self.language = str(gateway.config.gateway.language)

    def _t(self, key: str, **values: object) -> str:
        """The installer's words in the site's language (gateway.web.i18n)."""
        return i18n.t(self.language, key, **values)

    def _format_of(self, read: CredentialRead) -> str:
        if read.kind == "nfc":
            return self._t("tool.uid_format", bytes=len(read.value) // 2, bits=len(read.value) * 4)
        if read.kind == "code":
            return self._t("tool.code_format")
        if read.kind == "pass":
            return self._t("tool.pass_format")
        return read.kind

    # --- the dashboard ------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard shows, as plain data."""
        gw = self.gateway
        now = gw.now()
        pending: int | None
        try:
            pending = int(await asyncio.wait_for(gw.journal.pending_count(), 2))
        except (TimeoutError, Exception):  # the dashboard says "unknown", the gateway goes on
            pending = None
        rules = gw.store.rules
        updated = gw.store.updated_at
        return {
            "gateway": gw.gw,
            "site": gw.site,
            "software": __version__,
            "started_at": gw.started_at.isoformat(),
            "uptime_s": int((now - gw.started_at).total_seconds()),
            "now": now.isoformat(),
            "tz": str(rules.tz) if rules else "UTC",
            "language": self.language,
            "doors": [self._door(door_id) for door_id in gw.doors],
            "boards": [self._board(board_id) for board_id in gw.boards],
            "readers": [self._reader(cfg) for cfg in gw.config.readers],
            "link": self._link(),
            "entitlements": {
                "version": gw.store.version,
                "records": gw.store.record_count,
                "updated_at": updated.isoformat() if updated else None,
                "age_s": int((now - updated).total_seconds()) if updated else None,
                "sync": self._sync_progress(),
            },
            "journal": {"pending": pending},
            "clock": {
                "synced": bool(gw.state.clock_synced),
                "source": str(gw.config.gateway.clock),
            },
        }

    def _board(self, board_id: str) -> dict[str, Any]:
        board = self.gateway.boards[board_id]
        cfg = next((b for b in self.gateway.config.boards if b.id == board_id), None)
        health = board.health
        return {
            "id": board_id,
            "profile": cfg.profile if cfg else None,
            "online": bool(health.online),
            "reason": str(health.reason or ""),
        }

    def _reader(self, cfg: Any) -> dict[str, Any]:
        health = self.gateway.activity.readers.get(cfg.id)
        reason = (health.reason if health else self._t("problem.no_report")) or ""
        running = self.gateway.readers.get(cfg.id)
        alerts = list(running.health.alerts) if running is not None else []
        if alerts:  # what the reader says is wrong with it (tamper switch, power)
            said = self._t("problem.reader_reports", alerts=", ".join(alerts))
            reason = f"{reason}; {said}" if reason else said
        return {
            "id": cfg.id,
            "door": cfg.door,
            "profile": cfg.profile,
            "online": bool(health and health.online),
            "reason": reason,
            "alerts": alerts,
            "enroll": hasattr(self.gateway.readers.get(cfg.id), "enroll"),
        }

    def _door(self, door_id: str) -> dict[str, Any]:
        gw = self.gateway
        door = gw.doors[door_id]
        cfg = next(d for d in gw.config.doors if d.id == door_id)
        status = dict(door.status())
        boards = sorted(
            {p.board for p in (cfg.lock, cfg.contact, cfg.rex, cfg.passage, cfg.fire) if p}
        )
        readers = [self._reader(r) for r in gw.config.readers if r.door == door_id]
        problems = []
        for board_id in boards:
            board = self._board(board_id)
            if not board["online"]:
                problems.append(self._t("problem.board", board=board_id, reason=board["reason"]))
        for reader in readers:
            if not reader["online"]:
                problems.append(
                    self._t("problem.reader", reader=reader["id"], reason=reader["reason"])
                )
        lock_board = cfg.lock.board if cfg.lock else None
        if lock_board and not gw.boards[lock_board].health.online:
            status["lock"] = "unknown"  # what the gateway wants is not what the door does
        return {
            "id": door_id,
            "zone": cfg.zone,
            "direction": cfg.direction,
            "kind": cfg.kind,
            **status,
            "boards": boards,
            "lock_output": (
                {"board": cfg.lock.board, "index": cfg.lock.index} if cfg.lock else None
            ),
            "readers": readers,
            "problems": problems,
            "ok": not problems,
        }

    def _link(self) -> dict[str, Any]:
        gw = self.gateway
        mqtt = gw.config.mqtt
        out: dict[str, Any] = {
            "enabled": bool(mqtt.enabled),
            "broker": f"{mqtt.host}:{mqtt.port}",
            "connected": False,
            "last_error": None,
        }
        link = getattr(gw.sync, "link", None)
        if link is not None:
            out["connected"] = bool(link.connected)
            error = getattr(link, "last_error", None)
            out["last_error"] = str(error) if error else None
        return out

    def _sync_progress(self) -> dict[str, Any] | None:
        """A snapshot on its way (EntitlementSync.progress), or None."""
        entitlements = getattr(self.gateway.sync, "entitlements", None)
        return entitlements.progress() if entitlements is not None else None

    # --- commissioning tools --------------------------------------------------------------

    def _installer_action(self, action: str, door: str | None, **detail: Any) -> None:
        """Journal and publish what the installer did (never a secret or a credential)."""
        self.gateway.record_event("installer_action", door, {"action": action, **detail})

    async def installer_event(self, action: str, who: str) -> None:
        """Something the installer did in the UI itself (the password was set)."""
        self._installer_action(action, None, by=who)

    async def pulse(self, board_id: str, index: int, seconds: float, who: str) -> str:
        """Energise one output for ``seconds`` (the board switches it off itself)."""
        board = self.gateway.boards.get(board_id)
        if board is None:
            raise InstallerRefused(self._t("tool.no_board", board=board_id))
        self._installer_action("pulse", None, board=board_id, output=index, seconds=seconds, by=who)
        try:
            await asyncio.wait_for(board.pulse(index, seconds), 5)
        except TimeoutError:
            raise InstallerRefused(self._t("tool.board_silent", board=board_id)) from None
        except Exception as exc:  # RelayFault / BoardOffline carry the reason in words
            raise InstallerRefused(
                self._t("tool.board_fault", board=board_id, index=index, error=exc)
            ) from None
        shown = i18n.seconds(self.language, seconds)
        return self._t("tool.pulsed", index=index, board=board_id, seconds=shown)

    async def door_test(self, door_id: str, action: str, seconds: int, who: str) -> str:
        """Unlock for N s (a journalled release, like the central's ``open``), or a mode."""
        if door_id not in self.gateway.doors:
            raise InstallerRefused(self._t("tool.no_door", door=door_id))
        self._installer_action("door_test", door_id, test=action, seconds=seconds, by=who)
        if action == "unlock":
            task = asyncio.get_running_loop().create_task(
                self.gateway.open_once(door_id, seconds), name=f"door test {door_id}"
            )
            _keep(task)
            return self._t("tool.unlocked", door=door_id, seconds=seconds)
        await self.gateway.set_mode(door_id, action, by="installer")
        mode = i18n.say(self.language, "mode", action)
        return self._t("tool.mode", door=door_id, mode=mode)

    async def resync(self, who: str) -> str:
        """Ask the central system for a full snapshot (``sync`` with ``why: installer``)."""
        entitlements = getattr(self.gateway.sync, "entitlements", None)
        if entitlements is None:
            raise InstallerRefused(self._t("tool.no_mqtt"))
        self._installer_action("resync", None, by=who)
        await entitlements.request("installer", full=True)
        return self._t("tool.resync")

    async def next_card(self, reader_id: str, wait: float, who: str) -> dict[str, Any] | None:
        """The next credential the reader sees (full value: for the installer's eyes only)."""
        if reader_id not in self.gateway.readers:
            raise InstallerRefused(self._t("tool.no_reader", reader=reader_id))
        self._installer_action("next_card", None, reader=reader_id, by=who)
        read = await self.gateway.next_card.next_read(reader_id, wait)
        if read is None:
            return None
        record = self.gateway.store.find(read.kind, read.value, read.format)
        return {
            "reader": read.reader,
            "kind": read.kind,
            "value": read.value,
            "format": read.format or self._format_of(read),
            "at": read.at.isoformat(),
            "member": None if record is None else str(record.id),
        }

    async def enroll(self, reader_id: str, who: str) -> str:
        """OSDP install mode: the reader gets a new Secure Channel key."""
        reader = self.gateway.readers.get(reader_id)
        if reader is None:
            raise InstallerRefused(self._t("tool.no_reader", reader=reader_id))
        enroll = getattr(reader, "enroll", None)
        if enroll is None:
            raise InstallerRefused(self._t("tool.not_osdp", reader=reader_id))
        self._installer_action("osdp_install", None, reader=reader_id, by=who)
        if await enroll():
            return self._t("tool.new_key", reader=reader_id)
        raise InstallerRefused(self._t("tool.no_new_key", reader=reader_id))

    # --- what would be decided ------------------------------------------------------------

    def _door_context(self, door_id: str) -> DoorContext:
        entrance = self.gateway.entrances.get(door_id)
        if entrance is None:
            raise InstallerRefused(self._t("tool.no_door", door=door_id))
        place = entrance.place
        return DoorContext(
            door_id,
            place.zone,
            place.direction,
            site=self.gateway.site,
            locked_down=self.gateway.doors[door_id].mode == "lockdown",
        )

    def _explain(self, decision: Decision) -> dict[str, Any]:
        rules = self.gateway.store.rules
        message = render(
            decision.reason,
            decision.display,
            self.language,
            rules.messages if rules else None,
        )
        out = decision.summary(message)
        out["display"] = decision.display
        return out

    async def try_credential(self, kind: str, value: str, fmt: str | None, door_id: str) -> Any:
        """What the door would decide for this credential now (nothing journalled or opened)."""
        context = self._door_context(door_id)
        self.gateway.state.entitlements_at = self.gateway.store.updated_at
        presented = Presented(kind, value, fmt)  # type: ignore[arg-type]
        decision = decide(
            Request(presented, context, self.gateway.now()), self.gateway.store, self.gateway.state
        )
        return self._explain(decision)

    async def member(self, member_id: str) -> dict[str, Any] | None:
        """A member's record as the box has it (credentials only as kinds)."""
        record = self.gateway.store.member(member_id) or self.gateway.store.ticket(member_id)
        if record is None:
            return None
        return describe_record(record)

    async def what_if(self, member_id: str, door_id: str) -> dict[str, Any]:
        """What would happen now if this member presented a valid credential at the door."""
        record = self.gateway.store.member(member_id) or self.gateway.store.ticket(member_id)
        if record is None:
            raise InstallerRefused(self._t("tool.not_member", member=member_id))
        context = self._door_context(door_id)
        self.gateway.state.entitlements_at = self.gateway.store.updated_at
        view = _MemberOnly(self.gateway.store, record)
        request = Request(
            Presented("nfc", "(any of the member's cards)"), context, self.gateway.now()
        )
        return self._explain(decide(request, view, self.gateway.state))


_BACKGROUND: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    """Hold a fire-and-forget task until it is done (the loop keeps only weak references)."""
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
