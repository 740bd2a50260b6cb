"""HARDWARE.md, Readers / OSDP: libosdp's PD on a pty against the gateway's Control Panel.

Secure Channel is always on: a card read arrives as an ``nfc`` credential with its
format, grant/deny feedback reaches the reader's LED, a reader with the wrong key is
reported and never read from, install mode gives a reader a new key, and nonsense card
data never stops the driver.
"""

from __future__ import annotations

import asyncio
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

osdp = pytest.importorskip(
    "osdp", reason="libosdp (the 'osdp' extra: pip install 'accessgw[osdp]') is not installed"
)

from drivers.osdp import BadCard, OsdpReader, decode_card  # noqa: E402
from gateway.config import ReaderConfig  # noqa: E402
from gateway.entitlements import parse_records, parse_rules  # noqa: E402
from gateway.profiles import build_reader, find_profile  # noqa: E402
from gateway.state_dir import StateDir  # noqa: E402
from gateway.store import EntitlementStore  # noqa: E402
from simulators.osdp_pd import OsdpReaderSimulator, pack_bits, wiegand26_bits  # noqa: E402
from simulators.pty import Pty  # noqa: E402
from tests.readers.helpers import HealthLog, running  # noqa: E402
from tests.support import sets  # noqa: E402

ADDRESS = 1
WITHIN = 15.0  # generous: SC setup takes ~1 s, CI machines are slow and shared


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    """A fresh state directory."""
    return StateDir(tmp_path / "state").ensure()


def store_key(state: StateDir, key: bytes, reader_id: str = "r1") -> None:
    """Put a reader's SCBK where the driver keeps it (as an installer's backup restore)."""
    path = state.osdp_scbk(reader_id)
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)


def make_reader(state: StateDir, port: str, health: HealthLog, **options: Any) -> OsdpReader:
    """The driver as the daemon builds it, from the profile and a reader config."""
    config = ReaderConfig(
        id="r1",
        profile="osdp-generic-v2",
        door="front",
        port=port,
        address=ADDRESS,
        options={"baudrate": 115200, "online_timeout": 5.0, "settle_seconds": 0, **options},
    )
    reader = build_reader(config, state, health)
    assert isinstance(reader, OsdpReader)
    return reader


@pytest.fixture
def pd_factory() -> Iterator[Any]:
    """Start libosdp PDs on ptys; all are stopped after the test."""
    started: list[OsdpReaderSimulator] = []

    def start(**kwargs: Any) -> OsdpReaderSimulator:
        sim = OsdpReaderSimulator(address=ADDRESS, **kwargs).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


async def online(health: HealthLog) -> None:
    """Wait until the reader is reported online (Secure Channel up)."""
    report = await health.wait_for(lambda h: h.online, within=WITHIN)
    assert report.online


@pytest.fixture
async def secure_pair(
    state: StateDir, pd_factory: Any
) -> AsyncIterator[tuple[OsdpReaderSimulator, OsdpReader, Any, HealthLog]]:
    """A PD and the gateway's reader sharing one key, online with Secure Channel."""
    key = secrets.token_bytes(16)
    store_key(state, key)
    sim = pd_factory(scbk=key)
    health = HealthLog()
    reader = make_reader(state, sim.path, health)
    async with running(reader) as reads:
        await online(health)
        yield sim, reader, reads, health


async def test_a_card_read_over_secure_channel_arrives_as_a_wiegand26_credential(
    secure_pair: Any,
) -> None:
    sim, _, reads, _ = secure_pair
    assert sim.sc_active
    number = 123 * 65536 + 4567  # facility 123, card 4567
    assert await asyncio.to_thread(sim.present_card, number)
    read = await reads.next(WITHIN)
    assert (read.reader, read.kind, read.value, read.format) == (
        "r1",
        "nfc",
        str(number),
        "wiegand26",
    )
    assert read.bits == wiegand26_bits(number)


async def test_a_card_read_finds_the_member_whose_credential_has_that_number(
    secure_pair: Any, tmp_path: Path
) -> None:
    sim, _, reads, _ = secure_pair
    rules = parse_rules(sets.rules())
    card = {"kind": "nfc", "uid": str((12 << 16) | 345), "format": "wiegand26"}
    store = EntitlementStore.open(tmp_path / "store.sqlite", b"k" * 32)
    try:
        records = parse_records([sets.member(credentials=[card])], rules)
        store.replace(1, rules, records, {}, datetime(2026, 11, 25, tzinfo=UTC))
        assert await asyncio.to_thread(sim.present_card, (12 << 16) | 345)
        read = await reads.next(WITHIN)
        found = store.find(read.kind, read.value, read.format)
    finally:
        store.close()
    assert found is not None and found.member == "M1"


async def test_other_bit_lengths_keep_the_whole_number_as_raw(secure_pair: Any) -> None:
    sim, _, reads, _ = secure_pair
    assert await asyncio.to_thread(sim.present_card, 0x1234567890 & ((1 << 37) - 1), "raw37")
    read = await reads.next(WITHIN)
    assert read.format == "raw37" and read.value == str(0x1234567890 & ((1 << 37) - 1))
    assert read.bits is not None and len(read.bits) == 37


async def test_grant_turns_the_reader_led_green_and_deny_red(secure_pair: Any) -> None:
    sim, reader, _, _ = secure_pair
    await reader.feedback(True)
    green = await asyncio.to_thread(sim.wait_for_led, osdp.CommandLEDColor.Green, WITHIN)
    assert green is not None and green["temporary"] and green["timer_count"] == 20
    await reader.feedback(False)
    red = await asyncio.to_thread(sim.wait_for_led, osdp.CommandLEDColor.Red, WITHIN)
    assert red is not None
    assert len(sim.buzzes) >= 1


async def test_a_reader_with_the_wrong_key_is_reported_and_never_read(
    state: StateDir, pd_factory: Any
) -> None:
    store_key(state, secrets.token_bytes(16))
    sim = pd_factory(scbk=secrets.token_bytes(16))
    health = HealthLog()
    reader = make_reader(state, sim.path, health)
    async with running(reader) as reads:
        refused = await health.wait_for(lambda h: "secure channel" in h.reason, within=WITHIN)
        assert not refused.online
        assert refused.reason == (
            f"reader at address {ADDRESS} on {sim.path} refuses the secure channel: "
            "wrong SCBK? run install mode"
        )
        await asyncio.to_thread(sim.present_card, 4242)
        assert await reads.none_within(1.5)
    assert not any(h.online for h in health.changes)
    assert not sim.sc_active


async def test_the_key_is_never_in_a_health_report_or_the_log(
    state: StateDir, pd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = secrets.token_bytes(16)
    store_key(state, key)
    sim = pd_factory(scbk=secrets.token_bytes(16))
    health = HealthLog()
    async with running(make_reader(state, sim.path, health)):
        await health.wait_for(lambda h: "secure channel" in h.reason, within=WITHIN)
    said = " ".join(h.reason for h in health.changes) + caplog.text
    assert key.hex() not in said.lower()


async def test_install_mode_sets_a_new_key_and_then_secure_channel_works_with_it(
    state: StateDir, pd_factory: Any
) -> None:
    sim = pd_factory(install_mode=True)
    health = HealthLog()
    reader = make_reader(state, sim.path, health, install_mode=True)
    async with running(reader):
        await online(health)
    stored = state.osdp_scbk("r1")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    key = bytes.fromhex(stored.read_text().strip())
    assert sim.scbk == key  # the PD took the key the gateway kept
    assert any("install mode" in h.reason for h in health.changes)

    # the next start is an ordinary one: enforced Secure Channel with the stored key
    health = HealthLog()
    reader = make_reader(state, sim.path, health)
    async with running(reader) as reads:
        await online(health)
        await asyncio.to_thread(sim.present_card, 77)
        assert (await reads.next(WITHIN)).value == "77"


async def test_enroll_is_the_installers_explicit_install_mode(
    state: StateDir, pd_factory: Any
) -> None:
    store_key(state, secrets.token_bytes(16))  # a replaced reader: the old key fails
    sim = pd_factory(install_mode=True)
    health = HealthLog()
    reader = make_reader(state, sim.path, health)
    async with running(reader):
        await health.wait_for(lambda h: "secure channel" in h.reason, within=WITHIN)
        assert await reader.enroll(within=WITHIN)
        await online(health)
    assert sim.scbk == bytes.fromhex(state.osdp_scbk("r1").read_text())


async def test_without_a_key_or_install_mode_the_reader_is_reported_not_used(
    state: StateDir, pd_factory: Any
) -> None:
    sim = pd_factory(install_mode=True)
    health = HealthLog()
    async with running(make_reader(state, sim.path, health)) as reads:
        report = await health.wait_for(lambda h: "no Secure Channel key" in h.reason)
        assert "install_mode = true" in report.reason
        assert await reads.none_within(1.0)
    assert sim.scbk is None and not state.osdp_scbk("r1").exists()


async def test_a_reader_talking_in_clear_is_reported_and_its_reads_dropped(
    state: StateDir, pd_factory: Any
) -> None:
    # install mode lets the panel fall back to clear text when the reader is not in install
    # mode; the driver itself must still pass nothing on without Secure Channel
    sim = pd_factory(scbk=secrets.token_bytes(16), enforce_secure=False)
    health = HealthLog()
    reader = make_reader(state, sim.path, health, install_mode=True)
    async with running(reader) as reads:
        report = await health.wait_for(lambda h: "did not take the default key" in h.reason)
        assert not report.online
        assert await asyncio.to_thread(sim.present_card, 555)
        assert await reads.none_within(1.5)
        assert reader.dropped == 1
        await reader.feedback(True)
    assert not sim.leds  # nothing is said to it in clear either
    assert not state.osdp_scbk("r1").exists()


async def test_a_silent_reader_is_reported_with_what_to_check(
    state: StateDir, tmp_path: Path
) -> None:
    store_key(state, secrets.token_bytes(16))
    line = Pty()  # a port with nothing on the bus
    try:
        health = HealthLog()
        async with running(make_reader(state, line.path, health, online_timeout=0.5)):
            report = await health.wait_for(lambda h: "no answer" in h.reason, within=WITHIN)
    finally:
        line.close()
    assert "RS-485 wiring" in report.reason and f"address {ADDRESS}" in report.reason


async def test_a_missing_port_is_reported_and_a_lost_one_too(
    state: StateDir, tmp_path: Path, pd_factory: Any
) -> None:
    store_key(state, secrets.token_bytes(16))
    health = HealthLog()
    missing = str(tmp_path / "ttyUSB9")
    async with running(make_reader(state, missing, health)):
        report = await health.wait_for(lambda h: "not found" in h.reason, within=WITHIN)
    assert report.reason.startswith(f"serial port {missing} not found: is the reader plugged in?")

    key = secrets.token_bytes(16)
    store_key(state, key)
    sim = pd_factory(scbk=key)
    health = HealthLog()
    async with running(make_reader(state, sim.path, health)):
        await online(health)
        await asyncio.to_thread(sim.stop)  # unplugged
        lost = await health.wait_for(lambda h: not h.online and h.reason != "", within=WITHIN)
    assert sim.path in lost.reason


async def test_nonsense_card_data_is_dropped_and_the_reader_keeps_working(
    secure_pair: Any,
) -> None:
    sim, reader, reads, _ = secure_pair
    good_bits = wiegand26_bits(1000)
    bad_parity = good_bits[:-1] + ("0" if good_bits[-1] == "1" else "1")
    for bits in (bad_parity, "1", "10110011"):  # a misread, then line noise
        assert await asyncio.to_thread(sim.present_bits, bits)
    # formats libosdp's PD itself refuses to send (deprecated ASCII, unknown codes)
    await asyncio.to_thread(sim.present_raw, 24, b"\xff\x00\x01", osdp.CardFormat.ASCII)
    await asyncio.to_thread(sim.present_raw, 4, b"\x01", 0x7F)
    # what the binding hands the driver, also when it is not what we expect
    pd = reader._pd()
    assert pd is not None
    strange: list[dict[str, Any]] = [
        {"event": osdp.Event.CardRead},
        {"event": osdp.Event.CardRead, "length": "x", "data": b"1", "format": 0},
        {"event": osdp.Event.CardRead, "length": 9000, "data": b"", "format": 0},
        {"event": 99},
        {},
    ]
    for event in strange:
        reader.on_libosdp_event(pd, event)
    assert await asyncio.to_thread(sim.present_card, 31337)
    good = await reads.next(WITHIN)  # the first read let through is the good card
    assert (good.value, good.format) == ("31337", "wiegand26")
    assert reader.dropped == 3 + 3  # three over the wire, three card events handed over
    assert reader.health.online


def test_wiegand26_decoding_strips_parity_and_keeps_facility_and_card() -> None:
    bits = wiegand26_bits((17 << 16) | 4660)
    value, fmt, raw = decode_card(26, pack_bits(bits), osdp.CardFormat.Wiegand)
    assert (value, fmt, raw) == (str((17 << 16) | 4660), "wiegand26", bits)


@pytest.mark.parametrize(
    ("length", "data", "fmt"),
    [
        (0, b"", osdp.CardFormat.Wiegand),
        (4, b"\xf0", osdp.CardFormat.Wiegand),  # line noise, not a card
        (26, b"\x00", osdp.CardFormat.Wiegand),  # says 26 bits, carries 8
        (5000, b"\x00" * 700, osdp.CardFormat.Unspecified),
        (26, pack_bits("1" * 26), osdp.CardFormat.Wiegand),  # wrong parity
        (8, b"\xff", osdp.CardFormat.ASCII),
        (8, b"\x07", osdp.CardFormat.ASCII),
        (0, b"", osdp.CardFormat.ASCII),
    ],
)
def test_malformed_card_data_is_a_clear_refusal(length: int, data: bytes, fmt: int) -> None:
    with pytest.raises(BadCard):
        decode_card(length, data, fmt)


def test_the_profile_builds_an_osdp_reader_that_needs_a_port(tmp_path: Path) -> None:
    profile = find_profile("osdp-generic-v2")
    assert (profile.role, profile.driver) == ("reader", "osdp")
    assert profile.settings["install_mode"] is False
    config = ReaderConfig(id="r2", profile="osdp-generic-v2", door="front", port="/dev/ttyUSB0")
    reader = build_reader(config, StateDir(tmp_path), print)
    assert isinstance(reader, OsdpReader)
    assert reader.address == profile.settings["address"]
    assert reader.settings.baudrate == profile.settings["baudrate"]


# --- issue 12: readers that drop come back by themselves (HARDWARE.md, practice) --------


async def dropped_and_back(health: HealthLog, within: float = WITHIN) -> None:
    """Wait for an offline report, then an online one, both after this call."""
    start = len(health.changes)
    deadline = asyncio.get_running_loop().time() + within
    went = False
    while asyncio.get_running_loop().time() < deadline:
        for report in health.changes[start:]:
            went = went or not report.online
            if went and report.online:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"reader did not drop and come back: {health.changes[start:]}")


async def test_a_reader_that_reboots_is_read_again_within_five_seconds(
    state: StateDir, pd_factory: Any
) -> None:
    key = secrets.token_bytes(16)
    store_key(state, key)
    sim = pd_factory(scbk=key)
    health = HealthLog()
    reader = make_reader(state, sim.path, health, settle_seconds=0.5)
    async with running(reader) as reads:
        await online(health)
        await asyncio.sleep(0.6)  # past the settling time of the first session
        assert await asyncio.to_thread(sim.present_card, 1001)
        assert (await reads.next(WITHIN)).value == "1001"
        waiting = asyncio.create_task(dropped_and_back(health))
        await asyncio.to_thread(sim.reboot, 1.0)
        back = asyncio.get_running_loop().time()
        await waiting
        await asyncio.sleep(0.6)  # a card shown now is a fresh presentation
        assert await asyncio.to_thread(sim.present_card, 1002)
        read = await reads.next(WITHIN)
        assert read.value == "1002"
        assert asyncio.get_running_loop().time() - back < 5.0, "libosdp's 300 s wait won"


async def test_reads_queued_during_an_outage_are_not_taken_as_presentations(
    state: StateDir, pd_factory: Any
) -> None:
    key = secrets.token_bytes(16)
    store_key(state, key)
    sim = pd_factory(scbk=key)
    health = HealthLog()
    reader = make_reader(state, sim.path, health, settle_seconds=1.5)
    async with running(reader) as reads:
        await online(health)
        waiting = asyncio.create_task(dropped_and_back(health))
        await asyncio.to_thread(sim.reboot, 0.3)
        for number in (2001, 2002, 2003):  # queued by the reader while the panel is away
            assert await asyncio.to_thread(sim.present_card, number)
        await waiting
        await asyncio.sleep(1.7)
        assert await asyncio.to_thread(sim.present_card, 2004)
        read = await reads.next(WITHIN)
        assert read.value == "2004", "a queued read came through as a fresh presentation"
        assert reader.dropped >= 3


async def test_a_reader_that_never_answered_is_no_answer_not_wrong_key(state: StateDir) -> None:
    store_key(state, secrets.token_bytes(16))
    silent = Pty()  # a port with nothing on the far end
    health = HealthLog()
    # libosdp gives up on it after ~8.4 s and then says "secure channel inactive", as
    # for a reader that refused the key: the report must still say "no answer"
    reader = make_reader(state, silent.path, health, online_timeout=12.0)
    try:
        async with running(reader):
            report = await health.wait_for(lambda h: "no answer" in h.reason, within=WITHIN)
            assert not any("SCBK" in r.reason for r in health.changes), report
    finally:
        silent.close()


def test_a_26_bit_read_is_h10301_only_when_its_format_says_wiegand() -> None:
    bits = wiegand26_bits(5 * 65536 + 77)
    value, name, _ = decode_card(26, pack_bits(bits), osdp.CardFormat.Wiegand)
    assert (value, name) == (str(5 * 65536 + 77), "wiegand26")
    value, name, _ = decode_card(26, pack_bits(bits), osdp.CardFormat.Unspecified)
    assert (value, name) == (str(int(bits, 2)), "raw26")


async def test_the_installers_install_mode_tool_gives_the_reader_a_new_key(
    state: StateDir, pd_factory: Any
) -> None:
    """Issue 10, point 4: the web UI's OSDP install mode (after its confirmation step, in
    gateway.web.app) drives the reader's own enrolment and says what came of it."""
    from types import SimpleNamespace

    from gateway.web.gateway_side import GatewaySide, InstallerRefused

    store_key(state, secrets.token_bytes(16))  # a replaced reader: the old key fails
    sim = pd_factory(install_mode=True)
    health = HealthLog()
    reader = make_reader(state, sim.path, health)
    journalled: list[tuple[Any, ...]] = []
    gateway = SimpleNamespace(
        config=SimpleNamespace(gateway=SimpleNamespace(language="en")),
        readers={"r1": reader, "qr": object()},
        record_event=lambda *event: journalled.append(event),
    )
    side = GatewaySide(gateway, clock=lambda: 0.0)  # type: ignore[arg-type]
    with pytest.raises(InstallerRefused, match=r"no reader '?r9"):
        await side.enroll("r9", "installer")
    with pytest.raises(InstallerRefused, match="not an OSDP reader"):
        await side.enroll("qr", "installer")
    async with running(reader):
        await health.wait_for(lambda h: "secure channel" in h.reason, within=WITHIN)
        answer = await side.enroll("r1", "installer at 127.0.0.1")
        await online(health)
    assert answer == "reader r1 has a new Secure Channel key"
    assert sim.scbk == bytes.fromhex(state.osdp_scbk("r1").read_text())
    assert journalled == [("installer_action", None, {"action": "osdp_install", "reader": "r1",
                                                      "by": "installer at 127.0.0.1"})]  # fmt: skip


def test_a_new_pending_key_is_durable_once_written_the_directory_is_synced_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename is only on disk once its directory is fsynced: a power cut right after
    install mode must not lose the key the reader already took."""
    import os

    from drivers import osdp as driver

    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(driver.os, "fsync", recording_fsync)
    keys = driver.ScbkFile(tmp_path / "r1.scbk")
    keys.make_pending()
    assert keys.pending.exists()
    assert (str(tmp_path), True) in synced, synced
    assert synced[-1] == (str(tmp_path), True), "the directory is synced after the rename"
