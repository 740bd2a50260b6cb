"""OSDP v2 readers (RS-485) through libosdp, as a Control Panel with Secure Channel enforced.

One Control Panel per serial port (:class:`OsdpBus`), with one Peripheral Device (PD) per
reader configured on that port, each at its own address with its own key (multi-drop).
The Secure Channel Base Key (SCBK) of each reader lives in the state directory
(``secrets/osdp/<reader>.scbk``, 32 hex digits, mode 0600) and is never logged.
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
marked offline again: that reader's PD is started again (``disable_pd``/``enable_pd``)
with back-off (1 s doubling to 30 s), so a rebooted reader reads again within seconds
and its neighbours on the bus never notice.

A reader's local status (osdp_LSTATR: tamper switch, power) becomes ``tamper`` and
``reader_power`` events and health alerts; keypad input a ``reader_keypad`` event with
the number of keys (never the digits: they may be a PIN). Reads a reader queued while it was cut off
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
from gateway.state_dir import fsync_directory, write_secret_atomically

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
        write_secret_atomically(self.pending, (key.hex() + "\n").encode("ascii"))
        return key

    def commit_pending(self) -> None:
        """The pending key becomes the reader's key (atomic rename, then fsync the dir)."""
        os.replace(self.pending, self.path)
        fsync_directory(self.path.parent)


# --- the bus --------------------------------------------------------------------------

OSDP_SOM = 0x53  # start of every OSDP packet
REPLY_FLAG = 0x80  # set in the address byte of a PD's reply
MAX_PACKET = 1440  # longer "packets" are line noise: resynchronise


class ReplyAddresses:
    """Which PDs answered on a shared line, from the packet headers (SOM, address,
    length) of what the port received: on a bus, bytes on the line say nothing about
    which reader sent them. Only used to tell "no answer" from "refuses the key";
    libosdp does the real parsing (and checks)."""

    def __init__(self) -> None:
        self.heard: dict[int, int] = {}  # PD address -> replies seen from it
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        """Walk the packets in ``data`` (and what was left of the last call)."""
        buf = self._pending
        buf += data
        while len(buf) >= 4:
            if buf[0] != OSDP_SOM:
                start = buf.find(OSDP_SOM, 1)
                del buf[: start if start > 0 else len(buf)]
                continue
            length = buf[2] | buf[3] << 8
            if not 7 <= length <= MAX_PACKET:
                del buf[:1]
                continue
            if len(buf) < length:
                break
            if buf[1] & REPLY_FLAG:
                address = buf[1] & ~REPLY_FLAG
                self.heard[address] = self.heard.get(address, 0) + 1
            del buf[:length]

    def count(self, address: int) -> int:
        """Replies seen from ``address`` so far."""
        return self.heard.get(address, 0)


class SerialChannel(osdp.Channel):
    """libosdp's byte channel on a serial port (non-blocking reads, on libosdp's thread),
    shared by every PD on the bus.

    These methods never raise: libosdp's binding does not clear a Python exception a
    channel callback leaves behind, and that poisons every later call on its thread
    (seen as a deadlock). A port that fails sets :attr:`lost` instead.
    """

    def __init__(self, path: str, baudrate: int) -> None:
        super().__init__()
        self.path = path
        self.lost = False
        self.replies = ReplyAddresses()  # tells "no answer" from "wrong key", per reader
        try:
            # exclusive: a second panel on the same bus would garble both
            self.port = serial.Serial(path, baudrate, timeout=0, write_timeout=1.0, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            if not os.path.exists(path):
                raise not_found(path) from exc
            if "lock" in str(exc).lower():
                raise HardwareError(
                    f"serial port {path} is in use by another program: OSDP readers on one "
                    "bus share one port, and nothing else may open it"
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
            self.replies.feed(data)
        except Exception:  # termios.error is no OSError: catch all, see the class docstring
            self.lost = True
            return b""
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


class PdState:
    """What libosdp has told us about one reader (PD) on a panel, since its last
    (re)start: a reader recovered on its own gets a fresh one."""

    def __init__(
        self, reader: OsdpReader, session: Session, *, installing: bool, since: float
    ) -> None:
        self.reader = reader
        self.session = session
        self.secure = False  # Secure Channel active with the reader's own key (not SCBK-D)
        self.online = False
        self.seen_online = False  # the reader answered on this attempt at least once
        self.worked = False  # it was secure on this attempt: its back-off starts over
        self.dropped = False  # it was online and went away (or its Secure Channel did)
        self.sc_failed = False  # a Secure Channel handshake failed before ever working
        self.installing = installing
        self.online_at: float | None = None  # loop time the reader came online securely
        self.since = since  # loop time this attempt began (for online_timeout)
        self._heard_before = session.channel.replies.count(reader.address)
        self.recovering: asyncio.Task[None] | None = None

    @property
    def answered(self) -> bool:
        """The reader sent something on this attempt (it is there, whatever its key)."""
        return self.session.channel.replies.count(self.reader.address) > self._heard_before


class Session:
    """One Control Panel run on one open port, for every reader on that bus."""

    def __init__(self, number: int, channel: SerialChannel, addresses: list[int]) -> None:
        self.number = number
        self.channel = channel
        self.addresses = addresses  # libosdp's PD index -> the reader's address
        self.panel: osdp.ControlPanel | None = None
        self.pds: dict[int, PdState] = {}


JOIN_GRACE = 0.1  # readers that start together wait this long for one shared panel
WATCH_EVERY = 0.2


class OsdpBus:
    """One RS-485 port and one libosdp Control Panel for every OSDP reader on it.

    Readers join when their :meth:`OsdpReader.reads` starts and leave when it ends; a
    change of members (or an install mode) builds the panel again with all of them. A
    reader that drops, refuses its key or never answers is recovered on its own, with
    its own back-off: libosdp's ``disable_pd`` / ``enable_pd`` start that PD's state
    machine again at once (instead of libosdp's 300 s wait), while its neighbours on
    the bus keep reading. A lost port restarts the panel for every reader on it.
    """

    def __init__(self, key: tuple[int, str], port: str, settings: OsdpSettings) -> None:
        self.key = key
        self.port = port
        self.baudrate = settings.baudrate
        self.log_level = settings.log_level
        self.reopen_max = settings.reopen_max
        self.members: dict[int, OsdpReader] = {}  # by OSDP address
        self.session: Session | None = None
        self._numbers = 0
        self._loop = asyncio.get_running_loop()
        self._rebuild = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def join(self, reader: OsdpReader) -> str | None:
        """Add ``reader`` (the panel is built again); why not, if it cannot be."""
        other = self.members.get(reader.address)
        if other is not None and other is not reader:
            return (
                f"address {reader.address} on {self.port} is already reader {other.id}: "
                "give each reader on a bus its own address"
            )
        if reader.settings.baudrate != self.baudrate:
            return (
                f"{self.port} runs at {self.baudrate} baud for the other readers on it, not "
                f"{reader.settings.baudrate}: readers on one bus share one baud rate"
            )
        self.members[reader.address] = reader
        self.rebuild()
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"osdp-bus {self.port}")
        return None

    async def leave(self, reader: OsdpReader) -> None:
        """``reader`` is done; the last one stops the panel and frees the port."""
        if self.members.get(reader.address) is reader:
            del self.members[reader.address]
        if self.members:
            self.rebuild()
            return
        if _buses.get(self.key) is self:
            del _buses[self.key]
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._stop_session()

    def rebuild(self) -> None:
        """Build the panel again (members changed, or a reader is to be enrolled)."""
        self._rebuild.set()

    def pd(self, reader: OsdpReader) -> PdState | None:
        """``reader``'s state on the running panel, if it is on one."""
        session = self.session
        state = None if session is None else session.pds.get(reader.address)
        return state if state is not None and state.reader is reader else None

    # --- running the panel ----------------------------------------------------------

    async def _run(self) -> None:
        reopen = Backoff(0.2, self.reopen_max)
        while True:
            await asyncio.sleep(JOIN_GRACE)
            self._rebuild.clear()
            try:
                planned = await self._plan()
                if not planned:
                    await self._rebuild.wait()
                    continue
                await self._start_session(planned)
                reopen.reset()
                await self._watch()
            except HardwareError as exc:
                self._report_all(str(exc))
                await self._wait_rebuild(reopen.next_delay())
            except Exception as exc:  # a surprise: said, and the bus is started afresh
                log.exception("OSDP bus on %s failed", self.port)
                self._report_all(f"the OSDP bus on {self.port} failed ({exc!r}); restarting it")
                await self._wait_rebuild(reopen.next_delay())
            finally:
                await self._stop_session()

    async def _plan(self) -> list[tuple[OsdpReader, bytes, bool]]:
        """(reader, key, install mode) of every member that can go on the panel now."""
        planned = []
        for reader in list(self.members.values()):
            try:
                key = await reader.panel_key()
            except (HardwareError, OSError) as exc:  # a damaged key file, a full disk
                reader.report(False, str(exc))
                continue
            if key is not None:
                planned.append((reader, *key))
        return planned

    def _report_all(self, reason: str) -> None:
        for reader in self.members.values():
            reader.report(False, reason)

    async def _wait_rebuild(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rebuild.wait(), seconds)

    async def _start_session(self, planned: list[tuple[OsdpReader, bytes, bool]]) -> None:
        self._numbers += 1
        opening = asyncio.ensure_future(
            asyncio.to_thread(self._open_session, self._numbers, planned)
        )
        try:
            session = await asyncio.shield(opening)
        except asyncio.CancelledError:  # the last reader left while the port was opening
            opening.add_done_callback(_close_unused)
            raise
        now = self._loop.time()
        for reader, _key, install in planned:
            session.pds[reader.address] = PdState(reader, session, installing=install, since=now)
        # the panel starts only once it is the current session: none of its events is lost
        self.session = session
        assert session.panel is not None
        _start_refresh(session.panel)  # libosdp's refresh thread; does not block
        for reader, _key, install in planned:
            if install:
                reader.report(
                    False, f"install mode: setting a new Secure Channel key on {reader.where}"
                )

    def _open_session(self, number: int, planned: list[tuple[OsdpReader, bytes, bool]]) -> Session:
        """Open the port and set up the panel (in a worker thread: both block)."""
        channel = SerialChannel(self.port, self.baudrate)
        infos = []
        for reader, key, install in planned:
            flags = [osdp.LibFlag.EnableNotification]
            if not install:  # install mode needs SCBK-D once; nothing passes until SC works
                flags.append(osdp.LibFlag.EnforceSecure)
            infos.append(
                osdp.PDInfo(reader.address, channel, scbk=key, name=reader.id, flags=flags)
            )
        session = Session(number, channel, [reader.address for reader, _, _ in planned])
        try:
            session.panel = osdp.ControlPanel(
                infos,
                log_level=LOG_LEVELS[self.log_level],
                event_handler=lambda pd, event: self._from_libosdp(number, pd, event),
            )
        except Exception as exc:  # libosdp setup refuses: report it, never crash the daemon
            channel.close()
            raise HardwareError(f"libosdp cannot drive the OSDP bus on {self.port}: {exc}") from exc
        return session

    async def _watch(self) -> None:
        """Until the panel is to be built again, or the port was lost."""
        session = self.session
        assert session is not None and session.panel is not None
        while not self._rebuild.is_set():
            for address in session.addresses:
                _drain(session.panel, address)
            if session.channel.lost:
                for pd in session.pds.values():
                    pd.reader.report(
                        False, f"serial port {self.port} stopped working: was the reader unplugged?"
                    )
                return
            now = self._loop.time()
            for address, pd in list(session.pds.items()):
                if pd.recovering is None and pd.reader.needs_restart(pd, now):
                    pd.recovering = self._loop.create_task(
                        self._recover(session, address, pd), name=f"osdp-pd {pd.reader.id}"
                    )
            await self._wait_rebuild(WATCH_EVERY)

    async def _recover(self, session: Session, address: int, pd: PdState) -> None:
        """Start one reader's PD again after its back-off; the others run on."""
        reader, panel = pd.reader, session.panel
        assert panel is not None
        try:
            delay = reader.restart_delay(pd)
            await asyncio.to_thread(panel.disable_pd, address)
            await asyncio.sleep(delay)
            if self.session is not session:
                return
            session.pds[address] = PdState(
                reader, session, installing=pd.installing, since=self._loop.time()
            )
            for _ in range(20):  # libosdp takes the disable on its next refresh (~20 ms)
                if await asyncio.to_thread(panel.enable_pd, address):
                    return
                await asyncio.sleep(0.05)
            log.warning("reader %s: libosdp would not start its PD again", reader.id)
            self.rebuild()  # a whole new panel, then
        except Exception:  # a stopped panel, a surprise from the binding: start afresh
            log.exception("reader %s: restarting its PD failed", reader.id)
            self.rebuild()

    async def _stop_session(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        for pd in session.pds.values():
            if pd.recovering is not None:
                pd.recovering.cancel()
        await asyncio.to_thread(_stop_panel, session)

    # --- what libosdp says (its thread -> the loop) ---------------------------------

    def _from_libosdp(self, number: int, index: int, event: dict[str, Any]) -> int:
        """libosdp's event callback, on its refresh thread: hand over and return at once."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are stopping
            self._loop.call_soon_threadsafe(self._on_event, number, index, dict(event))
        return 0

    def _on_event(self, number: int, index: int, event: dict[str, Any]) -> None:
        session = self.session
        if session is None or session.number != number or not 0 <= index < len(session.addresses):
            return  # from a panel that has been stopped since
        pd = session.pds.get(session.addresses[index])
        if pd is not None:
            pd.reader.on_libosdp_event(pd, event)


_buses: dict[tuple[int, str], OsdpBus] = {}


def bus_for(port: str, settings: OsdpSettings) -> OsdpBus:
    """The bus (one panel) of ``port`` in this event loop, made by its first reader."""
    key = (id(asyncio.get_running_loop()), port)
    bus = _buses.get(key)
    if bus is None:
        bus = _buses[key] = OsdpBus(key, port, settings)
    return bus


KEYPAD_EVENT_EVERY = 1.0  # a reader pressing keys without end costs one event a second


class OsdpReader(Reader):
    """An OSDP reader at its address on a shared RS-485 bus (see the module docstring)."""

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
        self._bus: OsdpBus | None = None
        self._restarts = Backoff(settings.restart_min, settings.restart_max)
        self._enroll_requested = False
        self._enrolled = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # kept so they are not collected early
        self._keys_pending = 0
        self._keys_next = 0.0
        self._keys_flush: asyncio.TimerHandle | None = None

    @property
    def where(self) -> str:
        """How an installer finds this reader: address and port."""
        return f"reader at address {self.address} on {self.port}"

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Join the bus's panel and yield each card read of this reader."""
        bus = bus_for(self.port, self.settings)
        refused = bus.join(self)
        if refused is not None:
            self.report(False, refused)
        else:
            self._bus = bus
        try:
            while True:
                yield await self._queue.get()
        finally:
            await self._leave()

    async def enroll(self, within: float = 30.0) -> bool:
        """Install mode now: set a new SCBK on a reader that is in its install mode.

        Needs :meth:`reads` running. True once the Secure Channel works with the new key.
        """
        self._enrolled.clear()
        self._enroll_requested = True
        if self._bus is not None:
            self._bus.rebuild()
        try:
            await asyncio.wait_for(self._enrolled.wait(), within)
        except TimeoutError:
            return False
        return True

    async def feedback(self, granted: bool) -> None:
        """Green LED and one beep on grant, red LED and three beeps on deny."""
        pd = self._pd()
        if pd is None or not pd.secure or pd.session.panel is None:
            return  # nothing is said in clear, and a missing reader has no LED
        commands = [self._led(granted)]
        if self.settings.buzzer:
            commands.append(self._buzz(granted))
        await asyncio.to_thread(self._submit, pd.session.panel, commands)

    async def close(self) -> None:
        """Leave the bus (the last reader on it stops the panel and releases the port)."""
        await self._leave()

    async def _leave(self) -> None:
        bus, self._bus = self._bus, None
        if self._keys_flush is not None:
            self._keys_flush.cancel()
            self._keys_flush = None
        if bus is not None:
            await bus.leave(self)

    def _pd(self) -> PdState | None:
        return None if self._bus is None else self._bus.pd(self)

    # --- what the bus asks of its readers ---------------------------------------------

    async def panel_key(self) -> tuple[bytes, bool] | None:
        """(key, install mode) for the next panel; None when there is no key to use."""
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
            return None
        elif self.settings.install_mode:
            log.warning(
                "reader %s: install_mode is set but it has a key already; remove "
                "install_mode from its options (delete %s to enroll again)",
                self.id,
                self.keys.path,
            )
        self._enroll_requested = False
        return key, install

    def needs_restart(self, pd: PdState, now: float) -> bool:
        """Whether the reader's PD is to be started again (it dropped, refused the key,
        or never answered within ``online_timeout``)."""
        if pd.dropped or pd.sc_failed:
            return True
        if not pd.seen_online and now - pd.since >= self.settings.online_timeout:
            if not pd.answered:
                self.report(False, self._no_answer())
            return True
        return False

    def restart_delay(self, pd: PdState) -> float:
        """The pause before its PD is started again: 1 s doubling to 30 s, from 1 s again
        once it had worked (a reader that reboots is read again within seconds)."""
        if pd.worked:
            self._restarts.reset()
        return self._restarts.next_delay()

    def _no_answer(self) -> str:
        return (
            f"no answer from the OSDP {self.where}: check the RS-485 wiring (A/B), "
            f"the reader's address and its baud rate ({self.settings.baudrate})"
        )

    # --- what libosdp says (on the loop) --------------------------------------------

    def on_libosdp_event(self, pd: PdState, event: dict[str, Any]) -> None:
        """One libosdp event of this reader's PD."""
        try:
            kind = event.get("event")
            if kind == osdp.Event.Notification:
                self._on_notification(pd, event)
            elif kind == osdp.Event.CardRead:
                self._on_card(pd, event)
            elif kind == osdp.Event.KeyPress:
                self._on_keys(pd, event)
            elif kind == osdp.Event.Status:
                self._on_status(pd, event)
            else:
                log.debug("reader %s: event %s ignored", self.id, kind)
        except Exception:  # a surprise from the binding must not stop the reader
            log.exception("reader %s: libosdp event not understood", self.id)

    def _on_notification(self, pd: PdState, event: dict[str, Any]) -> None:
        kind, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        if kind == NOTIFY_SC_STATUS:
            self._on_sc_status(pd, active=bool(arg0), default_key=bool(arg1))
        elif kind == NOTIFY_PD_STATUS:
            pd.online = bool(arg0)
            if pd.online:
                pd.seen_online = True
            elif pd.seen_online:
                pd.dropped = True
            self._report_pd(pd)

    def _on_sc_status(self, pd: PdState, *, active: bool, default_key: bool) -> None:
        was_secure = pd.secure
        pd.secure = active and not default_key
        if pd.secure and not was_secure:
            pd.online_at = asyncio.get_running_loop().time()
            pd.worked = True
        if not active and was_secure:
            pd.dropped = True  # the reader rebooted or lost its session
        elif not active and not pd.installing:
            # libosdp says "inactive" also when a reader that never answered times out:
            # only a reader that answered (a status came with it) refused the key
            pd.sc_failed = True
        if pd.secure and pd.installing:
            pd.installing = False
            task = asyncio.get_running_loop().create_task(self._finish_install(pd))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._report_pd(pd)

    def _report_pd(self, pd: PdState) -> None:
        if pd.installing:
            if pd.online and not pd.secure:
                self.report(
                    False,
                    f"install mode: {self.where} did not take the default key: put the reader "
                    "itself in install mode (see its manual) and try again",
                )
            return
        if pd.online and pd.secure:
            self.report(True)
        elif pd.sc_failed and not pd.answered:
            self.report(False, self._no_answer())
        elif pd.sc_failed:
            self.report(
                False,
                f"{self.where} refuses the secure channel: wrong SCBK? run install mode",
            )
        elif pd.online:  # Secure Channel dropped after working: reads wait for it
            self.report(False, f"the secure channel with {self.where} dropped; restarting it")
        elif self.health.online:
            self.report(False, f"{self.where} went offline: not answering")

    async def _finish_install(self, pd: PdState) -> None:
        """Keep the new key, then forbid SCBK-D and clear text again for this reader."""
        panel = pd.session.panel
        assert panel is not None
        try:
            await asyncio.to_thread(self.keys.commit_pending)
            await asyncio.to_thread(panel.set_flag, self.address, osdp.LibFlag.EnforceSecure)
        except OSError as exc:
            self.report(False, f"the new OSDP key cannot be saved in {self.keys.path}: {exc}")
            if self._bus is not None:
                self._bus.rebuild()
            return
        log.info("reader %s: new Secure Channel key set (install mode done)", self.id)
        self._enrolled.set()

    def _on_card(self, pd: PdState, event: dict[str, Any]) -> None:
        if not pd.secure:
            self.dropped += 1
            log.warning("reader %s: card read without Secure Channel dropped", self.id)
            return
        since = pd.online_at
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

    def _on_keys(self, pd: PdState, event: dict[str, Any]) -> None:
        """Keypad input is reported (``reader_keypad``: how many keys), never its digits,
        which may be a PIN; at most one event a second per reader."""
        data = event.get("data")
        if not pd.secure or not isinstance(data, bytes | bytearray) or not data:
            log.info("reader %s: keypad input without Secure Channel dropped", self.id)
            return
        self._keys_pending += len(data)
        if self._keys_flush is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._keys_next - loop.time())
            self._keys_flush = loop.call_later(delay, self._flush_keys)

    def _flush_keys(self) -> None:
        self._keys_flush = None
        keys, self._keys_pending = self._keys_pending, 0
        self._keys_next = asyncio.get_running_loop().time() + KEYPAD_EVENT_EVERY
        self.notice("reader_keypad", {"keys": keys})

    def _on_status(self, pd: PdState, event: dict[str, Any]) -> None:
        """The reader's local status (osdp_LSTATR): its tamper switch and its power."""
        if event.get("type") != osdp.StatusReportType.Local:
            log.debug("reader %s: status report %s ignored", self.id, event.get("type"))
            return
        report = event.get("report")
        if not pd.secure or not isinstance(report, bytes | bytearray) or len(report) < 2:
            log.warning("reader %s: local status without Secure Channel or data dropped", self.id)
            return
        tamper, power_fault = bool(report[0]), bool(report[1])
        self.alert("tamper", tamper, "tamper", {"state": "open" if tamper else "closed"})
        self.alert(
            "power fault",
            power_fault,
            "reader_power",
            {"state": "failed" if power_fault else "restored"},
        )

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

    def _submit(self, panel: osdp.ControlPanel, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            try:
                if not panel.submit_command(self.address, command):
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


def _close_unused(opening: asyncio.Future[Session]) -> None:
    """A panel set up for nobody (its start was cancelled): free the port."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().channel.close()


def _stop_panel(session: Session) -> None:
    """Stop libosdp's thread and close the port (blocking: run in a worker thread)."""
    if session.panel is not None:
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
