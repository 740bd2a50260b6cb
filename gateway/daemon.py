"""The running gateway: every part wired together, started and stopped in order.

Start: state directory -> store, journal, pass cache, history -> local state ->
boards and doors (outputs to their safe state) -> readers -> MQTT link, sync, outbox ->
web UI -> READY=1. Stop: readers first (no new decisions), doors to their safe state,
the link last so the ``stopping`` event still has a chance to leave.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway import __version__, gil, logs, metrics, niceness
from gateway.activity import Activity
from gateway.clock import ClockTrust, system_now, wall_clock
from gateway.config import Config
from gateway.config_apply import ConfigKeeper
from gateway.config_changes import changed_since_last_start
from gateway.doors import Door, Mode
from gateway.entry import DoorPlace, Entrance
from gateway.errors import AccessGwError, JournalError
from gateway.event_throttle import EventThrottle, key_of
from gateway.history import History
from gateway.identity import load_identity
from gateway.journal import Filling, Journal, JournalTrouble
from gateway.loop_lag import LoopLagProbe
from gateway.outputs import Board
from gateway.pass_cache import PassCache
from gateway.profiles import build_board, build_indicator, build_reader
from gateway.readers import CredentialRead, Reader, ReaderHealth, RepeatGuard, debounced
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from gateway.supervisor import Backoff, Failure, Supervisor, describe
from gateway.sync.commands import CommandFailed
from gateway.systemd import keep_watchdog_fed, notify, watchdog_interval
from gateway.web.next_card import NextCard

if TYPE_CHECKING:
    from gateway.backup import RestoreOutcome
    from gateway.sync.runner import SyncRunner
    from gateway.web.server import WebServer

log = logging.getLogger("accessgw")


utc_now = system_now  # the current instant (UTC): the system's clock


class Gateway:
    """One gateway process: store, journal, doors, readers, sync and web UI."""

    def __init__(
        self,
        config: Config,
        *,
        now: Callable[[], datetime] = utc_now,
        backoff: Backoff = Backoff(),
        housekeeping_every: float = 60.0,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # the file the web UI's changes are applied to
        self._keeper: ConfigKeeper | None = None
        self.gw = config.gateway.id
        self.site = config.gateway.site
        self.now = now
        self.activity = Activity()
        self.clock = ClockTrust(config.gateway.clock, wall=lambda: self.now().timestamp())
        self.started_at = now()
        self.loop_lag = LoopLagProbe()  # how late the event loop runs: shown in the status
        self.doors: dict[str, Door] = {}
        self.boards: dict[str, Board] = {}
        self.entrances: dict[str, Entrance] = {}
        self.readers: dict[str, Reader] = {}
        self._reader_doors: dict[str, str] = {}
        self.sync: SyncRunner | None = None
        self.supervisor = Supervisor(self._component_failed, backoff=backoff)
        self.housekeeping_every = housekeeping_every
        self._event_tasks: set[asyncio.Task[Any]] = set()
        # a flood of refused messages must not cost a journal fsync each (event_throttle.py)
        self._bad_messages = EventThrottle()
        self._remote_opens: set[asyncio.Task[Any]] = set()
        self._published: list[Callable[[], None]] = []
        self._journal_pending = 0
        self._web: WebServer | None = None  # the web UI while it serves
        self._web_first: WebServer | AccessGwError | None = None
        self._metrics: metrics.MetricsServer | None = None
        self.next_card = NextCard()
        self._trace: tuple[str | None, tuple[str, ...], float | None] | None = None
        self.restored: RestoreOutcome | None = None  # a staged restore applied at this start
        self.restart_wanted = asyncio.Event()  # run_gateway stops, and the gateway starts again

    # --- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, put outputs in their safe state, start readers and sync."""
        cfg = self.config
        # The doors' loop shares the interpreter lock with the store's, journal's and
        # history's threads: how long it may wait for it is set in one place (gateway.gil).
        gil.use_doors_interval()
        # Woken by a card, the doors' loop is let in ahead of a background process that is
        # running, instead of waiting out its slice (gateway.niceness). Its threads and the
        # processes it starts inherit this; the background ones give it back.
        niceness.ask_for_short_slices("doors' process")
        self.state_dir = StateDir(cfg.gateway.state_dir).ensure()
        self.identity = load_identity(self.gw, self.site, self.state_dir.path)
        self.store = EntitlementStore.open(self.state_dir.store, self.state_dir.hmac_key())
        self.journal = await Journal.open(
            self.state_dir.journal,
            self.gw,
            max_pending=cfg.journal.max_pending,
            signer=self.identity.record_signer(),
        )
        self.journal.on_trouble = self._journal_trouble
        self.journal.on_recovered = self._journal_recovered
        self.journal.on_filling = self._journal_filling
        self.passes = PassCache.open(self.state_dir.passes)
        self.history = History.open(self.state_dir.path / "history.sqlite")
        rules = self.store.rules
        self.state = self.history.rebuild(
            self.gw, self.now(), rules.tz if rules else None, self.store.checkins_upto
        )
        self.state.seen_passes = set(self.passes.entries())
        await self.clock.refresh()
        self.state.clock_synced = self.clock.check()  # the start's verdict: no event for it
        self.clock.on_change = self._clock_changed
        self.supervisor.start("clock", self.clock.watch)
        await self._start_doors()
        self._start_readers()
        await self._start_sync()
        self.record_event("started", None, {"software": __version__})
        if self.restored is not None:  # what became of a staged restore (no secret in it)
            self.record_event("installer_action", None, self.restored.event())
        changed = await asyncio.to_thread(
            changed_since_last_start,
            self.config.model_dump(mode="json"),
            self.state_dir.path,
            self.state_dir.hmac_key(),
        )
        if changed:  # key names only, never a value
            self.record_event("config_changed", None, {"changed": changed, "by": "start"})
        if cfg.web.enabled:
            self._start_web()
        if cfg.metrics.enabled:
            self._start_metrics()
        if cfg.mqtt.enabled:
            self._start_home_assistant()
        if watchdog_interval() is not None:  # only under systemd with WatchdogSec
            self.supervisor.start("watchdog", keep_watchdog_fed)
        self.supervisor.start("housekeeping", self._housekeeping)
        self.supervisor.start("loop_lag", self.loop_lag.run)
        # What start-up made lives as long as the gateway: out of the cyclic collector's way.
        # Each full collection walked it all again on the doors' loop (17-47 ms of CPU each).
        gc.collect()
        gc.freeze()
        notify("READY=1")
        version = self.store.version
        log.info(
            "gateway %s of site %s started: %d doors, %d readers, %s",
            self.gw,
            self.site,
            len(self.doors),
            len(self.readers),
            "no entitlements yet (waiting for the first sync)"
            if version is None
            else f"entitlements version {version}",
        )

    async def stop(self) -> None:
        """Stop readers, put doors into their safe state, flush events, close everything.

        Nothing that fails here is hidden: each failure is logged with its cause, and the
        rest of the shutdown goes on (the doors' safe state above all).
        """
        notify("STOPPING=1")
        gc.unfreeze()  # what this gateway held may be collected once it is gone (a restart)
        await self._stop_readers()
        self.record_event("stopping", None, {})
        for result in await asyncio.gather(*self._event_tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("an event write failed while stopping: %s", describe(result))
        await self._stop_doors()
        await self.supervisor.stop(["web"])  # the web part stops its server itself
        if self._metrics is not None:
            self._metrics.stop()
        await self.supervisor.stop()
        await self._close_boards()
        await _logged("closing the journal", self.journal.close())
        for what, close in (
            ("history", self.history.close),
            ("pass cache", self.passes.close),
            ("store", self.store.close),
        ):
            try:
                close()
            except Exception as exc:
                log.error("closing the %s failed: %s", what, describe(exc), exc_info=exc)

    def _journal_trouble(self, trouble: JournalTrouble) -> None:
        """The journal cannot write (disk full...): shown at once; journalled once it can."""
        self.activity.add("event", type=trouble.kind, door=None, detail=trouble.as_status())
        if self.sync is not None:
            self.sync.status.notify()  # the status says so now, not at the next minute

    def _journal_recovered(self, trouble: JournalTrouble) -> None:
        """The journal writes again: the event of what happened, now that there is room."""
        detail = trouble.as_status()
        del detail["state"]
        detail["until"] = self.now().isoformat(timespec="seconds")
        kinds = {"disk_full": "disk_full", "full": "journal_full"}
        self.record_event(kinds.get(trouble.kind, "journal_unwritable"), None, detail)
        if self.sync is not None:
            self.sync.status.notify()

    def _journal_filling(self, filling: Filling) -> None:
        """The journal passed 80 % of its bound (or drained under 60 % again): once each."""
        kind = "journal_filling" if filling.raised else "journal_drained"
        self.record_event(kind, None, filling.as_detail())
        if self.sync is not None:
            self.sync.status.notify()

    def _component_failed(self, failure: Failure) -> None:
        """A supervised part failed: an event (with its door, if it has one) and the status."""
        kind, _, name = failure.component.partition(" ")
        door: str | None = None
        if kind == "door":
            door = name
        elif kind == "reader":
            door = self._reader_doors.get(name)
        self.record_event(
            "component_failed",
            door,
            {
                "component": failure.component,
                "error": failure.error,
                "failures": failure.failures,
                "restart_in_s": failure.restart_in,
            },
        )

    # --- the parts ----------------------------------------------------------------------

    def _start_home_assistant(self) -> None:
        """Home Assistant discovery on its own connection (or removal, once switched off)."""
        from gateway.homeassistant import GatewayParts, HomeAssistantBridge

        marker = self.state_dir.path / "homeassistant.announced"
        if not (self.config.homeassistant.enabled or marker.exists()):
            return  # never announced: nothing to keep current, nothing to remove
        parts = GatewayParts(
            doors=self.doors,
            readers_online=lambda: {r: h.online for r, h in self.activity.readers.items()},
            inside=self.state.inside,
            listen=self.activity.listen,
            commands=self,
            marker=marker,
        )
        self.home_assistant = HomeAssistantBridge(self.config, parts)
        self.supervisor.start("home assistant", self.home_assistant.run)

    def _start_metrics(self) -> None:
        """Prometheus metrics on their own address and thread, sampled on the loop."""
        cfg = self.config.metrics
        self._metrics = metrics.MetricsServer(cfg.listen, cfg.port, cfg.token_file).start()
        sampler = metrics.Sampler(
            self.journal,
            self.store,
            self.loop_lag,
            link_up=self.online,
            connections=lambda: self.sync.link.connections if self.sync else 0,
            snapshot_coming=lambda: bool(
                self.sync and self.sync.entitlements.snapshot_in_progress()
            ),
        )
        self.supervisor.start("metrics sampler", sampler.run)

    async def _start_doors(self) -> None:
        built: dict[str, Board] = {}
        for board_cfg in self.config.boards:
            board = built[board_cfg.id] = build_board(board_cfg)
            board.subscribe(self._board_events)
            board.supervise_with(self.supervisor)  # its polling: reported and restarted
        # doors are made before any board starts: each declares its lock's safe physical
        # level, so the first level a board gives an output is that (an active-low lock
        # never sits energised for the moment between a board's start and its door's)
        doors = {
            door_cfg.id: Door(door_cfg, built, on_event=self._door_events(door_cfg.id))
            for door_cfg in self.config.doors
        }
        for board_id, board in built.items():
            await board.start()
            self.boards[board_id] = board
        for door_cfg in self.config.doors:
            door = doors[door_cfg.id]
            await door.start(spawn=False)
            self.doors[door_cfg.id] = door
            self.supervisor.start(_part("door", door_cfg.id), door.run)
            place = DoorPlace(
                door_cfg.id,
                door_cfg.zone,
                door_cfg.direction,
                door_cfg.language or self.config.gateway.language,
                senses_passage=door_cfg.passage is not None or door_cfg.contact is not None,
            )
            self.entrances[door_cfg.id] = Entrance(
                place,
                door,
                site=self.site,
                store=self.store,
                state=self.state,
                journal=self.journal,
                passes=self.passes,
                online=self.online,
                published=self._own_checkin,
                explained=self._explained,
                now=self.now,
            )

    def restart_soon(self, after: float = 1.0) -> None:
        """Stop cleanly (doors to their safe state) and start again, ``after`` seconds from
        now so the caller's answer still goes out: a staged restore is applied at the start."""
        asyncio.get_running_loop().call_later(after, self.restart_wanted.set)

    # --- a changed config, applied while running (gateway.config_apply) -----------------

    def config_keeper(self) -> ConfigKeeper:
        """The config file's keeper (versions, apply, rollback); AccessGwError without one."""
        if self.config_path is None:
            raise AccessGwError("this gateway was started without a config file to change")
        if self._keeper is None:
            self._keeper = ConfigKeeper(self.config_path, self.state_dir.path, self.switch_config)
        return self._keeper

    async def switch_config(self, config: Config, changed: list[str], who: str) -> None:
        """Run ``config`` from now on: the changed parts are restarted, the rest runs on.

        Boards, doors and readers are stopped (doors to their safe state) and started from
        the new config; if one of them cannot start, the new ones are stopped and the old
        ones started again, and the error is raised: the gateway runs the old config or the
        new one, never a mix. A changed broker or central key restarts the sync. Other
        sections (gateway, web, log, metrics) take effect at the next start.
        """
        old = self.config
        devices = any(k.startswith(("boards", "doors", "readers")) for k in changed)
        link = any(k.startswith(("mqtt", "central")) for k in changed)
        if devices:
            await self._stop_devices()
            self.config = config
            try:
                await self._start_doors()
                self._start_readers()
            except Exception as exc:
                log.error("the new devices could not start (%s): back to the old ones", exc)
                await self._stop_devices()
                self.config = old
                await self._start_doors()
                self._start_readers()
                raise
        self.config = config
        if link:
            await self.supervisor.stop(["sync"])
            self.sync = None
            await self._start_sync()
        self.record_event("config_changed", None, {"changed": changed, "by": who})

    async def _stop_devices(self) -> None:
        """Readers, doors (to their safe state) and boards stopped and forgotten."""
        await self._stop_readers()
        await self._stop_doors()
        await self._close_boards()
        for parts in (self.readers, self.doors, self.boards, self.entrances, self._reader_doors):
            parts.clear()

    async def _stop_readers(self) -> None:
        await self.supervisor.stop(_part("reader", r) for r in self.readers)
        for reader in self.readers.values():
            await _logged(f"closing reader {reader.id}", reader.close())

    async def _stop_doors(self) -> None:
        await self.supervisor.stop(_part("door", d) for d in self.doors)
        for door in self.doors.values():
            await _logged(f"stopping door {door.id}", door.stop())
        for door_id, entrance in self.entrances.items():
            await _logged(f"closing entrance {door_id}", entrance.close())

    async def _close_boards(self) -> None:
        for board_id, board in self.boards.items():
            await _logged(f"closing board {board_id}", board.close())

    def _board_events(self, kind: str, detail: dict[str, Any]) -> None:
        """A board's health changes are logged (its relay faults reach us through doors)."""
        if kind in ("board_online", "board_offline"):
            logs.log_state_change(kind, None, detail)
            metrics.event(kind, detail)

    def _door_events(self, door_id: str) -> Callable[[str, dict[str, Any]], None]:
        """The event sink of one door: its events are journalled with its id."""

        def on_event(type_: str, detail: dict[str, Any]) -> None:
            self.record_event(type_, door_id, detail)

        return on_event

    def _start_readers(self) -> None:
        for reader_cfg in self.config.readers:
            self._reader_doors[reader_cfg.id] = reader_cfg.door  # its health may come at once
            reader = build_reader(reader_cfg, self.state_dir, self.reader_health)
            if reader_cfg.feedback is not None:  # LED/beeper lines on a board's outputs
                reader.indicator = build_indicator(reader_cfg.feedback, self.boards)
            self.attach_reader(reader, reader_cfg.door, reader_cfg.repeat_guard)

    def attach_reader(self, reader: Reader, door: str, repeat_guard: float) -> None:
        """Feed ``reader``'s reads to ``door``, supervised (restarted if its loop fails)."""
        self.readers[reader.id] = reader
        self._reader_doors[reader.id] = door
        # what the reader reports besides reads (tamper, power, keypad) is journalled
        reader.events = lambda kind, detail: self.record_event(kind, door, detail)
        guard = RepeatGuard(repeat_guard)  # kept across restarts of the loop
        self.supervisor.start(
            _part("reader", reader.id),
            partial(self._read_loop, reader, self.entrances[door], guard),
            on_failure=partial(_reader_failed, reader),
        )

    async def _read_loop(self, reader: Reader, entrance: Entrance, guard: RepeatGuard) -> None:
        """Feed one reader's reads to its door; a failing read never stops the loop."""
        async for read in debounced(reader.reads(), guard):
            read = self._on_our_clock(read)
            self.next_card.offer(read)  # the installer's "show me the next card" (memory only)
            told: list[bool] = []

            def decided(granted: bool, told: list[bool] = told) -> None:
                told.append(granted)  # the LED and beep now, not after the passage
                self._feedback(reader, granted)

            try:
                await entrance.present(read, decided)
            except JournalError as exc:  # refused, not a bug: disk full, journal at its bound
                log.error("reader %s: a %s read refused: %s", reader.id, read.kind, exc)
                if not told:
                    self._feedback(reader, False)
            except Exception:  # one bad read must not stop the reader
                log.exception("reader %s: deciding a %s read failed", reader.id, read.kind)
                if not told:
                    self._feedback(reader, False)

    def _on_our_clock(self, read: CredentialRead) -> CredentialRead:
        """The read timed on the gateway's clock. Readers stamp reads with the system's
        clock, which is the gateway's, except under a clock of its own (the test-only fast
        clock, gateway.clock.wall_clock): there the read moves with it."""
        if self.now is system_now:
            return read
        return replace(read, at=read.at + (self.now() - system_now()))

    def _feedback(self, reader: Reader, granted: bool) -> None:
        """Show a decision on the reader in the background: the door never waits on it."""

        async def show() -> None:
            try:
                await reader.feedback(granted)
            except Exception as exc:  # the LED is a nicety: the door goes on without it
                log.warning("reader %s: feedback failed: %s", reader.id, describe(exc))

        task = asyncio.get_running_loop().create_task(show(), name=f"feedback {reader.id}")
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    def reader_health(self, health: ReaderHealth) -> None:
        self.activity.health(health)
        kind = "reader_online" if health.online else "reader_offline"
        door = self._reader_doors.get(health.reader)
        self.record_event(kind, door, {"reader": health.reader, "reason": health.reason})

    async def _start_sync(self) -> None:
        """The MQTT link and everything that rides on it (filled in by gateway.sync.run)."""
        if not self.config.mqtt.enabled:
            return
        from gateway.sync.runner import SyncRunner

        async def run_sync() -> None:
            runner = SyncRunner(self)  # a fresh one each start: a failed one is not reused
            self.sync = runner
            try:
                await runner.run()
            finally:
                self._published = [c for c in self._published if c != runner.notify_outbox]

        self.supervisor.start("sync", run_sync)

    def link_up(self) -> bool:
        """Whether the broker link is up (for tests and the web UI)."""
        return self.online()

    def online(self) -> bool:
        """Whether the broker link is up (check-ins record ``offline`` otherwise)."""
        return bool(self.sync and self.sync.connected)

    def _explained(
        self, display: str | None, trace: tuple[str, ...], decided_in: float | None
    ) -> None:
        """The decision behind the check-in about to be published (for the installer only):
        the member's name, the trace and how long the decision took."""
        self._trace = (display, trace, decided_in)

    def _own_checkin(self, checkin: dict[str, Any]) -> None:
        """A check-in of ours became final: keep its passage, show it, wake the outbox."""
        self.history.add(checkin)  # on the history's writer thread, in order
        shown = dict(checkin)
        if self._trace is not None:  # never on the wire: the name and trace stay on the box
            display, trace, decided_in = self._trace
            shown["display"], shown["trace"] = display, list(trace)
            if decided_in is not None:
                shown["latency_ms"] = round(decided_in * 1000, 2)
            self._trace = None
        self.activity.add("decision", **shown)
        self._final_checkin()

    def _final_checkin(self) -> None:
        for callback in self._published:
            callback()

    def on_published(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a check-in or event became final (the outbox wakes up)."""
        self._published.append(callback)

    def record_event(self, type_: str, door: str | None, detail: dict[str, Any]) -> None:
        """Journal an event (durably, in the background) and show it to the installer
        (``bad_message``: :meth:`record_refused`)."""
        if type_ == "bad_message":
            self.record_refused(detail, 1)
            return
        metrics.event(type_, detail)
        self._record(type_, door, detail)

    def record_refused(self, detail: dict[str, Any], count: int) -> None:
        """``count`` refused messages of one (topic, reason) (``bad_message``), throttled:
        the metrics count every one, the journal, log and feed a burst and then a few,
        with ``suppressed`` saying how many were held back."""
        metrics.event("bad_message", detail, count)
        key = key_of(detail)
        held_back = self._bad_messages.admit(key, count)
        if held_back is None:
            return
        self._record(
            "bad_message", None, {**detail, "suppressed": held_back} if held_back else detail
        )

    def _record(self, type_: str, door: str | None, detail: dict[str, Any]) -> None:
        self.activity.add("event", type=type_, door=door, detail=detail)
        logs.log_state_change(type_, door, detail)

        async def write() -> None:
            try:
                await self.journal.record_event(type_, door=door, detail=detail, at=self.now())
                self._final_checkin()
            except Exception:  # an event must never take the gateway down
                log.exception("could not journal event %s", type_)

        task = asyncio.get_running_loop().create_task(write())
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    # --- what the central system asks for (gateway.sync.commands.DoorControl) ----------

    def _doors_named(self, door: str) -> list[str]:
        return list(self.doors) if door == "*" else [door]

    async def open_once(self, door: str, seconds: int | None) -> None:
        """Command ``open``: one timed release, journalled as a ``remote_open`` check-in."""
        for door_id in self._doors_named(door):
            released: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            # kept apart from the event tasks: stopping must not wait for a passage
            task = asyncio.create_task(self._remote_open(door_id, seconds, released))
            self._remote_opens.add(task)
            task.add_done_callback(self._remote_opens.discard)
            # answered once the lock moved, not after the passage (Clarifications, Commands)
            if not await released:
                raise CommandFailed(f"door {door_id}: the lock could not be released")

    async def _remote_open(
        self, door_id: str, seconds: int | None, released: asyncio.Future[bool]
    ) -> None:
        """One remote release through to its final check-in (after the passage or timeout)."""
        try:
            await self.entrances[door_id].open_once(seconds, released)
        except Exception:  # the record is still finalised (not passed); the result says failed
            log.exception("door %s: remote open failed", door_id)
        finally:
            if not released.done():
                released.set_result(False)

    async def set_mode(self, door: str, mode: str, *, by: str = "central") -> None:
        """Commands ``unlock``, ``lockdown`` and ``normal``; ``by`` says who asked (the
        central system, or the installer's door test)."""
        for door_id in self._doors_named(door):
            self.doors[door_id].set_mode(cast(Mode, mode))  # Door.set_mode checks it
            if mode == "lockdown":
                self.record_event("lockdown", door_id, {"by": by})

    async def resync(self) -> None:
        """Command ``resync``: ask for a full snapshot."""
        if self.sync is not None:
            await self.sync.entitlements.resync()

    def _clock_changed(self, synced: bool, reason: str) -> None:
        """Clock trust given or withdrawn: passes follow at once, and people are told."""
        self.state.clock_synced = synced
        if not synced:
            self.record_event("clock_unsynced", None, {"reason": reason})
        if self.sync is not None:
            self.sync.status.notify()

    async def refresh_status(self) -> None:
        """Read what the status needs that is only available asynchronously."""
        self._journal_pending = await self.journal.pending_count()
        self.clock.check()  # a change goes to _clock_changed

    def status(self) -> dict[str, Any]:
        """The status payload (PROTOCOL.md Status), also shown in the web UI."""
        readers = self.activity.readers
        doors = {}
        for door_id, door in self.doors.items():
            entry = dict(door.status())
            ids = [r for r, d in self._reader_doors.items() if d == door_id]
            entry["reader"] = (
                "ok" if all(readers.get(i) and readers[i].online for i in ids) else "offline"
            )
            doors[door_id] = entry
        return {
            "state": "online",
            "gateway": self.gw,
            "site": self.site,
            "software": __version__,
            "started_at": self.started_at.isoformat(),
            "entitlements_version": self.store.version,
            "records": self.store.record_count,
            "journal_pending": self._journal_pending,
            "clock": "synced" if self.state.clock_synced else "unsynced",
            "online": self.online(),
            "doors": doors,
            "journal": self._journal_status(),
            "loop_lag": self.loop_lag.summary(),
            "components": self.supervisor.status(),
        }

    def _journal_status(self) -> dict[str, Any]:
        """The journal's health: its trouble (disk full, at its bound...) or ``ok``, and
        how full it is against its bound (``filling`` from 80 % until drained)."""
        journal = self.journal
        status: dict[str, Any] = {"state": "ok"}
        if journal.trouble is not None:
            status = journal.trouble.as_status()
        return {**status, "max_pending": journal.max_pending, "filling": journal.filling}

    async def _housekeeping(self) -> None:
        """Once a minute: prune old passages and pass tokens, re-check the clock."""
        while True:
            await asyncio.sleep(self.housekeeping_every)
            now = self.now()
            self.history.prune(now)
            self.state.forget_before(now)
            window = self.store.rules.pass_window_s if self.store.rules else 30
            self.passes.prune(int(now.timestamp()), window)
            self.state.seen_passes = set(self.passes.entries())
            self.clock.check()
            self._report_held_back()

    def _report_held_back(self) -> None:
        """After a flood: one ``bad_message`` per (topic, reason) saying how many were held back."""
        for (topic, reason), count in self._bad_messages.held_back():
            self._record(
                "bad_message", None, {"topic": topic, "reason": reason, "suppressed": count}
            )

    def _start_web(self) -> None:
        """The installer's web UI, in a process of its own (it never slows the doors).

        It is bound at once (a taken port shows in the first log lines), then supervised
        like every part: a port in use or a crashed UI is logged, reported
        (``component_failed``, the status's ``components``) and tried again with back-off,
        while doors, readers, journal and sync go on.
        """
        try:
            self._web = self._web_first = self._new_web()
        except AccessGwError as exc:
            self._web_first = exc  # raised by the supervised part: reported and retried
        self.supervisor.start("web", self._serve_web)

    def _new_web(self) -> WebServer:
        from gateway.web.server import WebServer

        web = WebServer(self, self.config.web, self.state_dir.path)
        web.start()
        return web

    async def _serve_web(self) -> None:
        """One life of the web UI: until its process ends (a failure) or the gateway stops."""
        first, self._web_first = self._web_first, None
        if isinstance(first, BaseException):
            raise first
        web = first if first is not None else self._new_web()
        self._web = web
        try:
            cause = await web.wait_stopped()
        finally:
            self._web = None
            await web.stop()
        raise AccessGwError(f"the web UI stopped: {cause or 'without a reason'}")


def _part(kind: str, name: str) -> str:
    """A supervised part's name, e.g. ``door main-in`` (events and status show it)."""
    return f"{kind} {name}"


def _reader_failed(reader: Reader, error: BaseException | None) -> None:
    """A reader loop failed: the reader shows offline (``reader_offline``) until it reads."""
    reader.report(False, f"reader loop failed: {describe(error)}")


async def _logged(what: str, step: Awaitable[None]) -> None:
    """One step of shutting down: a failure is logged with its cause, the rest goes on."""
    try:
        await step
    except Exception as exc:
        log.error("%s failed: %s", what, describe(exc), exc_info=exc)


async def run_gateway(
    config: Config,
    stop: asyncio.Event,
    config_path: Path | None = None,
    restored: RestoreOutcome | None = None,
) -> bool:
    """Run a gateway until ``stop`` is set, or it asks to be started again (True)."""
    gateway = Gateway(config, config_path=config_path, now=wall_clock())
    gateway.restored = restored
    await gateway.start()
    # After the start: its threads and processes are started as ordinary ones, and this
    # thread's own short slices are asked for first (gateway.niceness).
    niceness.doors_loop_first("doors' event loop")
    try:
        stopped = asyncio.ensure_future(stop.wait())
        restart = asyncio.ensure_future(gateway.restart_wanted.wait())
        await asyncio.wait({stopped, restart}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        restart.cancel()
    finally:
        await gateway.stop()
    return gateway.restart_wanted.is_set()


def _apply_staged_restore(config_file: str) -> RestoreOutcome | None:
    """A restore staged by the web UI or ``accessgw restore --at-next-start``, applied before
    the config is read and any state opened (gateway.backup). A failed one leaves the old
    state as it was; one that could not even be undone stops the start (BackupError)."""
    from gateway.backup import apply_staged_restore, discard_pending, state_dir_named

    state = state_dir_named(config_file)
    if state is None or not state.is_dir():
        return None
    discard_pending(state)  # checked but never confirmed before the stop: decrypted, dropped
    return apply_staged_restore(state)


def _start_again() -> int:
    """The gateway asked to be started again (a restore is staged): under systemd it exits
    and the unit's ``Restart=always`` starts it; run by hand, it replaces itself."""
    if os.environ.get("INVOCATION_ID"):  # set by systemd for the service's processes
        log.info("stopped to apply a staged restore: systemd starts the gateway again")
        return 0
    log.info("stopped to apply a staged restore: starting again (%s)", " ".join(sys.orig_argv))
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)


def run_daemon(
    args: Any, runner: Callable[[Config, asyncio.Event], Awaitable[bool | None]] = run_gateway
) -> int:
    """``accessgw run CONFIG``: run until SIGTERM/SIGINT."""
    from gateway.validation import validate_file  # the same checks as check-config

    restored = _apply_staged_restore(args.config)
    report = validate_file(args.config)
    config = report.valid_config()
    logs.configure(
        getattr(args, "log_level", None) or config.log.level,
        getattr(args, "log_format", None) or config.log.format,
        config.log.libraries,
    )
    if restored is not None:
        (log.info if restored.applied else log.error)("%s", restored.message)
    for warning in report.warnings:
        log.warning("config %s: %s", report.file, warning)

    config_path = Path(args.config).resolve()

    async def main() -> bool | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if runner is run_gateway:
            return await run_gateway(config, stop, config_path, restored)
        return await runner(config, stop)

    if asyncio.run(main()):
        return _start_again()
    return 0
