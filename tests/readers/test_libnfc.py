"""libnfc: the PN532 simulator is accepted by libnfc's own pn532_uart driver, and the
libnfc reader driver (pynfc, on a worker thread) reads cards through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from drivers.libnfc import LibnfcMissing, LibnfcReader, LibnfcSettings, connstring, load_pynfc
from simulators.pn532 import Pn532Simulator
from tests.readers.helpers import HealthLog, running

NFC_LIST = shutil.which("nfc-list")


def pynfc_or_skip():  # type: ignore[no-untyped-def]
    """pynfc's bindings, or skip when the extra is not installed here."""
    try:
        return load_pynfc()
    except LibnfcMissing as exc:
        pytest.skip(f"libnfc extra not installed: {exc}")


@pytest.fixture
def sim() -> Iterator[Pn532Simulator]:
    """A PN532 simulator with a MIFARE Classic card 04A1B2C3 on it."""
    with Pn532Simulator("04A1B2C3") as simulator:
        yield simulator


def libnfc_env(sim: Pn532Simulator) -> dict[str, str]:
    """Environment that makes libnfc open only the simulator (LIBNFC_DEVICE)."""
    return dict(
        os.environ,
        LIBNFC_DEVICE=f"pn532_uart:{sim.pty.slave_path}:115200",
        LIBNFC_AUTO_SCAN="false",
        LIBNFC_INTRUSIVE_SCAN="false",
        LIBNFC_LOG_LEVEL="1",
    )


@pytest.mark.skipif(NFC_LIST is None, reason="nfc-list not installed (apt-get install libnfc-bin)")
def test_nfc_list_finds_the_simulated_card_through_libnfcs_pn532_uart_driver(
    sim: Pn532Simulator,
) -> None:
    assert NFC_LIST is not None
    done = subprocess.run(
        [NFC_LIST], env=libnfc_env(sim), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "NFC device: user defined device opened" in done.stdout
    assert "1 ISO14443A passive target(s) found" in done.stdout
    assert "UID (NFCID1): 04  a1  b2  c3" in done.stdout


@pytest.mark.skipif(NFC_LIST is None, reason="nfc-list not installed (apt-get install libnfc-bin)")
def test_nfc_list_reports_no_target_when_the_field_is_empty(sim: Pn532Simulator) -> None:
    assert NFC_LIST is not None
    sim.remove()
    done = subprocess.run(
        [NFC_LIST], env=libnfc_env(sim), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "NFC device: user defined device opened" in done.stdout
    assert "passive target(s) found" not in done.stdout


def test_pynfc_polls_the_simulated_card(sim: Pn532Simulator) -> None:
    pynfc_or_skip()
    script = (
        "import sys, pynfc\n"
        "n = pynfc.Nfc(sys.argv[1])\n"
        "t = next(iter(n.poll()))\n"
        "print(t.uid.decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"pn532_uart:{sim.pty.slave_path}:115200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "04a1b2c3", done.stderr


async def test_the_libnfc_reader_reads_uids_on_a_worker_thread(sim: Pn532Simulator) -> None:
    nfc = pynfc_or_skip()
    health = HealthLog()
    reader = LibnfcReader(
        "r2", f"pn532_uart:{sim.path}:115200", LibnfcSettings(poll_interval=0.02), health, nfc
    )
    async with running(reader) as reads:
        first = await reads.next()
        assert any(t.name.startswith("libnfc-r2") for t in threading.enumerate())
        sim.remove()
        sim.place("04112233445566")
        second = await reads.next_where(lambda r: r.value != "04A1B2C3")
    assert (first.reader, first.kind, first.value) == ("r2", "nfc", "04A1B2C3")
    assert second.value == "04112233445566"
    assert health.changes[0].online
    assert not any(t.name.startswith("libnfc-r2") for t in threading.enumerate())  # ended


async def test_a_libnfc_device_that_cannot_be_opened_is_reported_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    nfc = pynfc_or_skip()
    health = HealthLog()
    reader = LibnfcReader("r3", f"pn532_uart:{tmp_path}/ttyUSB7", None, health, nfc)
    async with running(reader):
        report = await health.wait_for(lambda h: not h.online)
    assert "libnfc cannot open" in report.reason and "ports seen:" in report.reason


def test_a_missing_pynfc_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynfc", None)  # import pynfc -> ImportError
    with pytest.raises(LibnfcMissing, match=r"pip install 'accessgw\[libnfc\]'.*libfreefare-dev"):
        load_pynfc()


def test_missing_libfreefare_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_libfreefare(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("pynfc"):
            raise OSError("libfreefare.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_libfreefare)
    with pytest.raises(LibnfcMissing, match="apt-get install libfreefare-dev"):
        load_pynfc()


@pytest.mark.parametrize(
    ("port", "settings", "expected"),
    [
        ("pn532_uart:/dev/ttyUSB0:115200", LibnfcSettings(), "pn532_uart:/dev/ttyUSB0:115200"),
        ("/dev/ttyUSB0", LibnfcSettings(baudrate=115200), "pn532_uart:/dev/ttyUSB0:115200"),
        (None, LibnfcSettings(libnfc_driver="acr122_usb"), "acr122_usb"),
    ],
)
def test_the_libnfc_connstring_comes_from_the_port_and_the_profile(
    port: str | None, settings: LibnfcSettings, expected: str
) -> None:
    assert connstring(port, settings) == expected
