"""A PN532 NFC module on a pty, speaking the real HSU protocol (checked against libnfc).

It answers as a module does: it sleeps until woken (``55 55 00...``) and needs
``wake_delay`` to come up (a command sent with the wake-up, or too soon after it, is lost,
as on real breakouts), starts in low-battery mode until SAMConfiguration, ACKs every
well-formed command, then replies (normal or extended frames), resends on NACK, aborts a
waiting command on a host ACK, and ignores frames with bad checksums. A card stays
selected after InListPassiveTarget and does not answer another one until it is released
(InRelease/InDeselect) or leaves the field; a phone is activated as ISO 14443-4 (RATS,
its ATS reported) only once SetParameters has switched automatic RATS on.

The wire is parsed and built here, by the simulator's own code (:class:`HostStream`,
:func:`chip_frame`), never by the driver's ``pn532_frames``: a mistake there must not
be mirrored here. Cards are placed and removed on command; a
"phone" is an ISO 14443-4 target offering an NDEF Type 4 tag with a text record (a
phone pass, as host card emulation sends it). Faults on command: silence (a lock-up,
until :meth:`recover` powers it back up asleep), garbage and half frames on the line,
a bad checksum on the next reply; :meth:`unplug` / :meth:`plug` make the port vanish
and come back.

Run it by hand: ``accessgw simulate pn532 --uid 04A1B2C3`` prints the pty path, then
reads commands from stdin (``place UID``, ``phone TEXT``, ``remove``, ``fault silence``,
``fault garbage``, ``fault checksum``, ``recover``, ``unplug``, ``plug``, ``quit``).
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from simulators.pty import Pty

# --- the HSU wire as the chip sees it (PN532 User Manual §6.2), the simulator's own code ---

ACK = bytes.fromhex("0000FF00FF00")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")  # "syntax error" application frame
TFI_HOST, TFI_CHIP = 0xD4, 0xD5
MAX_BODY = 265  # TFI + 264 bytes of data
# command codes (User Manual §7)
DIAGNOSE, GET_FIRMWARE_VERSION, GET_GENERAL_STATUS = 0x00, 0x02, 0x04
READ_REGISTER, WRITE_REGISTER, SET_PARAMETERS = 0x06, 0x08, 0x12
SAM_CONFIGURATION, POWER_DOWN, RF_CONFIGURATION = 0x14, 0x16, 0x32
IN_DATA_EXCHANGE, IN_COMMUNICATE_THRU, IN_DESELECT = 0x40, 0x42, 0x44
IN_LIST_PASSIVE_TARGET, IN_RELEASE, IN_SELECT = 0x4A, 0x52, 0x54
IN_JUMP_FOR_DEP, IN_AUTO_POLL = 0x56, 0x60
AUTO_RATS = 0x10  # SetParameters flag fAutomaticRATS
NDEF_APP = bytes.fromhex("D2760000850101")
CC_FILE = bytes.fromhex("E103")
SW_OK = b"\x90\x00"


def chip_frame(code: int, params: bytes) -> bytes:
    """The chip's answer to ``code``: D5, code + 1, params; extended above 254 bytes."""
    body = bytes((TFI_CHIP, (code + 1) & 0xFF)) + params
    dcs = (-sum(body)) & 0xFF
    if len(body) <= 0xFF:
        head = bytes((len(body), (-len(body)) & 0xFF))
    else:
        hi, lo = len(body) >> 8, len(body) & 0xFF
        head = bytes((0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF))
    return b"\x00\x00\xff" + head + body + bytes((dcs, 0x00))


@dataclass(frozen=True)
class HostItem:
    """What the host sent: ``ack``, ``nack`` or a ``frame`` (TFI and data)."""

    kind: str
    tfi: int = 0
    data: bytes = b""


class HostStream:
    """Finds the host's frames in the bytes from the line; bad ones are skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[HostItem]:
        """Take bytes; the complete items found so far."""
        self._buf += data
        items: list[HostItem] = []
        while True:
            start = self._buf.find(b"\x00\xff")
            if start < 0:
                del self._buf[: max(0, len(self._buf) - 1)]  # keep a trailing 00
                return items
            del self._buf[:start]
            item, used = self._one()
            if used == 0:  # incomplete: wait for more bytes
                if len(self._buf) > 2 * MAX_BODY + 16:
                    del self._buf[:2]
                    continue
                return items
            del self._buf[:used]
            if item is not None:
                items.append(item)

    def _one(self) -> tuple[HostItem | None, int]:
        """(item, bytes used) at a start code; used 0 while incomplete, 2 for a bad one."""
        b = self._buf
        if len(b) < 4:
            return None, 0
        if b[2] == 0x00 and b[3] == 0xFF:
            return HostItem("ack"), 4
        if b[2] == 0xFF and b[3] == 0x00:
            return HostItem("nack"), 4
        if b[2] == 0xFF and b[3] == 0xFF:  # extended: FF FF LENM LENL LCS
            if len(b) < 7:
                return None, 0
            length, head = (b[4] << 8) | b[5], 7
            if (b[4] + b[5] + b[6]) & 0xFF:
                return None, 2
        else:
            length, head = b[2], 4
            if (b[2] + b[3]) & 0xFF:
                return None, 2
        if not 1 <= length <= MAX_BODY:
            return None, 2
        if len(b) < head + length + 1:
            return None, 0
        body = bytes(b[head : head + length])
        if (sum(body) + b[head + length]) & 0xFF:
            return None, 2  # bad data checksum: the chip ignores the frame
        return HostItem("frame", body[0], body[1:]), head + length + 1


FIRMWARE = bytes((0x32, 0x01, 0x06, 0x07))  # PN532 v1.6, ISO 14443A/B + 18092
PHONE_ATS = bytes.fromhex("78807002")
NDEF_FILE = bytes.fromhex("E104")
GARBAGE = bytes(range(1, 0xFF)) + b"\x55\xaa" * 8  # no 00 FF in it: no start code
HALF_FRAME = bytes.fromhex("0000FF10F0D54B01")  # a header promising 16 bytes, then nothing
LONG_HALF_FRAME = bytes.fromhex("0000FFF010D54B01")  # promises 240: only quiet ends it


def ndef_text_message(text: str, lang: str = "en") -> bytes:
    """An NDEF message of one well-known Text record (UTF-8), short or long form."""
    payload = bytes((len(lang),)) + lang.encode("ascii") + text.encode("utf-8")
    if len(payload) <= 0xFF:
        return bytes((0xD1, 0x01, len(payload))) + b"T" + payload
    return bytes((0xC1, 0x01)) + len(payload).to_bytes(4, "big") + b"T" + payload


@dataclass
class Card:
    """A target in the field: a plain card (UID only) or a phone offering NDEF."""

    uid: bytes
    atqa: bytes = b"\x00\x04"
    sak: int = 0x08  # MIFARE Classic 1K
    ats: bytes = b""
    ndef: bytes | None = None  # the NDEF file content (NLEN + message) of a phone

    def target_data(self, tg: int = 1) -> bytes:
        """Tg ATQA SAK UIDLen UID [ATSLen ATS], as InListPassiveTarget reports it."""
        data = bytes((tg,)) + self.atqa + bytes((self.sak, len(self.uid))) + self.uid
        if self.ats:
            data += bytes((len(self.ats) + 1,)) + self.ats
        return data


def plain_card(uid: str) -> Card:
    """A MIFARE Classic card with this UID (hex)."""
    raw = bytes.fromhex(uid)
    return Card(raw, atqa=b"\x00\x44" if len(raw) == 7 else b"\x00\x04")


def phone(text: str, uid: str | None = None) -> Card:
    """A phone in host card emulation, offering ``text`` as an NDEF text record."""
    raw = bytes.fromhex(uid) if uid else b"\x08" + secrets.token_bytes(3)
    message = ndef_text_message(text)
    return Card(raw, sak=0x20, ats=PHONE_ATS, ndef=len(message).to_bytes(2, "big") + message)


@dataclass
class _Apdu:
    """The phone's NDEF application state."""

    app: bool = False
    file: bytes = b""
    max_read: int = 0xFF

    def cc(self, ndef_size: int) -> bytes:
        return (
            b"\x00\x0f\x20"
            + self.max_read.to_bytes(2, "big")
            + b"\x00\xff\x04\x06"
            + NDEF_FILE
            + max(ndef_size, 2).to_bytes(2, "big")
            + b"\x00\xff"
        )


@dataclass
class _Pending:
    """A command waiting for a card (InListPassiveTarget with endless retries, InAutoPoll)."""

    code: int
    params: bytes
    deadline: float | None = None


@dataclass
class _Chip:
    """The module's state."""

    power: str = "asleep"  # asleep | waking | lowvbat | normal
    awake_at: float = 0.0  # monotonic time a waking chip can take commands
    retries: int = 0xFF  # MxRtyPassiveActivation: 0xFF = wait for a card forever
    auto_rats: bool = False  # SetParameters fAutomaticRATS: off after power-up
    rf_on: bool = True  # the RF field (RFConfiguration item 1; off after PowerDown)
    registers: dict[int, int] = field(default_factory=dict)
    selected: Card | None = None
    apdu: _Apdu = field(default_factory=_Apdu)


class Pn532Simulator:
    """A PN532 on a pty, in its own thread. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        uid: str | None = None,
        *,
        link: Path | str | None = None,
        firmware: bytes = FIRMWARE,
        max_read: int = 0xFF,
        wake_delay: float = 0.001,
        baudrate: int = 115200,
    ) -> None:
        self.firmware = firmware
        # a woken chip takes commands only after this; 1 ms is covered by the 14 zeros
        # of a wake-up preamble at 115200 baud (1.2 ms); slow breakouts need more
        self.wake_delay = wake_delay
        self.baudrate = baudrate
        self.max_read = max_read
        self.card: Card | None = plain_card(uid) if uid else None
        self.commands: list[int] = []  # command codes received, in order (for tests)
        self.answered_at = 0.0  # perf_counter() as a target answer is written
        self._link = link
        self.pty = Pty(link)
        self._lock = threading.RLock()
        self._parser = HostStream()
        self._chip = _Chip(apdu=_Apdu(max_read=max_read))
        self._pending: _Pending | None = None
        self._last_reply = b""
        self._silent = False
        self._garbage_next = False
        self._half_next = False
        self._corrupt_next = False
        self._holding: set[int] = set()  # command codes whose answers are held back
        self._held: list[tuple[int, bytes]] = []  # (code, answer) not sent yet
        self._hangup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The port path a driver opens (the symlink if one was given)."""
        return self.pty.path

    def start(self) -> Pn532Simulator:
        """Answer on the pty from a background thread."""
        self._thread = threading.Thread(target=self._run, name="pn532-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pty."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.pty.close()

    def __enter__(self) -> Pn532Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """The module goes away: the pty hangs up and the link is removed."""
        self._hangup.set()
        deadline = time.monotonic() + 5
        while not self.pty.closed and time.monotonic() < deadline:
            time.sleep(0.005)

    def plug(self) -> None:
        """The module comes back (powered up, asleep) on a new pty behind the same link."""
        with self._lock:
            self._reset_chip()
            self._parser = HostStream()
            fresh = Pty(self._link)
            # hang-up over before the new pty is seen: the thread must never take the new
            # pty for the one to close (it reads self.pty without the lock)
            self._hangup.clear()
            self.pty = fresh

    # --- the field and faults -----------------------------------------------------------

    def place(self, card: Card | str) -> None:
        """Put a card (or a UID, hex) on the reader."""
        with self._lock:
            self.card = plain_card(card) if isinstance(card, str) else card
            self._chip.selected = None
            if self._pending is not None:
                self._answer_pending()

    def remove(self) -> None:
        """Take the card away."""
        with self._lock:
            self.card = None
            self._chip.selected = None

    def fault(self, kind: str) -> None:
        """``silence`` (lock-up), ``garbage`` (now, and before the next reply), ``half``
        (a long half frame before the next reply), ``checksum`` (next reply has a bad
        DCS), ``off``/``recover`` (power back up, asleep)."""
        with self._lock:
            if kind == "silence":
                self._silent = True
            elif kind == "garbage":
                self._garbage_next = True
                self.pty.write(GARBAGE)
            elif kind == "checksum":
                self._corrupt_next = True
            elif kind == "half":
                self._half_next = True
            elif kind in ("off", "recover"):
                self.recover()
            else:
                raise ValueError(f"unknown fault {kind!r}: silence, garbage, half, checksum, off")

    def hold_answers(self, code: int) -> None:
        """Hold back the answers to command ``code`` (ACKed and carried out at once) until
        :meth:`let_answers_go`: a chip slow to answer it, for tests of what waits for what."""
        with self._lock:
            self._holding.add(code)

    def let_answers_go(self) -> None:
        """Stop holding answers back, and send those held, in order."""
        with self._lock:
            self._holding.clear()
            held, self._held = self._held, []
            for code, answer in held:
                self._send(code, answer)

    def recover(self) -> None:
        """End a lock-up the way a power cycle does: the chip answers again, asleep."""
        with self._lock:
            self._silent = False
            self._reset_chip()

    def _reset_chip(self) -> None:
        self._chip = _Chip(apdu=_Apdu(max_read=self.max_read))
        self._pending = None

    # --- the wire -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            pty = self.pty
            if self._hangup.is_set():
                pty.close()
                time.sleep(0.01)
                continue
            data = pty.read(0.02)
            if data is None:
                time.sleep(0.01)
                continue
            with self._lock:
                if data:
                    self._receive(data)
                self._expire_pending()

    def _write(self, data: bytes) -> None:
        self.pty.write(data)

    def _receive(self, data: bytes) -> None:
        if self._silent:
            self._parser.feed(data)
            return
        data = self._heard(data)
        for item in self._parser.feed(data):
            self._on_item(item)

    def _heard(self, data: bytes) -> bytes:
        """What of ``data`` the chip hears. Asleep, it wakes on the 55 byte and takes
        ``wake_delay`` to come up: bytes arriving before that are lost. A pty delivers a
        burst at once, so each byte of a burst is placed on the line at the baud rate
        after the 55 (the preamble's zeros are what give the chip its time)."""
        chip, now = self._chip, time.monotonic()
        if chip.power == "asleep":
            wake = data.find(0x55)
            if wake < 0:
                return b""
            chip.power, chip.awake_at = "waking", now + self.wake_delay
            byte_time = 10 / self.baudrate
            late = wake + 1 + max(0, math.ceil(self.wake_delay / byte_time - 1))
            if late >= len(data):
                return b""
            chip.power = "lowvbat"
            return data[late:]
        if chip.power == "waking":
            if now < chip.awake_at:
                return b""  # still coming up: this command is lost too
            chip.power = "lowvbat"
        return data

    def _on_item(self, item: HostItem) -> None:
        if item.kind == "ack":
            self._pending = None  # the host aborts the running command
        elif item.kind == "nack":
            if self._last_reply:
                self._write(self._last_reply)
        elif item.kind == "frame" and item.tfi == TFI_HOST and item.data:
            self._on_command(item.data[0], item.data[1:])

    def _on_command(self, code: int, params: bytes) -> None:
        if self._chip.power == "lowvbat" and code != SAM_CONFIGURATION:
            return  # still in low-battery mode: SAMConfiguration must come first
        self.commands.append(code)
        self._write(ACK)
        answer = self._handle(code, params)
        if answer is not None and code in self._holding:
            self._held.append((code, answer))
        elif answer is not None:
            self._send(code, answer)

    def _send(self, code: int, params: bytes) -> None:
        frame = chip_frame(code, params)
        self._last_reply = frame
        if self._garbage_next:
            self._garbage_next = False
            self._write(GARBAGE + HALF_FRAME)
        if self._half_next:
            self._half_next = False
            self._write(LONG_HALF_FRAME)
            time.sleep(0.1)  # the rest of that frame never comes: the line goes quiet
        if self._corrupt_next:
            self._corrupt_next = False
            frame = frame[:-2] + bytes(((frame[-2] + 1) & 0xFF, 0x00))
        if code in (IN_LIST_PASSIVE_TARGET, IN_AUTO_POLL) and params[:1] != b"\x00":
            # stamped just before the write: the driver cannot see the bytes any earlier
            self.answered_at = time.perf_counter()
        self._write(frame)

    # --- commands ---------------------------------------------------------------------------

    def _handle(self, code: int, params: bytes) -> bytes | None:
        chip = self._chip
        if code == SET_PARAMETERS and params:
            chip.auto_rats = bool(params[0] & AUTO_RATS)
        simple = {
            GET_FIRMWARE_VERSION: self.firmware,
            SET_PARAMETERS: b"",
            IN_COMMUNICATE_THRU: b"\x01",  # timeout: no type B / raw target here
            IN_JUMP_FOR_DEP: b"\x01",  # timeout: no NFC-DEP target
            GET_GENERAL_STATUS: b"\x00\x00\x00\x00",
        }
        if code in simple:
            return simple[code]
        if code == DIAGNOSE:
            return self._diagnose(params)
        if code == SAM_CONFIGURATION:
            chip.power = "normal"
            return b""
        if code == POWER_DOWN:
            chip.power, chip.rf_on, chip.selected = "asleep", False, None
            return b"\x00"
        if code == READ_REGISTER:
            pairs = range(0, len(params) - 1, 2)
            return bytes(chip.registers.get((params[i] << 8) | params[i + 1], 0) for i in pairs)
        if code == WRITE_REGISTER:
            for i in range(0, len(params) - 2, 3):
                chip.registers[(params[i] << 8) | params[i + 1]] = params[i + 2]
            return b""
        if code == RF_CONFIGURATION:
            if params[:1] == b"\x05" and len(params) >= 4:
                chip.retries = params[3]
            if params[:1] == b"\x01" and len(params) >= 2:
                chip.rf_on = bool(params[1] & 0x01)
                if not chip.rf_on:
                    chip.selected = None  # no field: every target is reset
            return b""
        if code in (IN_RELEASE, IN_DESELECT):
            chip.selected = None
            return b"\x00"
        if code == IN_SELECT:
            return b"\x00" if self.card is not None else b"\x27"
        if code == IN_LIST_PASSIVE_TARGET:
            return self._list_targets(params)
        if code == IN_AUTO_POLL:
            return self._auto_poll(params)
        if code == IN_DATA_EXCHANGE:
            return self._data_exchange(params)
        self._syntax_error()
        return None

    def _syntax_error(self) -> None:
        """An unknown or malformed command: the chip answers with its error frame."""
        self._last_reply = ERROR_FRAME
        self._write(ERROR_FRAME)

    def _diagnose(self, params: bytes) -> bytes:
        if params[:1] == b"\x06":  # card presence
            return b"\x00" if self._chip.selected is not None else b"\x01"
        return params  # communication line test: echo NumTst and the data

    def _list_targets(self, params: bytes) -> bytes | None:
        if len(params) < 2 or params[1] != 0x00:
            return b"\x00"  # only 106 kbps type A targets exist here
        # a card still selected from the last listing stays in its ACTIVE state and does
        # not answer the REQA of a new one: it is found again only after a release
        if self.card is None or self._chip.selected is self.card:
            if self._chip.retries == 0xFF:
                self._pending = _Pending(IN_LIST_PASSIVE_TARGET, params)
                return None
            return b"\x00"
        return self._select()

    def _select(self) -> bytes:
        assert self.card is not None
        self._chip.rf_on = True  # listing switches the field on
        self._chip.selected = self.card
        self._chip.apdu = _Apdu(max_read=self.max_read)
        return b"\x01" + self._target_data(self.card)

    def _target_data(self, card: Card) -> bytes:
        """What the chip reports: without automatic RATS, no ATS (the phone is not
        activated as ISO 14443-4 and will not answer APDUs)."""
        if card.ats and not self._chip.auto_rats:
            return replace(card, ats=b"").target_data()
        return card.target_data()

    def _auto_poll(self, params: bytes) -> bytes | None:
        if len(params) < 3:
            self._syntax_error()
            return None
        if self.card is not None:
            return self._auto_poll_answer(params)
        period = max(params[1], 1) * 0.15
        deadline = None if params[0] == 0xFF else time.monotonic() + params[0] * period
        self._pending = _Pending(IN_AUTO_POLL, params, deadline)
        return None

    def _auto_poll_answer(self, params: bytes) -> bytes:
        assert self.card is not None
        types = params[2:]
        kind = 0x20 if self.card.ats and 0x20 in types else (0x10 if 0x10 in types else 0x00)
        data = self._target_data(self.card)
        self._chip.selected = self.card
        self._chip.apdu = _Apdu(max_read=self.max_read)
        return bytes((1, kind, len(data))) + data

    def _answer_pending(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        if pending.code == IN_AUTO_POLL:
            self._send(pending.code, self._auto_poll_answer(pending.params))
        else:
            self._send(pending.code, self._select())

    def _expire_pending(self) -> None:
        pending = self._pending
        if pending and pending.deadline is not None and time.monotonic() >= pending.deadline:
            self._pending = None
            self._send(pending.code, b"\x00")

    # --- the phone's NDEF application -------------------------------------------------

    def _data_exchange(self, params: bytes) -> bytes:
        selected = self._chip.selected
        if not params or params[0] != 1 or selected is None or self.card is not selected:
            return b"\x01"  # timeout: the target left the field
        if selected.ndef is None or not self._chip.auto_rats:
            return b"\x01"  # a plain card, or a phone never activated (no RATS): no APDUs
        return b"\x00" + self._apdu(params[1:], selected.ndef)

    def _apdu(self, apdu: bytes, ndef: bytes) -> bytes:
        state = self._chip.apdu
        if len(apdu) < 4:
            return b"\x67\x00"
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        if ins == 0xA4 and p1 == 0x04:
            lc = apdu[4] if len(apdu) > 4 else 0
            state.app = apdu[5 : 5 + lc] == NDEF_APP
            state.file = b""
            return SW_OK if state.app else b"\x6a\x82"
        if ins == 0xA4 and p1 == 0x00 and state.app:
            fid = apdu[5:7]
            state.file = fid if fid in (CC_FILE, NDEF_FILE) else b""
            return SW_OK if state.file else b"\x6a\x82"
        if ins == 0xB0 and state.file:
            content = state.cc(len(ndef)) if state.file == CC_FILE else ndef
            offset, le = (p1 << 8) | p2, (apdu[4] if len(apdu) > 4 else 0) or 256
            if offset > len(content) or le > state.max_read:
                return b"\x6b\x00" if offset > len(content) else b"\x67\x00"
            return content[offset : offset + le] + SW_OK
        return b"\x6d\x00" if ins not in (0xA4, 0xB0) else b"\x69\x86"


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate pn532``: serve a PN532 on a pty, driven from stdin."""
    parser = argparse.ArgumentParser(prog="accessgw simulate pn532", description=__doc__)
    parser.add_argument("--uid", help="a card on the reader from the start (hex)")
    parser.add_argument("--link", help="also serve the pty behind this symlink")
    args = parser.parse_args(argv)
    with Pn532Simulator(args.uid, link=args.link) as sim:
        print(f"PN532 simulator on {sim.path} (pty {sim.pty.slave_path})", flush=True)
        for line in sys.stdin:
            if not _command(sim, line.split()):
                break
    return 0


def _command(sim: Pn532Simulator, words: list[str]) -> bool:
    """Run one stdin command; False on ``quit``."""
    if not words:
        return True
    verb, rest = words[0].lower(), words[1:]
    try:
        if verb == "quit":
            return False
        if verb == "place" and rest:
            sim.place(rest[0])
        elif verb == "phone" and rest:
            sim.place(phone(" ".join(rest)))
        elif verb == "remove":
            sim.remove()
        elif verb == "fault" and rest:
            sim.fault(rest[0])
        elif verb == "recover":
            sim.recover()
        elif verb == "unplug":
            sim.unplug()
        elif verb == "plug":
            sim.plug()
            print(f"plugged in again on {sim.path} (pty {sim.pty.slave_path})", flush=True)
        else:
            print(
                "commands: place UID | phone TEXT | remove"
                " | fault silence|garbage|half|checksum|off | recover | unplug | plug | quit",
                flush=True,
            )
            return True
    except ValueError as exc:
        print(f"error: {exc}", flush=True)
        return True
    print("ok", flush=True)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
