"""The PN532 driver against the PN532 simulator on a pty (HARDWARE.md, Readers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import pn532_frames as pf
from drivers.pn532 import Pn532Reader, Pn532Settings
from gateway.readers import RepeatGuard, debounced
from simulators.pn532 import Card, Pn532Simulator, phone
from tests.readers.helpers import HealthLog, running

PASS = "AGP1.eyJkIjoicGhvbmUtMSIsIm0iOiJtLTEiLCJuIjoiYWJjIiwidCI6MTcwMDAwMDAwMH0.c2ln"

FAST = Pn532Settings(
    poll_interval=0.02, ack_timeout=0.1, reply_timeout=0.3, frame_gap=0.03, reopen_max=0.3
)


@pytest.fixture
def sim() -> Iterator[Pn532Simulator]:
    """A PN532 simulator with no card on it."""
    with Pn532Simulator() as simulator:
        yield simulator


def reader_on(path: str, health: HealthLog | None = None) -> Pn532Reader:
    """A PN532 reader with short timeouts, on ``path``."""
    return Pn532Reader("r1", path, FAST, on_health=health)


async def test_start_up_wakes_the_chip_and_sends_sam_configuration_first(
    sim: Pn532Simulator,
) -> None:
    health = HealthLog()
    async with running(reader_on(sim.path, health)):
        online = await health.wait_online()
    assert sim.commands[:2] == [pf.SAM_CONFIGURATION, pf.GET_FIRMWARE_VERSION]
    assert "PN532 v1.6" in online.reason


async def test_a_plain_card_gives_its_uid_in_upper_case_hex(sim: Pn532Simulator) -> None:
    sim.place("04a1b2c3")
    async with running(reader_on(sim.path)) as reads:
        read = await reads.next()
    assert (read.reader, read.kind, read.value) == ("r1", "nfc", "04A1B2C3")


async def test_no_card_no_read_and_a_removed_card_stops_reading(sim: Pn532Simulator) -> None:
    async with running(reader_on(sim.path)) as reads:
        assert await reads.none_within(0.3)
        sim.place("04A1B2C3")
        assert (await reads.next()).value == "04A1B2C3"
        sim.remove()
        await asyncio.sleep(0.1)
        reads.drain()  # polls answered while the card was still there
        assert await reads.none_within(0.3)


async def test_two_cards_in_a_row_give_both_uids(sim: Pn532Simulator) -> None:
    async with running(reader_on(sim.path)) as reads:
        sim.place("04A1B2C3")
        assert (await reads.next()).value == "04A1B2C3"
        sim.remove()
        sim.place("04112233445566")
        second = await reads.next_where(lambda r: r.value != "04A1B2C3")
    assert second.value == "04112233445566"


async def test_a_card_held_on_the_reader_is_one_presentation_until_it_leaves(
    sim: Pn532Simulator,
) -> None:
    reader = reader_on(sim.path)
    sim.place("04A1B2C3")
    raw = 0

    async def counted():  # type: ignore[no-untyped-def]
        nonlocal raw
        async for read in reader.reads():
            raw += 1
            yield read

    async with running(reader, debounced(counted(), RepeatGuard(0))) as reads:
        assert (await reads.next()).value == "04A1B2C3"
        assert await reads.none_within(0.6)  # held: released and found again, not re-read
        assert raw == 1
        assert sim.commands.count(0x52) >= 3  # InRelease after each listing
        sim.place("04DDEEFF")  # another card passes at once
        assert (await reads.next()).value == "04DDEEFF"
        sim.remove()
        await asyncio.sleep(0.3)  # absent for a few polls: it left the field
        sim.place("04DDEEFF")  # shown again: a new presentation
        assert (await reads.next()).value == "04DDEEFF"


async def present_again(sim: Pn532Simulator, uid: str = "04A1B2C3") -> None:
    """Take the card away for a few polls and show it again (a new presentation)."""
    sim.remove()
    await asyncio.sleep(0.3)
    sim.place(uid)


async def test_a_phone_pass_is_read_from_the_ndef_text_record(sim: Pn532Simulator) -> None:
    sim.place(phone(PASS))
    async with running(reader_on(sim.path)) as reads:
        read = await reads.next()
    assert (read.kind, read.value) == ("pass", PASS)
    assert pf.IN_DATA_EXCHANGE in sim.commands and pf.IN_RELEASE in sim.commands


async def test_a_long_pass_needing_extended_frames_is_read_whole() -> None:
    token = "AGP1." + "A" * 300 + "." + "B" * 86  # 392 bytes: READ BINARY of 255 bytes
    with Pn532Simulator() as sim:
        sim.place(phone(token))
        async with running(reader_on(sim.path)) as reads:
            read = await reads.next()
    assert read.value == token and read.kind == "pass"


async def test_other_ndef_text_is_a_code(sim: Pn532Simulator) -> None:
    sim.place(phone("TICKET-123"))
    async with running(reader_on(sim.path)) as reads:
        read = await reads.next()
    assert (read.kind, read.value) == ("code", "TICKET-123")


async def test_ndef_text_with_control_characters_is_never_passed_on(
    sim: Pn532Simulator,
) -> None:
    reader = reader_on(sim.path)
    sim.place(phone("AGP1.abc\x1b[2Jdef", uid="08A1B2C3"))
    async with running(reader) as reads:
        read = await reads.next()
    assert (read.kind, read.value) == ("nfc", "08A1B2C3")
    assert reader.dropped_texts >= 1


async def test_an_iso_dep_card_without_ndef_falls_back_to_its_uid(sim: Pn532Simulator) -> None:
    desfire = Card(bytes.fromhex("04A1B2C3D4E5F6"), atqa=b"\x03\x44", sak=0x20, ats=b"\x75\x77")
    sim.place(desfire)
    async with running(reader_on(sim.path)) as reads:
        read = await reads.next()
    assert (read.kind, read.value) == ("nfc", "04A1B2C3D4E5F6")


async def test_garbage_on_the_line_is_skipped_and_reads_go_on(sim: Pn532Simulator) -> None:
    reader = reader_on(sim.path)
    async with running(reader) as reads:
        sim.place("04A1B2C3")
        await reads.next()
        sim.fault("garbage")
        reads.drain()
        await present_again(sim)
        assert (await reads.next()).value == "04A1B2C3"
        assert reader.module is not None
        assert reader.module.parser.dropped_bytes > 200
    assert reader.reinits == 0


async def test_a_half_frame_is_dropped_when_the_line_goes_quiet(sim: Pn532Simulator) -> None:
    reader = reader_on(sim.path)
    async with running(reader) as reads:
        sim.place("04A1B2C3")
        await reads.next()
        bad = reader.module.parser.bad_frames if reader.module else 0
        sim.fault("half")
        await asyncio.sleep(0.3)
        reads.drain()
        await present_again(sim)
        assert (await reads.next()).value == "04A1B2C3"
        assert reader.module is not None and reader.module.parser.bad_frames > bad
    assert reader.reinits == 0


async def test_a_damaged_answer_is_asked_for_again_with_a_nack(sim: Pn532Simulator) -> None:
    reader = reader_on(sim.path)
    async with running(reader) as reads:
        sim.place("04A1B2C3")
        await reads.next()
        sim.fault("checksum")
        await present_again(sim)
        assert (await reads.next()).value == "04A1B2C3"
        assert reader.module is not None and reader.module.parser.bad_frames >= 1
    assert reader.reinits == 0  # no timeout was needed


async def test_an_answer_that_came_in_time_is_taken_even_when_the_loop_was_held_up(
    sim: Pn532Simulator,
) -> None:
    """The gateway's loop blocked past the ACK and answer deadlines (a busy box) while the
    chip answered at once: the answer waiting in the port is taken, not a re-initialisation
    (which missed cards for seconds under load)."""
    import time

    reader = reader_on(sim.path)
    async with running(reader) as reads:
        sim.place("04A1B2C3")
        await reads.next()
        assert reader.module is not None
        port = reader.module.port
        real_write = port.write

        def write_then_stall(data: bytes) -> None:
            real_write(data)
            if data != pf.ACK:  # once the driver waits for the ACK, the loop is held up
                asyncio.get_running_loop().call_soon(time.sleep, FAST.reply_timeout + 0.1)

        port.write = write_then_stall  # type: ignore[method-assign]
        try:
            answer = await reader.module.call(pf.GET_FIRMWARE_VERSION, b"")
        finally:
            port.write = real_write  # type: ignore[method-assign]
        assert answer[:1] == b"\x32"  # IC: PN532
    assert reader.reinits == 0


async def test_a_locked_up_module_is_reported_offline_and_recovers(sim: Pn532Simulator) -> None:
    health = HealthLog()
    reader = reader_on(sim.path, health)
    async with running(reader) as reads:
        sim.place("04A1B2C3")
        await reads.next()
        sim.fault("silence")
        offline = await health.wait_for(lambda h: not h.online and "does not answer" in h.reason)
        assert sim.path in offline.reason and "TX/RX" in offline.reason
        sim.recover()  # like a power cycle: it wakes up asleep, in low-battery mode
        await health.wait_online()
        reads.drain()
        await present_again(sim)
        assert (await reads.next()).value == "04A1B2C3"
    assert reader.reinits >= 1


async def test_an_unplugged_port_is_reported_and_reopened_when_it_comes_back(
    tmp_path: Path,
) -> None:
    link = tmp_path / "ttyNFC0"
    health = HealthLog()
    with Pn532Simulator("04A1B2C3", link=link) as sim:
        async with running(reader_on(str(link), health)) as reads:
            assert (await reads.next()).value == "04A1B2C3"
            sim.unplug()
            missing = await health.wait_for(lambda h: "not found" in h.reason)
            assert not missing.online
            assert f"serial port {link} not found: is the reader plugged in?" in missing.reason
            assert "ports seen:" in missing.reason
            sim.plug()
            sim.place("04A1B2C3")
            await health.wait_online()
            reads.drain()
            assert (await reads.next()).value == "04A1B2C3"


async def test_a_port_that_never_existed_is_reported_with_the_ports_seen(
    tmp_path: Path,
) -> None:
    health = HealthLog()
    async with running(reader_on(str(tmp_path / "ttyUSB9"), health)):
        report = await health.wait_for(lambda h: not h.online and "not found" in h.reason)
    assert "ports seen:" in report.reason


async def test_a_module_that_is_not_a_pn532_is_refused_with_a_reason() -> None:
    health = HealthLog()
    with Pn532Simulator("04A1B2C3", firmware=bytes.fromhex("33010607")) as sim:
        async with running(reader_on(sim.path, health)) as reads:
            report = await health.wait_for(lambda h: "not a PN532" in h.reason)
            assert await reads.none_within(0.2)
    assert not report.online


async def test_answers_that_keep_breaking_the_protocol_take_the_reader_offline(
    sim: Pn532Simulator,
) -> None:
    health = HealthLog()
    sim.place(Card(bytes.fromhex("0102030405")))  # a 5-byte UID: no such thing in 14443-A
    async with running(reader_on(sim.path, health)) as reads:
        report = await health.wait_for(lambda h: "keeps answering wrongly" in h.reason)
        assert await reads.none_within(0.1)
    assert not report.online and "UID length 5" in report.reason


# --- issue 12: the simulator is as strict as the chip, and the driver copes -------------


async def test_a_slow_breakout_that_misses_the_first_command_still_starts() -> None:
    """Some breakouts need ~20 ms after the wake-up preamble: the first SAMConfiguration
    is lost; the driver waits after the preamble and tries again."""
    with Pn532Simulator(wake_delay=0.02) as slow:
        health = HealthLog()
        async with running(reader_on(slow.path, health)):
            online = await health.wait_online(within=5)
    assert "PN532" in online.reason


async def test_a_phone_gives_its_ats_only_after_set_parameters_turns_auto_rats_on(
    sim: Pn532Simulator,
) -> None:
    sim.place(phone(PASS))
    async with running(reader_on(sim.path)) as reads:
        read = await reads.next()
    assert (read.kind, read.value) == ("pass", PASS)
    set_parameters = sim.commands.index(pf.SET_PARAMETERS)
    assert set_parameters < sim.commands.index(pf.IN_LIST_PASSIVE_TARGET)


async def test_at_stop_the_card_is_released_the_field_switched_off_and_the_chip_powered_down(
    sim: Pn532Simulator,
) -> None:
    sim.place("04A1B2C3")
    reader = reader_on(sim.path)
    async with running(reader) as reads:
        await reads.next()
    await reader.close()
    assert sim.commands[-3:] == [pf.IN_RELEASE, pf.RF_CONFIGURATION, pf.POWER_DOWN]
    assert sim._chip.power == "asleep" and not sim._chip.rf_on


async def test_a_read_is_handed_on_before_the_chip_has_answered_its_release(
    sim: Pn532Simulator,
) -> None:
    # The door decides while the chip lets the card go: a tap does not wait for a command of
    # no use to the decision, and a release the chip is slow to answer loses no read.
    sim.hold_answers(pf.IN_RELEASE)
    sim.place("04A1B2C3")
    patient = FAST.model_copy(update={"reply_timeout": 5.0})
    async with running(Pn532Reader("r1", sim.path, patient)) as reads:
        assert (await reads.next()).value == "04A1B2C3"
        await asyncio.sleep(0.2)  # ten poll intervals: the next poll waits for the release
        assert sim.commands[-2:] == [pf.IN_LIST_PASSIVE_TARGET, pf.IN_RELEASE]
        sim.let_answers_go()
        sim.remove()
        sim.place("04112233445566")
        assert (await reads.next()).value == "04112233445566"


async def test_a_release_the_chip_never_answers_loses_no_read_and_restarts_the_module(
    sim: Pn532Simulator,
) -> None:
    sim.hold_answers(pf.IN_RELEASE)
    sim.place("04A1B2C3")
    reader = reader_on(sim.path)
    async with running(reader) as reads:
        assert (await reads.next()).value == "04A1B2C3"
        sim.remove()
        sim.place("04112233445566")  # read once the module was started again
        assert (await reads.next()).value == "04112233445566"
    assert reader.reinits == 1 and sim.commands.count(pf.SAM_CONFIGURATION) == 2
