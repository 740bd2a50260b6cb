"""PN532 frames: building them, finding them in a stream, decoding the answers (pure)."""

from __future__ import annotations

import pytest

from drivers import pn532_frames as pf
from gateway.errors import ProtocolError
from simulators.pn532 import ndef_text_message, phone, plain_card


def test_get_firmware_version_command_is_the_documented_bytes() -> None:
    assert pf.command(pf.GET_FIRMWARE_VERSION) == bytes.fromhex("0000FF02FED4022A00")


def test_sam_configuration_normal_mode_frame_has_valid_checksums() -> None:
    frame = pf.command(pf.SAM_CONFIGURATION, b"\x01\x14\x01")
    assert frame[:3] == b"\x00\x00\xff"
    assert (frame[3] + frame[4]) & 0xFF == 0
    assert sum(frame[5:-1]) & 0xFF == 0
    assert frame[5:10] == bytes.fromhex("D414011401")


def test_a_reply_carries_the_command_code_plus_one() -> None:
    frame = pf.reply(pf.GET_FIRMWARE_VERSION, bytes.fromhex("32010607"))
    assert frame == bytes.fromhex("0000FF06FAD50332010607E800")


def test_data_longer_than_254_bytes_goes_in_an_extended_frame() -> None:
    frame = pf.command(pf.DIAGNOSE, bytes(261))
    assert frame[3:5] == b"\xff\xff"
    length = (frame[5] << 8) | frame[6]
    assert length == 263 and (frame[5] + frame[6] + frame[7]) & 0xFF == 0
    assert pf.FrameParser().feed(frame) == [pf.Frame(pf.HOST_TFI, bytes(262))]


def test_frames_beyond_the_chips_largest_are_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        pf.command(pf.DIAGNOSE, bytes(pf.MAX_LEN))


def test_ack_nack_and_error_frames_are_recognised() -> None:
    items = pf.FrameParser().feed(pf.ACK + pf.NACK + pf.ERROR_FRAME)
    assert items == [pf.Ack(), pf.Nack(), pf.ErrorFrame()]


def test_frames_split_across_reads_are_reassembled() -> None:
    stream = pf.ACK + pf.reply(
        pf.IN_LIST_PASSIVE_TARGET, b"\x01" + plain_card("04A1B2C3").target_data()
    )
    parser, items = pf.FrameParser(), []
    for byte in stream:
        items += parser.feed(bytes((byte,)))
    assert items[0] == pf.Ack()
    assert isinstance(items[1], pf.Frame) and items[1].code == pf.IN_LIST_PASSIVE_TARGET + 1
    assert parser.buffered <= 1


def test_garbage_before_a_frame_is_skipped_and_counted() -> None:
    parser = pf.FrameParser()
    frame = pf.reply(pf.GET_FIRMWARE_VERSION, bytes.fromhex("32010607"))
    items = parser.feed(b"\x13\x37\xfe\x55\x00\x00" + frame)
    assert items == [pf.Frame(pf.CHIP_TFI, bytes.fromhex("0332010607"))]
    assert parser.dropped_bytes == 3  # 13 37 FE; 55 and 00 are wake-up/preamble padding


def test_a_frame_with_a_bad_data_checksum_is_never_returned() -> None:
    parser = pf.FrameParser()
    frame = bytearray(pf.reply(pf.GET_FIRMWARE_VERSION, bytes.fromhex("32010607")))
    frame[-2] ^= 0x01
    assert parser.feed(bytes(frame)) == []
    assert parser.bad_frames == 1


def test_a_bad_length_checksum_is_never_taken_for_a_frame() -> None:
    parser = pf.FrameParser()
    assert parser.feed(bytes.fromhex("0000FF05FAD5030102")) == []  # 05 + FA != 0
    assert parser.bad_frames == 1


def test_a_half_frame_does_not_swallow_the_frame_after_it() -> None:
    parser = pf.FrameParser()
    good = pf.reply(pf.GET_FIRMWARE_VERSION, bytes.fromhex("32010607"))
    half = bytes.fromhex("0000FF10F0D54B01")  # promises 16 bytes, sends 3
    assert parser.feed(half + good) == []  # could still be the body of the half frame
    # the line goes quiet mid-frame: the half frame is dropped, the real one found
    assert parser.resync() == [pf.Frame(pf.CHIP_TFI, bytes.fromhex("0332010607"))]
    assert parser.bad_frames == 1 and parser.buffered <= 1  # a trailing 00 may start a frame


def test_a_long_half_frame_is_resolved_by_the_frames_after_it() -> None:
    parser = pf.FrameParser()
    good = pf.reply(pf.GET_FIRMWARE_VERSION, bytes.fromhex("32010607"))
    half = bytes.fromhex("0000FF04FCD54B")  # promises 4 bytes: the next frame fills them
    assert parser.feed(half + good) == [pf.Frame(pf.CHIP_TFI, bytes.fromhex("0332010607"))]


def test_reset_forgets_a_half_frame_after_a_timeout() -> None:
    parser = pf.FrameParser()
    parser.feed(bytes.fromhex("0000FF10F0D54B01"))
    assert parser.buffered > 0
    parser.reset()
    assert parser.buffered <= 1


def test_the_firmware_answer_names_the_chip() -> None:
    firmware = pf.parse_firmware(bytes.fromhex("32010607"))
    assert firmware.ic == 0x32 and str(firmware) == "PN532 v1.6"
    with pytest.raises(ProtocolError):
        pf.parse_firmware(b"\x32\x01")


def test_a_plain_card_target_gives_its_uid_in_upper_case_hex() -> None:
    data = b"\x01" + plain_card("04a1b2c3").target_data()
    [target] = pf.parse_targets(data)
    assert target.uid_hex == "04A1B2C3" and target.sak == 0x08 and not target.iso_dep


def test_a_seven_byte_uid_is_read_whole() -> None:
    [target] = pf.parse_targets(b"\x01" + plain_card("04112233445566").target_data())
    assert target.uid_hex == "04112233445566"


def test_a_phone_target_offers_iso_dep_with_its_ats() -> None:
    card = phone("AGP1.x", uid="08123456")
    [target] = pf.parse_targets(b"\x01" + card.target_data())
    assert target.iso_dep and target.ats == card.ats


def test_no_target_is_an_empty_list() -> None:
    assert pf.parse_targets(b"\x00") == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01\x01\x00\x04\x08\x09" + bytes(9),
        b"\x03" + bytes(20),
        b"\x01\x01\x00\x04\x20\x04\x01\x02\x03\x04\x09\x78",
    ],
)
def test_malformed_target_lists_are_protocol_errors_not_crashes(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        pf.parse_targets(data)


def test_the_ndef_text_of_a_short_record_is_read() -> None:
    assert pf.ndef_text(ndef_text_message("AGP1.abc")) == "AGP1.abc"


def test_the_ndef_text_of_a_long_record_is_read() -> None:
    text = "AGP1." + "x" * 400
    assert pf.ndef_text(ndef_text_message(text)) == text


def test_an_ndef_message_without_a_text_record_gives_none() -> None:
    uri = bytes((0xD1, 0x01, 0x04)) + b"U" + b"\x04abc"
    assert pf.ndef_text(uri) is None
    assert pf.ndef_text(b"\xd1\x01\x40T\x02en") is None  # payload cut short


def test_the_capability_container_gives_the_ndef_file_and_read_size() -> None:
    cc = bytes.fromhex("000F2000FF00FF0406E104008000FF")
    parsed = pf.parse_cc(cc)
    assert parsed.max_read == 0xFF and parsed.ndef_file == b"\xe1\x04"
    with pytest.raises(ProtocolError):
        pf.parse_cc(b"\x00\x0f")


def test_a_status_word_other_than_9000_is_an_error() -> None:
    assert pf.split_response(b"ab\x90\x00") == b"ab"
    with pytest.raises(ProtocolError, match="6A82"):
        pf.split_response(b"\x6a\x82")
