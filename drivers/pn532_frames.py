"""PN532 host-link frames (UART/HSU), pure: build them, and find them in a byte stream.

Normal frame ``00 00 FF LEN LCS TFI PD... DCS 00`` (LEN counts TFI + PD, LEN+LCS = 0 and
TFI+ΣPD+DCS = 0 mod 256); extended frame ``00 00 FF FF FF LENM LENL LCS TFI PD... DCS 00``;
ACK ``00 00 FF 00 FF 00``; NACK ``00 00 FF FF 00 00``; the chip's application-level error
frame is a normal frame with TFI ``7F``. TFI is ``D4`` to the chip and ``D5`` from it; a
reply's command code is the command's + 1.

:class:`FrameParser` is a streaming parser for either direction: it never raises on input,
keeps a bounded buffer, resynchronises after garbage or half frames, and only ever returns
frames whose length and data checksums were right. Also here: decoding the answers the
driver relies on (firmware version, passive targets) and the NDEF Type 4 tag pieces
(APDUs, capability container, text record), all as plain functions of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.errors import ProtocolError

HOST_TFI = 0xD4
CHIP_TFI = 0xD5
ERROR_TFI = 0x7F

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")
WAKE_UP = b"\x55\x55" + bytes(14)

MAX_LEN = 265  # TFI + 264 data bytes: the largest frame a PN532 takes or sends
MAX_FRAME_BYTES = 8 + MAX_LEN + 2  # extended header + body + DCS + postamble
CHUNK = 512  # bytes fed to the parser at a time, so its buffer stays bounded
MAX_BUFFER = MAX_FRAME_BYTES + CHUNK

# Command codes (PN532 User Manual, 7.1)
DIAGNOSE = 0x00
GET_FIRMWARE_VERSION = 0x02
GET_GENERAL_STATUS = 0x04
READ_REGISTER = 0x06
WRITE_REGISTER = 0x08
SET_PARAMETERS = 0x12
SAM_CONFIGURATION = 0x14
POWER_DOWN = 0x16
RF_CONFIGURATION = 0x32
IN_DATA_EXCHANGE = 0x40
IN_COMMUNICATE_THRU = 0x42
IN_DESELECT = 0x44
IN_LIST_PASSIVE_TARGET = 0x4A
IN_RELEASE = 0x52
IN_SELECT = 0x54
IN_JUMP_FOR_DEP = 0x56
IN_AUTO_POLL = 0x60


@dataclass(frozen=True, slots=True)
class Ack:
    """The chip (or host) took the frame; the answer follows."""


@dataclass(frozen=True, slots=True)
class Nack:
    """The peer asks for the last frame again."""


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """The chip's application-level error (syntax error in the command)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """An information frame: ``tfi`` and the data after it (command code first)."""

    tfi: int
    data: bytes

    @property
    def code(self) -> int | None:
        """The command (or reply) code, if the frame has data."""
        return self.data[0] if self.data else None


Item = Ack | Nack | ErrorFrame | Frame
_Outcome = tuple[Item, int] | Literal[False] | None  # found / invalid / need more bytes


def build_frame(data: bytes, tfi: int = HOST_TFI) -> bytes:
    """A normal frame, or an extended one when TFI + data is longer than 255 bytes."""
    length = len(data) + 1
    if length > MAX_LEN:
        raise ValueError(f"PN532 frame data is {len(data)} bytes, at most {MAX_LEN - 1}")
    dcs = (-(tfi + sum(data))) & 0xFF
    if length <= 0xFF:
        head = bytes((0x00, 0x00, 0xFF, length, (-length) & 0xFF))
    else:
        hi, lo = length >> 8, length & 0xFF
        head = bytes((0x00, 0x00, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF))
    return head + bytes((tfi,)) + data + bytes((dcs, 0x00))


def command(code: int, params: bytes = b"") -> bytes:
    """A host-to-chip frame for ``code`` with ``params``."""
    return build_frame(bytes((code,)) + params, HOST_TFI)


def reply(code: int, params: bytes = b"") -> bytes:
    """A chip-to-host frame answering command ``code`` (the reply code is ``code + 1``)."""
    return build_frame(bytes(((code + 1) & 0xFF,)) + params, CHIP_TFI)


class FrameParser:
    """Finds frames in a byte stream; never raises, never keeps more than MAX_BUFFER bytes.

    Counters say what was thrown away: ``dropped_bytes`` (non-zero bytes outside any frame;
    zeros are preamble/postamble/wake-up padding, and ``55`` is the HSU wake-up byte) and
    ``bad_frames`` (a header or checksum that did not add up).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped_bytes = 0
        self.bad_frames = 0

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget everything buffered (after a command was given up on)."""
        self._count_dropped(self._buf)
        self._buf.clear()

    def resync(self) -> list[Item]:
        """The line went quiet in the middle of a frame: it was a half frame.

        A chip never pauses inside a frame, so the frame being waited for is dropped
        (counted in ``bad_frames``) and whatever came after its start code is parsed
        again: a real frame it had swallowed is found.
        """
        items: list[Item] = []
        if self._buf:
            self.bad_frames += 1
            del self._buf[:2]
            self._parse(items)
        return items

    def feed(self, data: bytes) -> list[Item]:
        """Take more bytes; return the complete, valid frames found so far, in order."""
        items: list[Item] = []
        for start in range(0, len(data), CHUNK):
            self._buf += data[start : start + CHUNK]
            self._parse(items)
        return items

    def _count_dropped(self, skipped: bytes | bytearray) -> None:
        self.dropped_bytes += sum(1 for b in skipped if b not in (0x00, 0x55))

    def _skip(self, count: int) -> None:
        self._count_dropped(self._buf[:count])
        del self._buf[:count]

    def _parse(self, items: list[Item]) -> None:
        while True:
            start = self._buf.find(b"\x00\xff")
            if start < 0:
                # keep a trailing 00: it may be the first half of a start code
                keep = 1 if self._buf.endswith(b"\x00") else 0
                self._skip(len(self._buf) - keep)
                return
            self._skip(start)
            outcome = self._frame_at_start()
            if outcome is None:
                return  # incomplete: wait for more bytes
            if outcome is False:
                self.bad_frames += 1
                del self._buf[:2]  # resynchronise just after this start code
                continue
            item, size = outcome
            del self._buf[:size]
            items.append(item)

    def _frame_at_start(self) -> _Outcome:
        """Decode the frame whose start code ``00 FF`` begins the buffer.

        Returns (item, bytes used), None when more bytes are needed, False when invalid.
        """
        buf = self._buf
        if len(buf) < 4:
            return None
        length, lcs = buf[2], buf[3]
        if (length, lcs) == (0x00, 0xFF):
            return Ack(), 4
        if (length, lcs) == (0xFF, 0x00):
            return Nack(), 4
        if (length, lcs) == (0xFF, 0xFF):
            if len(buf) < 7:
                return None
            hi, lo, xlcs = buf[4], buf[5], buf[6]
            if (hi + lo + xlcs) & 0xFF:
                return False
            return self._body((hi << 8) | lo, 7)
        if (length + lcs) & 0xFF:
            return False
        return self._body(length, 4)

    def _body(self, length: int, offset: int) -> _Outcome:
        if length == 0 or length > MAX_LEN:
            return False
        end = offset + length + 1  # body + DCS
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[offset : end - 1])
        if (sum(body) + self._buf[end - 1]) & 0xFF:
            return False
        tfi, data = body[0], body[1:]
        if tfi == ERROR_TFI and not data:
            return ErrorFrame(), end
        return Frame(tfi, data), end


# --- answers the driver reads ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Firmware:
    """GetFirmwareVersion's answer: IC (0x32 = PN532), version, revision, supported types."""

    ic: int
    version: int
    revision: int
    support: int

    def __str__(self) -> str:
        return f"PN5{self.ic:02X} v{self.version}.{self.revision}"


def parse_firmware(data: bytes) -> Firmware:
    """Decode the parameters of a GetFirmwareVersion reply (after the reply code)."""
    if len(data) != 4:
        raise ProtocolError(f"GetFirmwareVersion answer has {len(data)} bytes, expected 4")
    return Firmware(*data)


@dataclass(frozen=True, slots=True)
class Target:
    """An ISO 14443-A target found by InListPassiveTarget (106 kbps type A)."""

    tg: int
    atqa: bytes
    sak: int
    uid: bytes
    ats: bytes = b""

    @property
    def uid_hex(self) -> str:
        """The UID as upper-case hex, as credentials are stored."""
        return self.uid.hex().upper()

    @property
    def iso_dep(self) -> bool:
        """The target speaks ISO 14443-4 (a smart card, or a phone emulating one)."""
        return bool(self.sak & 0x20) and bool(self.ats)


def parse_targets(data: bytes) -> list[Target]:
    """Decode InListPassiveTarget's answer for type A: ``NbTg [Tg ATQA SAK len UID [ATS]]``."""
    if not data:
        raise ProtocolError("InListPassiveTarget answer is empty")
    count, pos, targets = data[0], 1, []
    if count > 2:
        raise ProtocolError(f"InListPassiveTarget answer says {count} targets, at most 2")
    for _ in range(count):
        if len(data) < pos + 5:
            raise ProtocolError("InListPassiveTarget answer is cut short")
        tg, atqa, sak, uid_len = data[pos], data[pos + 1 : pos + 3], data[pos + 3], data[pos + 4]
        pos += 5
        if uid_len not in (4, 7, 10) or len(data) < pos + uid_len:
            raise ProtocolError(f"InListPassiveTarget answer has a bad UID length {uid_len}")
        uid = data[pos : pos + uid_len]
        pos += uid_len
        ats = b""
        if sak & 0x20 and pos < len(data):
            ats_len = data[pos]  # counts itself
            if ats_len < 1 or len(data) < pos + ats_len:
                raise ProtocolError("InListPassiveTarget answer has a bad ATS length")
            ats = data[pos + 1 : pos + ats_len]
            pos += ats_len
        targets.append(Target(tg, bytes(atqa), sak, bytes(uid), bytes(ats)))
    return targets


# --- NDEF Type 4 tag (NFC Forum T4T): what a phone in host card emulation offers ------

NDEF_AID = bytes.fromhex("D2760000850101")
CC_FILE = bytes.fromhex("E103")
SW_OK = b"\x90\x00"


def select_app(aid: bytes = NDEF_AID) -> bytes:
    """SELECT by application name (with Le)."""
    return bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00"


def select_file(file_id: bytes) -> bytes:
    """SELECT an elementary file by its 2-byte id, first or only occurrence, no FCI."""
    return bytes((0x00, 0xA4, 0x00, 0x0C, 0x02)) + file_id


def read_binary(offset: int, length: int) -> bytes:
    """READ BINARY ``length`` bytes (1..255) at ``offset`` of the selected file."""
    return bytes((0x00, 0xB0, (offset >> 8) & 0x7F, offset & 0xFF, length & 0xFF))


def split_response(rapdu: bytes) -> bytes:
    """The data of an R-APDU; ProtocolError unless its status word is 90 00."""
    if len(rapdu) < 2:
        raise ProtocolError("R-APDU shorter than a status word")
    if rapdu[-2:] != SW_OK:
        raise ProtocolError(f"card answered status {rapdu[-2:].hex().upper()}")
    return rapdu[:-2]


@dataclass(frozen=True, slots=True)
class CapabilityContainer:
    """What the CC file says: the largest READ BINARY (MLe) and the NDEF file."""

    max_read: int
    ndef_file: bytes
    ndef_max_size: int


def parse_cc(cc: bytes) -> CapabilityContainer:
    """Decode the capability container (first 15 bytes: CCLEN, version, MLe, MLc, TLV 04)."""
    if len(cc) < 15 or cc[7] != 0x04 or cc[8] < 6:
        raise ProtocolError("capability container has no NDEF file control TLV")
    max_read = int.from_bytes(cc[3:5], "big")
    if max_read < 1:
        raise ProtocolError("capability container says MLe = 0")
    return CapabilityContainer(max_read, bytes(cc[9:11]), int.from_bytes(cc[11:13], "big"))


def ndef_text(message: bytes) -> str | None:
    """The text of the first well-known Text record ("T") of an NDEF message, if any."""
    pos = 0
    while pos + 3 <= len(message):
        header, type_len = message[pos], message[pos + 1]
        short, has_id, tnf = header & 0x10, header & 0x08, header & 0x07
        pos += 2
        size_len = 1 if short else 4
        if pos + size_len > len(message):
            return None
        payload_len = int.from_bytes(message[pos : pos + size_len], "big")
        pos += size_len
        id_len = 0
        if has_id:
            if pos >= len(message):
                return None
            id_len, pos = message[pos], pos + 1
        rtype = message[pos : pos + type_len]
        payload = message[pos + type_len + id_len : pos + type_len + id_len + payload_len]
        pos += type_len + id_len + payload_len
        if len(payload) < payload_len:
            return None
        if tnf == 0x01 and rtype == b"T" and payload:
            return _text_payload(payload)
        if header & 0x40:  # ME: last record
            return None
    return None


def _text_payload(payload: bytes) -> str | None:
    status = payload[0]
    lang_len = status & 0x3F
    body = payload[1 + lang_len :]
    try:
        return body.decode("utf-16" if status & 0x80 else "utf-8")
    except UnicodeDecodeError:
        return None
