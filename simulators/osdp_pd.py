"""An OSDP reader on a pty: libosdp's own Peripheral Device (PD), with Secure Channel.

The PD holds the master side of a pty; the gateway's driver opens the slave path as its
RS-485 port. It starts with a given SCBK (the right one, or a wrong one to test a
refusal), or in install mode (no key: it accepts SCBK-D once and takes the key the
Control Panel sends with osdp_KEYSET, which :attr:`OsdpReaderSimulator.scbk` then shows).
It presents cards (26-bit H10301 Wiegand, or any bit string), and records the LED and
buzzer commands it gets.

Run it by hand: ``accessgw simulate osdp --scbk HEX`` (or ``--install-mode``) prints the
port path, then reads commands from stdin (``card 12345 wiegand26``, ``card 99 raw37``,
``bits 0101...``, ``keys 1234``, ``tamper on|off``, ``power fail|ok``, ``leds``, ``quit``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import osdp

from simulators.pty import Pty

COLORS = {
    osdp.CommandLEDColor.Black: "off",
    osdp.CommandLEDColor.Red: "red",
    osdp.CommandLEDColor.Green: "green",
    osdp.CommandLEDColor.Amber: "amber",
    osdp.CommandLEDColor.Blue: "blue",
}


def wiegand26_bits(number: int) -> str:
    """The 26 bits of an H10301 card: even parity, facility (8), card (16), odd parity."""
    if not 0 <= number < 1 << 24:
        raise ValueError("a 26-bit card number is 0..16777215 (facility × 65536 + card)")
    data = f"{number:024b}"
    even = "1" if data[:12].count("1") % 2 else "0"
    odd = "0" if data[12:].count("1") % 2 else "1"
    return even + data + odd


def raw_bits(number: int, length: int) -> str:
    """``number`` as ``length`` bits, most significant first."""
    if length < 1 or number < 0 or number >= 1 << length:
        raise ValueError(f"{number} does not fit in {length} bits")
    return f"{number:0{length}b}"


def pack_bits(bits: str) -> bytes:
    """A "0"/"1" string as bytes, MSB first, zero-padded at the end (as OSDP sends it)."""
    padded = bits + "0" * (-len(bits) % 8)
    return bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))


class PtyChannel(osdp.Channel):
    """libosdp's byte channel on the pty master (non-blocking).

    Its methods never raise: libosdp's binding leaves a callback's exception pending,
    which breaks every later Python call on its thread.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def read(self, max_bytes: int) -> bytes:
        """Waiting bytes, b"" if none."""
        try:
            return os.read(self.fd, max_bytes)
        except Exception:  # nothing waiting, or the pty is closed
            return b""

    def write(self, buf: bytes) -> int:
        """Send ``buf``; how much went out."""
        try:
            return os.write(self.fd, buf)
        except Exception:
            return 0

    def flush(self) -> None:
        """Nothing to do on a pty."""


class OsdpReaderSimulator:
    """An OSDP reader (libosdp PD) at ``address`` on a fresh pty."""

    def __init__(
        self,
        *,
        scbk: bytes | None = None,
        install_mode: bool = False,
        enforce_secure: bool = True,
        address: int = 0,
        link: Path | str | None = None,
        log_level: int = osdp.LogLevel.Error,
    ) -> None:
        if scbk is None and not install_mode:
            raise ValueError("give the reader an SCBK, or start it in install mode")
        self.address = address
        self.pty = Pty(link)
        self._scbk = None if install_mode else scbk
        self.commands: list[dict[str, Any]] = []
        self.on_command: Callable[[dict[str, Any]], None] | None = None  # on libosdp's thread
        self._changed = threading.Condition()
        # a real reader refuses clear text once it has a key; enforce_secure=False plays
        # a careless one (to show the gateway still passes nothing on without SC)
        self._flags = [osdp.LibFlag.InstallMode] if install_mode else []
        if enforce_secure and not install_mode:
            self._flags.append(osdp.LibFlag.EnforceSecure)
        self._log_level = log_level
        self.tamper = False  # the local status it reports (osdp_LSTATR)
        self.power_fault = False
        self.device = self._new_device()
        self._started = False

    def _new_device(self) -> Any:
        """libosdp's PD on our pty: a fresh one has no Secure Channel session."""
        info = osdp.PDInfo(
            self.address, PtyChannel(self.pty.master), scbk=self._scbk, flags=self._flags
        )
        caps = osdp.PDCapabilities(
            [
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
                (osdp.Capability.Readers, 1, 1),
            ]
        )
        return osdp.PeripheralDevice(
            info, caps, log_level=self._log_level, command_handler=self._on_command
        )

    def reboot(self, off_seconds: float = 1.0) -> None:
        """Power-cycle the reader: silent for ``off_seconds``, then back with a new
        Secure Channel session (and its key), on the same wire."""
        if self._started:
            self._started = False
            self.device.stop()
        time.sleep(off_seconds)
        os.set_blocking(self.pty.master, False)
        with contextlib.suppress(OSError):  # what the panel sent meanwhile is lost
            while os.read(self.pty.master, 4096):
                pass
        if self._scbk is not None:
            self._flags = [f for f in self._flags if f != osdp.LibFlag.InstallMode]
        self.device = self._new_device()
        self.start()

    @property
    def path(self) -> str:
        """The port path the driver opens."""
        return self.pty.path

    @property
    def scbk(self) -> bytes | None:
        """The key the reader has now (set by the panel in install mode)."""
        return self._scbk

    @property
    def sc_active(self) -> bool:
        """True while a Secure Channel session is up."""
        return bool(self.device.is_sc_active())

    def start(self) -> OsdpReaderSimulator:
        """Start libosdp's PD thread."""
        self.device.start()
        self._started = True
        return self

    def stop(self) -> None:
        """Stop the PD and hang up the pty (safe to call twice)."""
        if self._started:
            self._started = False
            self.device.stop()
        self.pty.close()

    def __enter__(self) -> OsdpReaderSimulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- what the reader sends -------------------------------------------------------

    def present_card(self, number: int, fmt: str = "wiegand26") -> bool:
        """Present a card: ``wiegand26`` (H10301) or ``rawN`` (N bits)."""
        if fmt == "wiegand26":
            return self.present_bits(wiegand26_bits(number))
        if fmt.startswith("raw") and fmt[3:].isdigit():
            return self.present_bits(raw_bits(number, int(fmt[3:])))
        raise ValueError(f"card format {fmt!r}: use wiegand26 or rawN (e.g. raw37)")

    def present_bits(self, bits: str, fmt: int = osdp.CardFormat.Wiegand) -> bool:
        """Present a card whose data is ``bits`` ("0"/"1", MSB first)."""
        return self.present_raw(len(bits), pack_bits(bits), fmt)

    def present_raw(self, length: int, data: bytes, fmt: int = osdp.CardFormat.Wiegand) -> bool:
        """Send an osdp_RAW card read as it is (also nonsense, for robustness tests)."""
        event = {
            "event": osdp.Event.CardRead,
            "reader_no": 0,
            "direction": 0,
            "length": length,
            "format": fmt,
            "data": data,
        }
        return bool(self.device.submit_event(event))

    def press_keys(self, digits: str) -> bool:
        """Send keypad input (osdp_KEYPAD)."""
        event = {"event": osdp.Event.KeyPress, "reader_no": 0, "data": digits.encode("ascii")}
        return bool(self.device.submit_event(event))

    def report_local_status(
        self, *, tamper: bool | None = None, power_fault: bool | None = None
    ) -> bool:
        """Send the reader's local status (osdp_LSTATR): its tamper switch and its power
        (None: as last reported)."""
        if tamper is not None:
            self.tamper = tamper
        if power_fault is not None:
            self.power_fault = power_fault
        event = {
            "event": osdp.Event.Status,
            "type": osdp.StatusReportType.Local,
            "nr_entries": 2,
            "report": bytes([int(self.tamper), int(self.power_fault)]),
        }
        return bool(self.device.submit_event(event))

    # --- what the reader got ---------------------------------------------------------

    def _on_command(self, command: dict[str, Any]) -> tuple[int, Any]:
        """libosdp's command callback (its thread): keep the command, take a new key."""
        if command.get("command") == osdp.Command.Keyset:
            self._scbk = bytes(command["data"])
        with self._changed:
            self.commands.append(dict(command))
            self._changed.notify_all()
        if self.on_command is not None:
            with contextlib.suppress(Exception):  # a listener's fault must not reach libosdp
                self.on_command(dict(command))
        return 0, None

    @property
    def leds(self) -> list[dict[str, Any]]:
        """LED commands received, oldest first."""
        return self._of_kind(osdp.Command.LED)

    @property
    def buzzes(self) -> list[dict[str, Any]]:
        """Buzzer commands received, oldest first."""
        return self._of_kind(osdp.Command.Buzzer)

    def _of_kind(self, kind: int) -> list[dict[str, Any]]:
        with self._changed:
            return [c for c in self.commands if c.get("command") == kind]

    def wait_for_led(self, color: int, within: float = 5.0) -> dict[str, Any] | None:
        """The first LED command (past or future) turning ``color`` on; None after ``within``."""
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                for command in self.commands:
                    if command.get("command") == osdp.Command.LED and command["on_color"] == color:
                        return command
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)


def describe(command: dict[str, Any]) -> str:
    """One line for a received command (keys are never printed)."""
    kind = command.get("command")
    if kind == osdp.Command.LED:
        color = COLORS.get(command.get("on_color", -1), str(command.get("on_color")))
        return f"led {color} for {command.get('timer_count', 0) / 10:.1f}s"
    if kind == osdp.Command.Buzzer:
        return f"buzzer x{command.get('rep_count')}"
    if kind == osdp.Command.Keyset:
        return "keyset: a new SCBK was set"
    return f"command {kind}"


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate osdp``: serve an OSDP reader on a pty, driven from stdin."""
    parser = argparse.ArgumentParser(prog="accessgw simulate osdp", description=__doc__)
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--scbk", help="the reader's SCBK, 32 hex digits")
    key.add_argument("--install-mode", action="store_true", help="start without a key")
    parser.add_argument("--address", type=int, default=0)
    parser.add_argument("--link", help="also serve the pty behind this symlink")
    args = parser.parse_args(argv)
    scbk = bytes.fromhex(args.scbk) if args.scbk else None
    if scbk is not None and len(scbk) != 16:
        parser.error("--scbk takes 32 hex digits (16 bytes)")
    sim = OsdpReaderSimulator(
        scbk=scbk, install_mode=args.install_mode, address=args.address, link=args.link
    )
    sim.on_command = lambda command: print(describe(command), flush=True)
    with sim:
        print(f"OSDP reader simulator at address {sim.address} on {sim.path}", flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            print(_run_command(sim, words), flush=True)
    return 0


def _run_command(sim: OsdpReaderSimulator, words: list[str]) -> str:
    verb, rest = words[0].lower(), words[1:]
    try:
        if verb == "card" and rest:
            sent = sim.present_card(int(rest[0]), rest[1] if len(rest) > 1 else "wiegand26")
        elif verb == "bits" and rest and set(rest[0]) <= {"0", "1"}:
            sent = sim.present_bits(rest[0])
        elif verb == "keys" and rest:
            sent = sim.press_keys(rest[0])
        elif verb == "tamper" and rest:
            sent = sim.report_local_status(tamper=rest[0] == "on")
        elif verb == "power" and rest:
            sent = sim.report_local_status(power_fault=rest[0] == "fail")
        elif verb == "leds":
            return "\n".join(describe(c) for c in sim.leds) or "no LED commands yet"
        else:
            return (
                "commands: card N [wiegand26|rawN] | bits 0101... | keys 123 | "
                "tamper on|off | power fail|ok | leds | quit"
            )
    except ValueError as exc:
        return f"error: {exc}"
    return "ok" if sent else "error: libosdp did not take the event (queue full?)"


if __name__ == "__main__":
    raise SystemExit(main())
