"""The running gateway: every part wired together, started and stopped in order.

Start: state directory -> store, journal, pass cache, history -> local state ->
boards and doors (outputs to their safe state) -> readers -> MQTT link, sync, outbox ->
web UI -> READY=1. Stop: readers first (no new decisions), doors to their safe state,
the link last so the ``stopping`` event still has a chance to leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from gateway import __version__
from gateway.activity import Activity
from gateway.clock import ClockTrust
from gateway.config import Config, load_config
from gateway.entry import DoorPlace, Entrance
from gateway.history import History
from gateway.journal import Journal
from gateway.pass_cache import PassCache
from gateway.profiles import find_profile
from gateway.readers import Reader, ReaderHealth, RepeatGuard, debounced
from gateway.state_dir import StateDir
from gateway.store import EntitlementStore
from gateway.sync.commands import CommandFailed
from gateway.systemd import keep_watchdog_fed, notify

log = logging.getLogger("accessgw")


def utc_now() -> datetime:
    """The current instant (UTC)."""
    return datetime.now(UTC)


class Gateway:
    """One gateway process: store, journal, doors, readers, sync and web UI."""

    def __init__(self, config: Config, *, now: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.gw = config.gateway.id
        self.site = config.gateway.site
        self.now = now
        self.activity = Activity()
        self.clock = ClockTrust(config.gateway.clock)
        self.started_at = now()
        self.doors: dict[str, Any] = {}
        self.boards: dict[str, Any] = {}
        self.entrances: dict[str, Entrance] = {}
        self.readers: dict[str, Reader] = {}
        self.sync: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._event_tasks: set[asyncio.Task[Any]] = set()
        self._remote_opens: set[asyncio.Task[Any]] = set()
        self._published: list[Callable[[], None]] = []
        self._journal_pending = 0
        self._web: Any = None

    # --- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, put outputs in their safe state, start readers and sync."""
        cfg = self.config
        self.state_dir = StateDir(cfg.gateway.state_dir).ensure()
        self.store = EntitlementStore.open(self.state_dir.store, self.state_dir.hmac_key())
        self.journal = await Journal.open(self.state_dir.journal, self.gw)
        self.passes = PassCache.open(self.state_dir.passes)
        self.history = History.open(self.state_dir.path / "history.sqlite")
        rules = self.store.rules
        self.state = self.history.rebuild(
            self.gw, self.now(), rules.tz if rules else None, self.store.checkins_upto
        )
        self.state.seen_passes = set(self.passes.entries())
        self.state.clock_synced = self.clock.synced()
        await self._start_doors()
        self._start_readers()
        await self._start_sync()
        self.record_event("started", None, {"software": __version__})
        if cfg.web.enabled:
            self._tasks.append(asyncio.create_task(self._serve_web(), name="web"))
        self._tasks.append(asyncio.create_task(keep_watchdog_fed(), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        notify("READY=1")
        log.info(
            "gateway %s of site %s started: %d doors, %d readers, entitlements v%s",
            self.gw,
            self.site,
            len(self.doors),
            len(self.readers),
            self.store.version,
        )

    async def stop(self) -> None:
        """Stop readers, put doors into their safe state, flush events, close everything."""
        notify("STOPPING=1")
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                await reader.close()
        self.record_event("stopping", None, {})
        await asyncio.gather(*self._event_tasks, return_exceptions=True)
        for door in self.doors.values():
            with contextlib.suppress(Exception):
                await door.stop()
        if self._web is not None:  # let uvicorn finish its lifespan instead of cancelling it
            self._web.should_exit = True
            web_task = next((t for t in self._tasks if t.get_name() == "web"), None)
            if web_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(web_task), 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for board in self.boards.values():
            with contextlib.suppress(Exception):
                await board.close()
        await self.journal.close()
        self.history.close()
        self.passes.close()
        self.store.close()

    # --- the parts ----------------------------------------------------------------------

    async def _start_doors(self) -> None:
        from gateway.doors import Door

        for board_cfg in self.config.boards:
            profile = find_profile(board_cfg.profile)
            board = profile.driver_module().create_board(board_cfg, profile)
            await board.start()
            self.boards[board_cfg.id] = board
        for door_cfg in self.config.doors:
            door = Door(door_cfg, self.boards, on_event=self._door_events(door_cfg.id))
            await door.start()
            self.doors[door_cfg.id] = door
            place = DoorPlace(
                door_cfg.id,
                door_cfg.zone,
                door_cfg.direction,
                door_cfg.language or self.config.gateway.language,
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
            )

    def _door_events(self, door_id: str) -> Callable[[str, dict[str, Any]], None]:
        """The event sink of one door: its events are journalled with its id."""

        def on_event(type_: str, detail: dict[str, Any]) -> None:
            self.record_event(type_, door_id, detail)

        return on_event

    def _start_readers(self) -> None:
        for reader_cfg in self.config.readers:
            profile = find_profile(reader_cfg.profile)
            reader = profile.driver_module().create_reader(
                reader_cfg, profile, self.state_dir, self._reader_health
            )
            self.readers[reader_cfg.id] = reader
            entrance = self.entrances[reader_cfg.door]
            task = asyncio.create_task(
                self._read_loop(reader, entrance, RepeatGuard(reader_cfg.repeat_guard)),
                name=f"reader {reader_cfg.id}",
            )
            self._tasks.append(task)

    async def _read_loop(self, reader: Reader, entrance: Entrance, guard: RepeatGuard) -> None:
        """Feed one reader's reads to its door; a failing read never stops the loop."""
        async for read in debounced(reader.reads(), guard):
            try:
                checkin = await entrance.present(read)
            except Exception:  # one bad read must not stop the reader
                log.exception("reader %s: deciding a %s read failed", reader.id, read.kind)
                continue
            with contextlib.suppress(Exception):
                await reader.feedback(checkin["decision"] == "granted")

    def _reader_health(self, health: ReaderHealth) -> None:
        self.activity.health(health)
        kind = "reader_online" if health.online else "reader_offline"
        door = next((r.door for r in self.config.readers if r.id == health.reader), None)
        self.record_event(kind, door, {"reader": health.reader, "reason": health.reason})

    async def _start_sync(self) -> None:
        """The MQTT link and everything that rides on it (filled in by gateway.sync.run)."""
        if not self.config.mqtt.enabled:
            return
        from gateway.sync.runner import SyncRunner

        self.sync = SyncRunner(self)
        self._tasks.append(asyncio.create_task(self.sync.run(), name="sync"))

    def link_up(self) -> bool:
        """Whether the broker link is up (for tests and the web UI)."""
        return self.online()

    def online(self) -> bool:
        """Whether the broker link is up (check-ins record ``offline`` otherwise)."""
        return bool(self.sync and self.sync.connected)

    def _own_checkin(self, checkin: dict[str, Any]) -> None:
        """A check-in of ours became final: keep its passage, show it, wake the outbox."""
        self.history.add(checkin)
        self.activity.add("decision", **checkin)
        self._final_checkin()

    def _final_checkin(self) -> None:
        for callback in self._published:
            callback()

    def on_published(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a check-in or event became final (the outbox wakes up)."""
        self._published.append(callback)

    def record_event(self, type_: str, door: str | None, detail: dict[str, Any]) -> None:
        """Journal an event (durably, in the background) and show it to the installer."""
        self.activity.add("event", type=type_, door=door, detail=detail)

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
            place = self.entrances[door_id].place
            entry = await self.journal.record_decision(
                {
                    "at": self.now().isoformat(timespec="milliseconds"),
                    "door": door_id,
                    "zone": place.zone,
                    "direction": place.direction,
                    "credential": "unknown",
                    "member": None,
                    "ticket": None,
                    "decision": "granted",
                    "reason": "remote_open",
                    "contract": None,
                    "charged": 0,
                    "passed": False,
                    "warnings": [],
                    "offline": not self.online(),
                    "entitlements_version": self.store.version,
                }
            )
            released: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            # kept apart from the event tasks: stopping must not wait for a passage
            task = asyncio.create_task(self._remote_open(door_id, entry.seq, seconds, released))
            self._remote_opens.add(task)
            task.add_done_callback(self._remote_opens.discard)
            # answered once the lock moved, not after the passage (Clarifications, Commands)
            if not await released:
                raise CommandFailed(f"door {door_id}: the lock could not be released")

    async def _remote_open(
        self, door_id: str, seq: int, seconds: int | None, released: asyncio.Future[bool]
    ) -> None:
        """One remote release through to its final check-in (after the passage or timeout)."""
        passed = False
        try:
            passed = (await self.doors[door_id].open_once(seconds, released)).passed
        except Exception:  # the record is still finalised (not passed); the result says failed
            log.exception("door %s: remote open failed", door_id)
        finally:
            if not released.done():
                released.set_result(False)
        final = await self.journal.finalise(seq, passed=passed, charged=0)
        self.state.apply_checkin(final, own=True)
        self._own_checkin(final)

    async def set_mode(self, door: str, mode: str) -> None:
        """Commands ``unlock``, ``lockdown`` and ``normal``."""
        for door_id in self._doors_named(door):
            self.doors[door_id].set_mode(mode)
            if mode == "lockdown":
                self.record_event("lockdown", door_id, {"by": "central"})

    async def resync(self) -> None:
        """Command ``resync``: ask for a full snapshot."""
        if self.sync is not None:
            await self.sync.entitlements.resync()

    def take_peer_checkin(self, checkin: dict[str, Any]) -> None:
        """Another gateway of the site let someone through: share its effects."""
        self.history.add(checkin)
        self.state.apply_checkin(checkin, own=False)
        ticket_id = checkin.get("ticket")
        if ticket_id and checkin.get("decision") == "granted" and checkin.get("passed"):
            ticket = self.store.ticket(ticket_id)
            if ticket is not None and self.state.ticket_uses(ticket_id) > ticket.uses:
                self.record_event(
                    "ticket_double_use",
                    checkin.get("door"),
                    {
                        "ticket": ticket_id,
                        "uses": self.state.ticket_uses(ticket_id),
                        "allowed": ticket.uses,
                        "gw": checkin.get("gw"),
                    },
                )

    async def refresh_status(self) -> None:
        """Read what the status needs that is only available asynchronously."""
        self._journal_pending = await self.journal.pending_count()
        self.state.clock_synced = self.clock.synced()

    def status(self) -> dict[str, Any]:
        """The status payload (PROTOCOL.md Status), also shown in the web UI."""
        readers = self.activity.readers
        doors = {}
        for door_id, door in self.doors.items():
            entry = dict(door.status())
            ids = [r.id for r in self.config.readers if r.door == door_id]
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
        }

    async def _housekeeping(self) -> None:
        """Once a minute: prune old passages and pass tokens, re-check the clock."""
        while True:
            await asyncio.sleep(60)
            now = self.now()
            self.history.prune(now)
            self.state.forget_before(now)
            window = self.store.rules.pass_window_s if self.store.rules else 30
            self.passes.prune(int(now.timestamp()), window)
            self.state.seen_passes = set(self.passes.entries())
            self.state.clock_synced = self.clock.synced()

    async def _serve_web(self) -> None:
        import uvicorn

        from gateway.web import create_app

        class QuietServer(uvicorn.Server):
            """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        web = self.config.web
        app = create_app(self.status, self.activity)
        server = QuietServer(
            uvicorn.Config(app, host=web.listen, port=web.port, log_level="warning")
        )
        self._web = server
        await server.serve()


async def run_gateway(config: Config, stop: asyncio.Event) -> None:
    """Run a gateway until ``stop`` is set."""
    gateway = Gateway(config)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def run_daemon(
    args: Any, runner: Callable[[Config, asyncio.Event], Awaitable[None]] = run_gateway
) -> int:
    """``accessgw run CONFIG``: run until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runner(config, stop)

    asyncio.run(main())
    return 0
