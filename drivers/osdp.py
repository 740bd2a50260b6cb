"""OSDP v2 readers (RS-485) through libosdp, as a Control Panel with Secure Channel enforced.

One Control Panel per reader, one Peripheral Device (PD) at the reader's address on its
serial port. The Secure Channel Base Key (SCBK) of each reader lives in the state
directory (``secrets/osdp/<reader>.scbk``, 32 hex digits, mode 0600) and is never logged.
A reader that will not set up the Secure Channel with that key is reported offline with
the reason, never used in clear: libosdp's ``EnforceSecure`` forbids the default key
(SCBK-D) and clear-text sessions, and card reads that arrive without an active Secure
Channel are dropped here as well.

Install mode (only when the installer asks: ``install_mode = true`` in the reader's
options while it has no key yet, or :meth:`OsdpReader.enroll`) makes a new random key,
keeps it as ``<reader>.scbk.pending``, and runs the panel without ``EnforceSecure`` for
that one session: libosdp then falls back to SCBK-D, which a PD in install mode accepts,
sends the new key (osdp_KEYSET) and restarts the Secure Channel with it. Once that works
the pending key becomes the reader's key and ``EnforceSecure`` is switched back on.

libosdp runs its own refresh thread (every ~20 ms); its callbacks are handed to the event
loop with ``call_soon_threadsafe``, and every call that takes libosdp's lock runs in a
worker thread, so the loop never waits on the bus.

A reader that drops (rebooted, cable pulled, its Secure Channel lost) is not left to
libosdp, which waits 300 s (``OSDP_ONLINE_RETRY_WAIT_MAX_MS``) before it tries a PD it
marked offline again: the panel is restarted with back-off (1 s doubling to 30 s), so a
rebooted reader reads again within seconds. Reads a reader queued while it was cut off
arrive in a burst when it comes back, stamped with their arrival time: the first
``settle_seconds`` after the reader comes online are not taken as fresh presentations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import osdp
import serial
from pydantic import Field

from drivers.serial_port import (
    Backoff,
    not_found,
)
from gateway.errors import HardwareError
from gateway.profiles import (
    DeviceAddress,
    DriverSettings,
    ReaderDriverSpec,
    ReaderSecrets,
    needs_port,
)
from gateway.readers import CredentialRead, HealthCallback, Reader, utc_now

log = logging.getLogger(__name__)

MIN_CARD_BITS = 16  # shorter bursts are line noise (real formats start at 26 bits)
MAX_CARD_BITS = 1024  # far above any real card format; a longer "read" is garbage
QUEUE_SIZE = 64  # reads waiting for the door; more means nobody is consuming them
LOG_LEVELS = {
    "error": osdp.LogLevel.Error,
    "warning": osdp.LogLevel.Warning,
    "info": osdp.LogLevel.Info,
    "debug": osdp.LogLevel.Debug,
}
# libosdp notification types (osdp_notification_type): the binding exposes no names in 3.2
NOTIFY_COMMAND, NOTIFY_SC_STATUS, NOTIFY_PD_STATUS = 0, 1, 2


class BadCard(ValueError):
    """A card read that cannot be turned into a credential (the reason is safe to log)."""


class OsdpSettings(DriverSettings):
    """What an OSDP profile may set (``[settings]``, overridden by a reader's ``options``)."""

    baudrate: int = Field(default=9600, gt=0)
    address: int = Field(default=0, ge=0, le=126)  # the config's ``address`` wins
    online_timeout: float = Field(default=8.0, gt=0, le=300)
    led_seconds: float = Field(default=2.0, gt=0, le=25)
    buzzer: bool = True
    install_mode: bool = False
    log_level: Literal["error", "warning", "info", "debug"] = "error"
    reopen_max: float = Field(default=5.0, gt=0, le=300)
    restart_min: float = Field(default=1.0, gt=0, le=60)  # first wait before a new panel
    restart_max: float = Field(default=30.0, gt=0, le=600)
    settle_seconds: float = Field(default=1.5, ge=0, le=10)  # reads dropped after online


# --- card data ------------------------------------------------------------------------


def card_bits(length: int, data: bytes) -> str:
    """The first ``length`` bits of ``data``, most significant bit first, as "0"/"1"."""
    if not MIN_CARD_BITS <= length <= MAX_CARD_BITS:
        raise BadCard(f"card read of {length} bits (expected {MIN_CARD_BITS}..{MAX_CARD_BITS})")
    if len(data) * 8 < length:
        raise BadCard(f"card read says {length} bits but carries {len(data)} bytes")
    return "".join(f"{byte:08b}" for byte in data)[:length]


def wiegand26(bits: str) -> str:
    """The 24 data bits of an H10301 26-bit read (facility × 65536 + card), in decimal.

    Bit 0 is even parity over bits 1-12, bit 25 odd parity over bits 13-24: a read with
    wrong parity is a misread and is refused rather than guessed at.
    """
    if len(bits) != 26:
        raise BadCard(f"a 26-bit format needs 26 bits, not {len(bits)}")
    if bits[:13].count("1") % 2 != 0 or bits[13:].count("1") % 2 != 1:
        raise BadCard("26-bit read with wrong parity (a misread?)")
    return str(int(bits[1:25], 2))


def decode_card(length: int, data: bytes, fmt: int) -> tuple[str, str, str | None]:
    """(value, format, bits) of an OSDP card read; BadCard if it makes no sense.

    A 26-bit read whose format code says Wiegand is decoded as H10301; every other read
    keeps the whole number (``rawN``): a 26-bit read in another format is not guessed at.
    ASCII reads (a format of osdp_RAW that no reader of this gateway's profiles sends)
    are refused rather than passed on unverified.
    """
    if fmt == osdp.CardFormat.ASCII:
        raise BadCard("ASCII card reads are not supported: set the reader to Wiegand output")
    bits = card_bits(length, data)
    if length == 26 and fmt == osdp.CardFormat.Wiegand:
        return wiegand26(bits), "wiegand26", bits
    return str(int(bits, 2)), f"raw{length}", bits


def card_read(reader: str, event: dict[str, Any]) -> CredentialRead:
    """The credential of a libosdp CardRead event; BadCard if it is malformed."""
    length, data, fmt = event.get("length"), event.get("data"), event.get("format")
    if not isinstance(length, int) or not isinstance(data, bytes | bytearray):
        raise BadCard("card read without a bit count or data")
    if not isinstance(fmt, int):
        raise BadCard("card read without a format code")
    value, name, bits = decode_card(length, bytes(data), fmt)
    return CredentialRead(reader, "nfc", value, utc_now(), format=name, bits=bits)


# --- keys -----------------------------------------------------------------------------


class ScbkFile:
    """A reader's SCBK in the state directory: 32 hex digits, mode 0600, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending = path.with_name(path.name + ".pending")

    def load(self) -> bytes | None:
        """The key, None if there is none; HardwareError if the file is damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(ValueError):
            key = bytes.fromhex(raw.decode("ascii").strip())
            if len(key) == 16:
                return key
        if len(raw) == 16:  # a raw key copied in by hand
            return raw
        raise HardwareError(
            f"OSDP key file {self.path} is damaged (expected 32 hex digits): "
            "restore it from backup, or delete it and run install mode on the reader"
        )

    def make_pending(self) -> bytes:
        """A new random key, saved as pending before any reader is told about it."""
        key = secrets.token_bytes(16)
        _write_secret(self.pending, key.hex() + "\n")
        return key

    def commit_pending(self) -> None:
        """The pending key becomes the reader's key (atomic rename, then fsync the dir)."""
        os.replace(self.pending, self.path)
        _fsync_dir(self.path.parent)


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)  # the rename itself survives a power cut only once this is done


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- the bus --------------------------------------------------------------------------


class SerialChannel(osdp.Channel):
    """libosdp's byte channel on a serial port (non-blocking reads, on libosdp's thread).

    These methods never raise: libosdp's binding does not clear a Python exception a
    channel callback leaves behind, and that poisons every later call on its thread
    (seen as a deadlock). A port that fails sets :attr:`lost` instead.
    """

    def __init__(self, path: str, baudrate: int) -> None:
        super().__init__()
        self.path = path
        self.lost = False
        self.received = 0  # bytes the reader sent: tells "no answer" from "wrong key"
        try:
            # exclusive: a second panel on the same bus would garble both
            self.port = serial.Serial(path, baudrate, timeout=0, write_timeout=1.0, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            if not os.path.exists(path):
                raise not_found(path) from exc
            if "lock" in str(exc).lower():
                raise HardwareError(
                    f"serial port {path} is in use by another program or reader: one OSDP "
                    "bus per reader for now (give each reader its own RS-485 adapter)"
                ) from exc
            raise HardwareError(
                f"serial port {path} cannot be opened: {exc}. "
                "Is another program using it? Is the service user in the dialout group?"
            ) from exc

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` waiting bytes, b"" if none (or if the port is gone)."""
        if self.lost:
            return b""
        try:
            data = bytes(self.port.read(max_bytes))
        except Exception:  # termios.error is no OSError: catch all, see the class docstring
            self.lost = True
            return b""
        self.received += len(data)
        return data

    def write(self, buf: bytes) -> int:
        """Send ``buf``; how many bytes went out."""
        if self.lost:
            return 0
        try:
            return int(self.port.write(buf) or 0)
        except Exception:
            self.lost = True
            return 0

    def flush(self) -> None:
        """Drop bytes received but not read (libosdp asks after a broken frame)."""
        if self.lost:
            return
        try:
            self.port.reset_input_buffer()
        except Exception:
            self.lost = True

    def close(self) -> None:
        """Close the port."""
        with contextlib.suppress(Exception):
            self.port.close()


class Session:
    """One Control Panel run on one open port; what libosdp has told us about the PD."""

    def __init__(self, number: int, panel: osdp.ControlPanel, channel: SerialChannel) -> None:
        self.number = number
        self.panel = panel
        self.channel = channel
        self.secure = False  # Secure Channel active with the reader's own key (not SCBK-D)
        self.online = False
        self.seen_online = False  # the reader answered on this panel at least once
        self.dropped = False  # it was online and went away (or its Secure Channel did)
        self.sc_failed = False  # a Secure Channel handshake failed before ever working
        self.installing = False
        self.online_at: float | None = None  # loop time the reader came online securely


class OsdpReader(Reader):
    """An OSDP reader behind a libosdp Control Panel (see the module docstring)."""

    def __init__(
        self,
        reader_id: str,
        port: str,
        address: int,
        keys: ScbkFile,
        settings: OsdpSettings,
        on_health: HealthCallback | None = None,
    ) -> None:
        super().__init__(reader_id, on_health)
        self.port = port
        self.address = address
        self.keys = keys
        self.settings = settings
        self.dropped = 0  # card reads refused (malformed, or without Secure Channel)
        self._queue: asyncio.Queue[CredentialRead] = asyncio.Queue(QUEUE_SIZE)
        self._session: Session | None = None
        self._numbers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart = asyncio.Event()
        self._enroll_requested = False
        self._enrolled = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # kept so they are not collected early
        self._closed = False

    @property
    def where(self) -> str:
        """How an installer finds this reader: address and port."""
        return f"reader at address {self.address} on {self.port}"

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Run the panel (reopening the port as needed) and yield each card read."""
        self._loop = asyncio.get_running_loop()
        runner = asyncio.create_task(self._run(), name=f"osdp-{self.id}")
        try:
            while True:
                yield await self._queue.get()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await self._stop_session()

    async def enroll(self, within: float = 30.0) -> bool:
        """Install mode now: set a new SCBK on a reader that is in its install mode.

        Needs :meth:`reads` running. True once the Secure Channel works with the new key.
        """
        self._enrolled.clear()
        self._enroll_requested = True
        self._restart.set()
        try:
            await asyncio.wait_for(self._enrolled.wait(), within)
        except TimeoutError:
            return False
        return True

    async def feedback(self, granted: bool) -> None:
        """Green LED and one beep on grant, red LED and three beeps on deny."""
        session = self._session
        if session is None or not session.secure:
            return  # nothing is said in clear, and a missing reader has no LED
        commands = [self._led(granted)]
        if self.settings.buzzer:
            commands.append(self._buzz(granted))
        await asyncio.to_thread(self._submit, session, commands)

    async def close(self) -> None:
        """Stop the panel and release the port."""
        self._closed = True
        self._restart.set()
        await self._stop_session()

    # --- running the panel ----------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(0.2, self.settings.reopen_max)
        restarts = Backoff(self.settings.restart_min, self.settings.restart_max)
        while not self._closed:
            self._restart.clear()
            try:
                started = await self._start_session()
            except HardwareError as exc:
                self.report(False, str(exc))
                await self._wait_restart(backoff.next_delay())
                continue
            if not started:
                await self._wait_restart(None)
                continue
            backoff.reset()
            lost_port = await self._watch()
            session = self._session
            if session is not None and session.seen_online and session.secure:
                restarts.reset()  # it worked on this panel: the next drop starts from 1 s
            await self._stop_session()
            if not lost_port and not self._restart.is_set():
                # libosdp would wait 300 s before trying this reader again: a new panel,
                # after a growing pause, finds a rebooted reader within seconds
                await self._wait_restart(restarts.next_delay())

    async def _wait_restart(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._restart.wait(), seconds)

    async def _start_session(self) -> bool:
        """Open the port and start a panel; False when there is no key to start with."""
        key = self.keys.load()
        install = self._enroll_requested or (key is None and self.settings.install_mode)
        if install:
            key = await asyncio.to_thread(self.keys.make_pending)
        elif key is None:
            self.report(
                False,
                f"{self.where} has no Secure Channel key yet ({self.keys.path} is missing): "
                "put the reader in install mode and set install_mode = true for it once",
            )
            return False
        elif self.settings.install_mode:
            log.warning(
                "reader %s: install_mode is set but it has a key already; remove "
                "install_mode from its options (delete %s to enroll again)",
                self.id,
                self.keys.path,
            )
        self._enroll_requested = False
        self._numbers += 1
        session = await asyncio.to_thread(self._open_session, self._numbers, key, install)
        session.installing = install
        # the panel starts only once it is the current session: none of its events is lost
        self._session = session
        _start_refresh(session.panel)  # libosdp's refresh thread; does not block
        if install:
            self.report(False, f"install mode: setting a new Secure Channel key on {self.where}")
        return True

    def _open_session(self, number: int, key: bytes, install: bool) -> Session:
        """Open the port and set up the panel (in a worker thread: both block)."""
        channel = SerialChannel(self.port, self.settings.baudrate)
        flags = [osdp.LibFlag.EnableNotification]
        if not install:  # install mode needs SCBK-D once; nothing is passed on until SC works
            flags.append(osdp.LibFlag.EnforceSecure)
        info = osdp.PDInfo(self.address, channel, scbk=key, name=self.id, flags=flags)
        try:
            panel = osdp.ControlPanel(
                [info],
                log_level=LOG_LEVELS[self.settings.log_level],
                event_handler=lambda _pd, event: self._from_libosdp(number, event),
            )
        except Exception as exc:  # libosdp setup refuses: report it, never crash the daemon
            channel.close()
            raise HardwareError(f"libosdp cannot drive {self.where}: {exc}") from exc
        return Session(number, panel, channel)

    async def _watch(self) -> bool:
        """Until a restart is due: True if the port was lost, False when the reader
        dropped, refused the key, or never answered within ``online_timeout``."""
        session = self._session
        assert session is not None
        waited = 0.0
        while not self._restart.is_set():
            _drain(session.panel, self.address)
            if session.channel.lost:
                self.report(
                    False, f"serial port {self.port} stopped working: was the reader unplugged?"
                )
                return True
            if session.dropped or session.sc_failed:
                return False
            if not session.seen_online and waited >= self.settings.online_timeout:
                self.report(
                    False,
                    f"no answer from the OSDP {self.where}: check the RS-485 wiring (A/B), "
                    f"the reader's address and its baud rate ({self.settings.baudrate})",
                )
                return False
            await self._wait_restart(0.2)
            waited += 0.2
        return False

    async def _stop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.to_thread(_stop_panel, session)

    # --- what libosdp says (its thread -> the loop) ---------------------------------

    def _from_libosdp(self, number: int, event: dict[str, Any]) -> int:
        """libosdp's event callback, on its refresh thread: hand over and return at once."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are stopping
                loop.call_soon_threadsafe(self._on_event, number, dict(event))
        return 0

    def _on_event(self, number: int, event: dict[str, Any]) -> None:
        session = self._session
        if session is None or session.number != number:
            return  # from a panel that has been stopped since
        try:
            kind = event.get("event")
            if kind == osdp.Event.Notification:
                self._on_notification(session, event)
            elif kind == osdp.Event.CardRead:
                self._on_card(session, event)
            elif kind == osdp.Event.KeyPress:
                log.info("reader %s: keypad input ignored", self.id)  # never log digits: PINs
            else:
                log.debug("reader %s: event %s ignored", self.id, kind)
        except Exception:  # a surprise from the binding must not stop the reader
            log.exception("reader %s: libosdp event not understood", self.id)

    def _on_notification(self, session: Session, event: dict[str, Any]) -> None:
        kind, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        if kind == NOTIFY_SC_STATUS:
            self._on_sc_status(session, active=bool(arg0), default_key=bool(arg1))
        elif kind == NOTIFY_PD_STATUS:
            session.online = bool(arg0)
            if session.online:
                session.seen_online = True
            elif session.seen_online:
                session.dropped = True
            self._report_session(session)

    def _on_sc_status(self, session: Session, *, active: bool, default_key: bool) -> None:
        was_secure = session.secure
        session.secure = active and not default_key
        if session.secure and not was_secure:
            session.online_at = asyncio.get_running_loop().time()
        if not active and was_secure:
            session.dropped = True  # the reader rebooted or lost its session
        elif not active and not session.installing:
            # libosdp says "inactive" also when a reader that never answered times out:
            # only a reader that answered (a status came with it) refused the key
            session.sc_failed = True
        if session.secure and session.installing:
            session.installing = False
            task = asyncio.get_running_loop().create_task(self._finish_install(session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._report_session(session)

    def _report_session(self, session: Session) -> None:
        if session.installing:
            if session.online and not session.secure:
                self.report(
                    False,
                    f"install mode: {self.where} did not take the default key: put the reader "
                    "itself in install mode (see its manual) and try again",
                )
            return
        if session.online and session.secure:
            self.report(True)
        elif session.sc_failed and session.channel.received == 0:
            self.report(
                False,
                f"no answer from the OSDP {self.where}: check the RS-485 wiring (A/B), "
                f"the reader's address and its baud rate ({self.settings.baudrate})",
            )
        elif session.sc_failed:
            self.report(
                False,
                f"{self.where} refuses the secure channel: wrong SCBK? run install mode",
            )
        elif session.online:  # Secure Channel dropped after working: reads wait for it
            self.report(False, f"the secure channel with {self.where} dropped; restarting it")
        elif self.health.online:
            self.report(False, f"{self.where} went offline: not answering")

    async def _finish_install(self, session: Session) -> None:
        """Keep the new key, then forbid SCBK-D and clear text again on this panel."""
        try:
            await asyncio.to_thread(self.keys.commit_pending)
            await asyncio.to_thread(
                session.panel.set_flag, self.address, osdp.LibFlag.EnforceSecure
            )
        except OSError as exc:
            self.report(False, f"the new OSDP key cannot be saved in {self.keys.path}: {exc}")
            self._restart.set()
            return
        log.info("reader %s: new Secure Channel key set (install mode done)", self.id)
        self._enrolled.set()

    def _on_card(self, session: Session, event: dict[str, Any]) -> None:
        if not session.secure:
            self.dropped += 1
            log.warning("reader %s: card read without Secure Channel dropped", self.id)
            return
        since = session.online_at
        if (
            since is not None
            and asyncio.get_running_loop().time() - since < self.settings.settle_seconds
        ):
            self.dropped += 1  # queued while the reader was cut off: not a presentation now
            log.info("reader %s: card read queued during an outage dropped", self.id)
            return
        try:
            read = card_read(self.id, event)
        except BadCard as exc:
            self.dropped += 1
            log.warning("reader %s: card read dropped: %s", self.id, exc)
            return
        try:
            self._queue.put_nowait(read)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("reader %s: card read dropped: nobody is taking reads", self.id)

    # --- feedback -------------------------------------------------------------------

    def _led(self, granted: bool) -> dict[str, Any]:
        color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
        ticks = max(1, round(self.settings.led_seconds * 10))  # OSDP counts 100 ms units
        return {
            "command": osdp.Command.LED,
            "reader": 0,
            "led_number": 0,
            "control_code": 2,  # temporary state: the reader falls back to its idle LED
            "on_count": ticks,
            "off_count": 0,
            "on_color": color,
            "off_color": osdp.CommandLEDColor.Black,
            "timer_count": ticks,
            "temporary": True,
        }

    @staticmethod
    def _buzz(granted: bool) -> dict[str, Any]:
        return {
            "command": osdp.Command.Buzzer,
            "reader": 0,
            "control_code": 2,  # the default tone
            "on_count": 2 if granted else 1,
            "off_count": 0 if granted else 1,
            "rep_count": 1 if granted else 3,
        }

    def _submit(self, session: Session, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            try:
                if not session.panel.submit_command(self.address, command):
                    log.warning("reader %s: libosdp refused a feedback command", self.id)
            except Exception as exc:  # a stopped panel: feedback is best effort
                log.warning("reader %s: feedback not sent: %s", self.id, exc)


def _drain(panel: osdp.ControlPanel, address: int) -> None:
    """Empty the binding's own event queue: events reach us through the callback, and
    the binding keeps a copy of each in a queue nobody else reads (it would only grow)."""
    with contextlib.suppress(Exception):
        while panel.get_event(address, timeout=-1) is not None:
            pass


def _start_refresh(panel: osdp.ControlPanel) -> None:
    """What ``ControlPanel.start`` does (libosdp 3.2), but with a daemon thread: a panel
    that some path forgets to stop must never keep the gateway process from exiting."""
    panel.event = threading.Event()
    panel.lock = threading.Lock()
    panel.thread = threading.Thread(
        name="osdp-cp",
        target=panel.refresh,
        args=(panel.event, panel.lock, panel.ctx),
        daemon=True,
    )
    panel.thread.start()


def _stop_panel(session: Session) -> None:
    """Stop libosdp's thread and close the port (blocking: run in a worker thread)."""
    with contextlib.suppress(RuntimeError):
        session.panel.stop()
    session.channel.close()


def create_reader(
    reader_id: str,
    address: DeviceAddress,
    settings: OsdpSettings,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
) -> Reader:
    """The driver factory named by ``driver = "osdp"`` profiles."""
    assert address.port is not None  # checked by needs_port
    pd_address = address.address if address.address is not None else settings.address
    keys = ScbkFile(secrets.osdp_scbk(reader_id))
    return OsdpReader(reader_id, address.port, pd_address, keys, settings, on_health)


def _bus(address: DeviceAddress, settings: OsdpSettings) -> tuple[str, str] | None:
    return None if address.port is None else (address.port, f"OSDP {settings.baudrate} 8N1")


READER_DRIVER = ReaderDriverSpec(OsdpSettings, create_reader, needs_port, _bus)
