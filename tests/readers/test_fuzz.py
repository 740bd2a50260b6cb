"""Fuzzing the two stream parsers: random bytes never crash them, never make a read that
was not framed correctly, and their buffers stay bounded."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import pn532_frames as pf
from drivers.serial_scanner import LineReader

chunks = st.lists(st.binary(max_size=700), max_size=12)
frame_data = st.binary(min_size=1, max_size=pf.MAX_LEN - 2)


def encodings(item: pf.Item) -> list[bytes]:
    """The ways ``item`` can be written on the wire (from its start code on)."""
    if isinstance(item, pf.Ack):
        return [b"\x00\xff\x00\xff"]
    if isinstance(item, pf.Nack):
        return [b"\x00\xff\xff\x00"]
    tfi, data = (pf.ERROR_TFI, b"") if isinstance(item, pf.ErrorFrame) else (item.tfi, item.data)
    body = bytes((tfi,)) + data
    dcs = bytes(((-sum(body)) & 0xFF,))
    n = len(body)
    extended = b"\x00\xff\xff\xff" + bytes((n >> 8, n & 0xFF, (-(n >> 8) - n) & 0xFF))
    forms = [extended + body + dcs]
    if n <= 0xFF:
        forms.append(b"\x00\xff" + bytes((n, (-n) & 0xFF)) + body + dcs)
    return forms


@settings(max_examples=300, deadline=None)
@given(chunks)
def test_random_bytes_never_crash_the_frame_parser_nor_make_unframed_items(
    pieces: list[bytes],
) -> None:
    parser = pf.FrameParser()
    stream = b"".join(pieces)
    for piece in pieces:
        for item in parser.feed(piece):
            assert any(form in stream for form in encodings(item))
        assert parser.buffered <= pf.MAX_BUFFER
    for item in parser.resync():
        assert any(form in stream for form in encodings(item))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600).map(lambda b: b.replace(b"\xff", b"")), frame_data, st.data())
def test_a_frame_after_any_garbage_is_found(
    garbage: bytes, data: bytes, draw: st.DataObject
) -> None:
    frame = pf.reply(pf.IN_DATA_EXCHANGE, data)
    stream = garbage + frame
    cut = draw.draw(st.integers(0, len(stream)))
    parser = pf.FrameParser()
    items = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
    assert items[-1:] == [pf.Frame(pf.CHIP_TFI, bytes((pf.IN_DATA_EXCHANGE + 1,)) + data)]


@settings(max_examples=200, deadline=None)
@given(frame_data, st.integers(0, 10_000), st.integers(1, 255))
def test_a_damaged_frame_is_never_returned(data: bytes, where: int, flip: int) -> None:
    frame = bytearray(pf.reply(pf.IN_LIST_PASSIVE_TARGET, data))
    where = 1 + where % (len(frame) - 2)  # start code to DCS (not the padding 00s)
    frame[where] ^= flip
    parser = pf.FrameParser()
    items = parser.feed(bytes(frame)) + parser.resync()
    original = pf.Frame(pf.CHIP_TFI, bytes((pf.IN_LIST_PASSIVE_TARGET + 1,)) + data)
    assert original not in items
    for item in items:
        assert any(form in bytes(frame) for form in encodings(item))


def expected_codes(stream: bytes, max_length: int) -> list[str]:
    """What the line reader must return for ``stream``: an independent statement of the rule."""
    lines = re.split(rb"[\r\n]", stream)[:-1]  # the last piece has no line end yet
    codes = []
    for line in lines:
        if len(line) > max_length or any(b < 0x20 or b > 0x7E for b in line):
            continue
        text = line.decode("ascii").strip(" ")
        if text:
            codes.append(text)
    return codes


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(max_size=300) | st.sampled_from([b"\r", b"\n", b"\r\n", b"AGP1.x"]), max_size=20
    ),
    st.integers(1, 64),
)
def test_random_bytes_never_crash_the_line_reader_and_only_clean_lines_pass(
    pieces: list[bytes], max_length: int
) -> None:
    lines = LineReader(max_length=max_length)
    codes: list[str] = []
    for piece in pieces:
        codes += lines.feed(piece)
        assert lines.buffered <= max_length
    assert codes == expected_codes(b"".join(pieces), max_length)
    for code in codes:
        assert 1 <= len(code) <= max_length and code.isascii() and code.isprintable()
