"""PN532 NFC module over UART/HSU: the gateway's own asyncio driver.

Start-up: wake-up (``55 55`` and zeros), a pause of ``wake_delay`` (some breakouts miss a
command sent too soon), SAMConfiguration first (the chip starts in low-battery mode),
tried ``sam_attempts`` times before the module counts as silent, GetFirmwareVersion (must
be a PN532), SetParameters with automatic RATS and ATR_RES (as libnfc does at init: without
it a phone gives no ATS and the phone path never runs), then RFConfiguration so that
InListPassiveTarget gives up after ``passive_retries`` instead of waiting for a card
forever. On stop: targets released, RF field off, PowerDown.

Then it polls InListPassiveTarget every ``poll_interval``: a plain card gives
its UID (upper-case hex); an ISO 14443-4 target (a phone in host card emulation) is
asked for an NDEF text record (Type 4 tag: SELECT the NDEF application, the CC file,
the NDEF file, READ BINARY through InDataExchange), passed on as a phone pass or code.

A card held on the reader is one presentation: every target is released (InRelease)
after it was read, and the same UID is read again only after it was absent for
``absent_polls`` polls in a row, as readers do (the chip finds a released card again at
once; one never released it would not find again at all). The read is handed to the door
before the release is done: the chip lets the card go while the door decides, and the
next poll waits for it. So a tap does not wait for a round trip of no use to the decision,
and a release the chip fails to answer loses no read (it fails the next poll). Measured on
2026-12-03 with the daemon at one core (bench.daemon_load's taps, two pairs of 400 each,
alternated), from the chip's answer read to the decision handed to the journal: p50
0.92 / 0.92 -> 0.59 / 0.66 ms, p99 2.11 / 2.83 -> 0.93 / 1.22 ms; with 50 clients polling
the web UI, p99 2.08 / 4.88 -> 0.99 / 1.25 ms.

PN532 modules lock up: a command that gets no ACK or no answer is aborted (a host
ACK) and the module re-initialised; if that fails too the reader is reported offline
with a reason an installer can act on, and the port is reopened with back-off (also
after an unplugged USB adapter comes back).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator

from pydantic import Field

from drivers import pn532_frames as pf
from drivers.serial_port import (
    Backoff,
    SerialPort,
)
from gateway.errors import HardwareError, ProtocolError
from gateway.profiles import (
    DeviceAddress,
    DriverSettings,
    ReaderDriverSpec,
    ReaderSecrets,
    needs_port,
)
from gateway.readers import CredentialRead, HealthCallback, Reader, classify_code, utc_now

log = logging.getLogger(__name__)

MAX_NDEF = 2048  # a phone pass is at most 512 bytes; anything much larger is not ours
MAX_TEXT = 1024  # the longest NDEF text passed on as a code
PN532_IC = 0x32
AUTO_ATR_RES, AUTO_RATS = 0x04, 0x10  # SetParameters flags (libnfc sets both at init)
MAX_ERRORS = 5  # protocol errors in a row before the port is reopened
LAST_LOOK_S = 0.005  # past a deadline, how long to look for bytes that came in time


class ModuleSilent(HardwareError):
    """The PN532 did not ACK or did not answer a command in time."""


class Pn532Settings(DriverSettings):
    """What a PN532 profile may set (``[settings]``, overridden by a reader's ``options``)."""

    baudrate: int = Field(default=115200, gt=0)
    poll_interval: float = Field(default=0.1, ge=0, le=10)
    ack_timeout: float = Field(default=0.1, gt=0, le=10)
    reply_timeout: float = Field(default=0.5, gt=0, le=10)
    frame_gap: float = Field(default=0.05, gt=0, le=1)  # quiet time that ends a half frame
    passive_retries: int = Field(default=1, ge=0, le=0xFE)
    read_ndef: bool = True
    reopen_max: float = Field(default=5.0, gt=0, le=300)
    wake_delay: float = Field(default=0.01, ge=0, le=1)  # pause after the wake-up preamble
    sam_attempts: int = Field(default=3, ge=1, le=10)
    absent_polls: int = Field(default=2, ge=1, le=100)  # empty polls before a card is gone


class Pn532Module:
    """The chip behind an open port: commands out, ACK and answer back, with timeouts."""

    def __init__(self, port: SerialPort, settings: Pn532Settings) -> None:
        self.port = port
        self.settings = settings
        self.parser = pf.FrameParser()
        self._items: collections.deque[pf.Item] = collections.deque()
        self.dropped_frames = 0  # valid frames that answered nothing we asked
        self._code, self._acked, self._nacks = -1, False, 0
        self._one_command = asyncio.Lock()  # polls and the stop sequence never interleave

    async def start(self) -> pf.Firmware:
        """Wake the chip, leave low-battery mode, check it is a PN532, set parameters."""
        self.parser.reset()
        self._items.clear()
        await self._wake_up()
        firmware = pf.parse_firmware(await self.call(pf.GET_FIRMWARE_VERSION))
        if firmware.ic != PN532_IC:
            raise ProtocolError(
                f"the module on {self.port.path} is a {firmware}, not a PN532: "
                "pick the firmware profile for that reader"
            )
        await self.call(pf.SET_PARAMETERS, bytes((AUTO_ATR_RES | AUTO_RATS,)))
        retries = bytes((0x05, 0xFF, 0x01, self.settings.passive_retries))
        await self.call(pf.RF_CONFIGURATION, retries)
        return firmware

    async def _wake_up(self) -> None:
        """Preamble, a pause for the chip to come up, then SAMConfiguration (retried:
        a breakout that woke slowly misses the first one, as libnfc knows)."""
        for attempt in range(1, self.settings.sam_attempts + 1):
            self.port.write(pf.WAKE_UP)
            await asyncio.sleep(self.settings.wake_delay * attempt)
            try:
                await self.call(pf.SAM_CONFIGURATION, b"\x01\x14\x01")  # normal, 1 s, IRQ
                return
            except ModuleSilent:
                if attempt == self.settings.sam_attempts:
                    raise

    async def call(self, code: int, params: bytes = b"") -> bytes:
        """Run one command; the answer's parameters (after the reply code)."""
        frame = pf.command(code, params)
        async with self._one_command:
            return await self._transact(code, frame, self.settings.reply_timeout)

    async def shut_down(self) -> None:
        """Release the targets, switch the RF field off and power the chip down."""
        await self.call(pf.IN_RELEASE, b"\x00")
        await self.call(pf.RF_CONFIGURATION, b"\x01\x00")  # item 1: RF field off
        await self.call(pf.POWER_DOWN, b"\x10")  # wake up again on HSU activity

    async def _transact(self, code: int, frame: bytes, wait: float) -> bytes:
        self._items.clear()  # answers to commands given up on are stale now
        self._code, self._acked, self._nacks = code, False, 0
        self.port.write(frame)
        try:
            await self._wait_ack()
            self._acked = True
            return await self._wait_reply(code, wait)
        except ModuleSilent:
            self.port.write(pf.ACK)  # abort whatever the chip is still doing
            self.parser.reset()
            raise

    async def _wait_ack(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.ack_timeout
        while True:
            item = await self._next_item(deadline, "no ACK")
            if isinstance(item, pf.Ack):
                return
            if _answers(item, self._code):  # the ACK was damaged, the answer was not
                self._items.appendleft(item)
                return
            if isinstance(item, pf.ErrorFrame):
                raise ProtocolError(f"PN532 on {self.port.path} refused a command (syntax error)")
            self.dropped_frames += 1

    async def _wait_reply(self, code: int, wait: float) -> bytes:
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            item = await self._next_item(deadline, f"no answer to command {code:02X}")
            if isinstance(item, pf.Frame) and item.tfi == pf.CHIP_TFI and item.code == code + 1:
                return item.data[1:]
            if isinstance(item, pf.ErrorFrame):
                raise ProtocolError(f"PN532 on {self.port.path} refused command {code:02X}")
            self.dropped_frames += 1

    async def _next_item(self, deadline: float, what: str) -> pf.Item:
        loop = asyncio.get_running_loop()
        looked_again = False
        while not self._items:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if looked_again:
                    raise ModuleSilent(what)
                # The deadline may have passed while this loop was held up (a busy box), with
                # the chip's answer waiting in the port since long before: one last look, or
                # a healthy module would be re-initialised and a card missed for seconds.
                looked_again = True
                remaining = LAST_LOOK_S
            half_frame = self.parser.buffered > 1  # only ever a frame's beginning
            try:
                async with asyncio.timeout(
                    min(remaining, self.settings.frame_gap) if half_frame else remaining
                ):
                    data = await self.port.read()
            except TimeoutError:
                if half_frame:  # the line went quiet inside a frame: it was a half one
                    self._items.extend(self.parser.resync())
                continue
            bad = self.parser.bad_frames
            self._items.extend(self.parser.feed(data))
            if self.parser.bad_frames > bad:
                self._ask_again()
        return self._items.popleft()

    def _ask_again(self) -> None:
        """NACK a damaged answer (the chip sends its last answer again), twice at most.

        Only once the command was ACKed: before that, the chip's last answer is the
        previous command's, and a resend of it would be stale.
        """
        acked = self._acked or any(isinstance(item, pf.Ack) for item in self._items)
        answered = any(_answers(item, self._code) for item in self._items)
        if acked and not answered and self._nacks < 2:
            self._nacks += 1
            self.port.write(pf.NACK)

    async def first_target(self) -> pf.Target | None:
        """Poll the field once for a 106 kbps type A target."""
        data = await self.call(pf.IN_LIST_PASSIVE_TARGET, b"\x01\x00")
        try:
            targets = pf.parse_targets(data)
        except ProtocolError:
            await self.release()  # the chip selected whatever that was: let it go
            raise
        return targets[0] if targets else None

    async def apdu(self, tg: int, apdu: bytes) -> bytes:
        """Send an ISO 7816 APDU to target ``tg`` through InDataExchange; the R-APDU."""
        data = await self.call(pf.IN_DATA_EXCHANGE, bytes((tg,)) + apdu)
        if not data or data[0] & 0x3F:
            status = data[0] if data else -1
            raise ProtocolError(f"InDataExchange failed with status {status:02X}")
        return data[1:]

    async def release(self) -> None:
        """Release all targets (ends the ISO-DEP session with a phone)."""
        await self.call(pf.IN_RELEASE, b"\x00")


def _answers(item: pf.Item, code: int) -> bool:
    return isinstance(item, pf.Frame) and item.code == code + 1


async def read_ndef_text(module: Pn532Module, target: pf.Target) -> str | None:
    """The text record of the target's NDEF Type 4 tag, or None if it has none."""
    tg = target.tg

    async def ok(apdu: bytes) -> bytes:
        return pf.split_response(await module.apdu(tg, apdu))

    try:
        await ok(pf.select_app())
        await ok(pf.select_file(pf.CC_FILE))
        cc = pf.parse_cc(await ok(pf.read_binary(0, 15)))
        await ok(pf.select_file(cc.ndef_file))
        size = int.from_bytes((await ok(pf.read_binary(0, 2)))[:2], "big")
        if not 0 < size <= min(MAX_NDEF, max(cc.ndef_max_size - 2, 0)):
            return None
        step, message = min(cc.max_read, 0xFF), b""
        while len(message) < size:
            chunk = await ok(pf.read_binary(2 + len(message), min(step, size - len(message))))
            if not chunk:
                return None
            message += chunk
        return pf.ndef_text(message[:size])
    except ProtocolError as exc:
        # never the UID itself: a log line must not carry a credential value
        log.debug("no NDEF text on the %d-byte target: %s", len(target.uid_hex) // 2, exc)
        return None


class Pn532Reader(Reader):
    """A PN532 module on a serial port, polled for cards and phones."""

    def __init__(
        self,
        reader_id: str,
        port: str,
        settings: Pn532Settings | None = None,
        on_health: HealthCallback | None = None,
    ) -> None:
        super().__init__(reader_id, on_health)
        self.settings = settings or Pn532Settings()
        self.port = SerialPort(port, self.settings.baudrate)
        self.module: Pn532Module | None = None
        self._closed = False
        self.reinits = 0  # times the module was re-initialised after going silent
        self.dropped_texts = 0  # NDEF texts refused (unprintable or too long)
        self._present: str | None = None  # UID of the card on the reader now, if any
        self._absent = 0  # polls in a row that found no card
        self._releasing: asyncio.Task[None] | None = None  # the last target's InRelease

    async def reads(self) -> AsyncIterator[CredentialRead]:
        """Open, initialise and poll; on failures report offline, reopen, go on."""
        backoff = Backoff(0.1, self.settings.reopen_max)
        while not self._closed:
            try:
                await self._open()
                backoff.reset()
                async for read in self._poll():
                    yield read
            except HardwareError as exc:
                if not self._closed:
                    self.report(False, str(exc))
            finally:
                await self._forget_release()
                await self.port.close()
            if not self._closed:
                await backoff.sleep()

    async def _open(self) -> None:
        self._present, self._absent = None, 0  # a new session: nothing is known held
        await self.port.open()
        self.module = Pn532Module(self.port, self.settings)
        firmware = await self._start(self.module)
        self.report(True, f"{firmware} on {self.port.path}")

    async def _start(self, module: Pn532Module) -> pf.Firmware:
        try:
            return await module.start()
        except ModuleSilent as exc:
            raise ModuleSilent(
                f"PN532 on {self.port.path} does not answer ({exc}): check its power, that "
                "TX/RX are crossed, and that its mode switches select HSU (UART)"
            ) from exc

    async def _poll(self) -> AsyncIterator[CredentialRead]:
        assert self.module is not None
        module = self.module
        errors = 0  # protocol errors in a row
        while not self._closed:
            try:
                read = await self._poll_once(module)
                errors = 0
            except ModuleSilent:
                self.reinits += 1
                log.warning("PN532 on %s stopped answering: re-initialising", self.port.path)
                await self._start(module)  # fails too -> offline, reopen with back-off
                continue
            except ProtocolError as exc:
                errors += 1
                log.warning("PN532 on %s: %s", self.port.path, exc)
                if errors >= MAX_ERRORS:
                    raise ProtocolError(
                        f"PN532 on {self.port.path} keeps answering wrongly ({exc}): "
                        "check the wiring and the baud rate; reopening"
                    ) from exc
                read = None
            if read is not None:
                yield read
            await asyncio.sleep(self.settings.poll_interval)

    async def _poll_once(self, module: Pn532Module) -> CredentialRead | None:
        await self._released()
        target = await module.first_target()
        if target is None:
            self._absent += 1
            if self._absent >= self.settings.absent_polls:
                self._present = None  # it left the field: shown again, it is read again
            return None
        self._absent = 0
        try:
            if target.uid_hex == self._present:
                return None  # still held on the reader: the same presentation
            self._present = target.uid_hex
            return await self._read_target(module, target)
        finally:
            # or the chip will not find it on the next poll, which waits for it
            self._releasing = asyncio.create_task(module.release(), name=f"{self.id} release")

    async def _released(self) -> None:
        """Wait for the last target's release: its failure is this poll's."""
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            await releasing

    async def _forget_release(self) -> None:
        """The port closes: a release still under way is stopped, and how it ended is only
        logged (the chip is started afresh, every target released, when the port opens)."""
        releasing, self._releasing = self._releasing, None
        if releasing is None:
            return
        releasing.cancel()
        await asyncio.wait([releasing])
        if not releasing.cancelled() and releasing.exception() is not None:
            log.info("PN532 on %s: the last card was not released: %s", self.port.path,
                     releasing.exception())  # fmt: skip

    async def _read_target(self, module: Pn532Module, target: pf.Target) -> CredentialRead:
        at = utc_now()
        if target.iso_dep and self.settings.read_ndef:
            text = await read_ndef_text(module, target)
            text = text.strip() if text else ""
            if text and len(text) <= MAX_TEXT and text.isprintable():
                return classify_code(self.id, text, at)
            if text:  # control characters or a book: not a code, never passed on
                self.dropped_texts += 1
        return CredentialRead(reader=self.id, kind="nfc", value=target.uid_hex, at=at)

    async def close(self) -> None:
        """Stop polling; release the card, RF field off, chip powered down; free the port."""
        self._closed = True
        await self._forget_release()  # shut_down releases every target
        module = self.module
        if module is not None and self.port.is_open:
            try:
                async with asyncio.timeout(1.0):
                    await module.shut_down()
            except (HardwareError, TimeoutError) as exc:  # it may be unplugged: go on
                log.info("PN532 on %s: not powered down at stop: %s", self.port.path, exc)
        await self.port.close()


def create_reader(
    reader_id: str,
    address: DeviceAddress,
    settings: Pn532Settings,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
) -> Reader:
    """The driver factory named by ``driver = "pn532"`` profiles."""
    assert address.port is not None  # checked by needs_port
    return Pn532Reader(reader_id, address.port, settings, on_health)


READER_DRIVER = ReaderDriverSpec(Pn532Settings, create_reader, needs_port)
