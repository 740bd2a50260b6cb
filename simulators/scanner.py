"""A QR / barcode scanner in serial mode on a pty: it "scans" codes on command.

Each scan is the code's bytes and a line ending (CR LF unless told otherwise), written
at once, as a scanner does. It can also put garbage on the line (binary noise, control
characters, an over-long line). :meth:`unplug` / :meth:`plug` make the port vanish and
come back behind the same symlink.

Run it by hand: ``accessgw simulate scanner`` prints the pty path, then reads commands
from stdin (``scan CODE``, ``garbage``, ``raw HEX``, ``unplug``, ``plug``, ``quit``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from simulators.pty import Pty

NOISE = bytes(range(0x80, 0x100)) + b"\x00\x01\x02\x1b[0m\r\n"


class ScannerSimulator:
    """A serial scanner on a pty. It never reads; a thread drains what the host sends."""

    def __init__(self, *, link: Path | str | None = None, ending: bytes = b"\r\n") -> None:
        self.ending = ending
        self.written_at = 0.0  # perf_counter() as the last scan was written
        self._link = link
        self._lock = threading.Lock()
        self.pty = Pty(link)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="scanner-sim", daemon=True)

    @property
    def path(self) -> str:
        """The port path a driver opens (the symlink if one was given)."""
        return self.pty.path

    def start(self) -> ScannerSimulator:
        """Start draining the host's side (a real scanner ignores what it is sent)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and close the pty."""
        self._stopping.set()
        self._thread.join(timeout=5)
        with self._lock:
            self.pty.close()

    def __enter__(self) -> ScannerSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drain(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                pty = self.pty
                data = pty.read(0) if not pty.closed else None
            if not data:
                time.sleep(0.02)

    def scan(self, code: str | bytes, ending: bytes | None = None) -> None:
        """Send one code and its line ending, in one write."""
        raw = code.encode("latin-1") if isinstance(code, str) else code
        self.written_at = time.perf_counter()
        self.send(raw + (self.ending if ending is None else ending))

    def send(self, data: bytes) -> None:
        """Put raw bytes on the line."""
        with self._lock:
            self.pty.write(data)

    def garbage(self) -> None:
        """Binary noise and control characters, ending in a line break."""
        self.send(NOISE)

    def unplug(self) -> None:
        """The scanner goes away: the pty hangs up and the link is removed."""
        with self._lock:
            self.pty.close()

    def plug(self) -> None:
        """The scanner comes back on a new pty behind the same link."""
        with self._lock:
            self.pty = Pty(self._link)


def main(argv: list[str] | None = None) -> int:
    """``accessgw simulate scanner``: serve a scanner on a pty, driven from stdin."""
    parser = argparse.ArgumentParser(prog="accessgw simulate scanner", description=__doc__)
    parser.add_argument("--link", help="also serve the pty behind this symlink")
    parser.add_argument("--ending", choices=["crlf", "cr", "lf"], default="crlf")
    args = parser.parse_args(argv)
    ending = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}[args.ending]
    with ScannerSimulator(link=args.link, ending=ending) as sim:
        print(f"scanner simulator on {sim.path} (pty {sim.pty.slave_path})", flush=True)
        for line in sys.stdin:
            words = line.strip().split(maxsplit=1)
            if not words:
                continue
            verb, rest = words[0].lower(), words[1] if len(words) > 1 else ""
            if verb == "quit":
                break
            if verb == "scan" and rest:
                sim.scan(rest)
            elif verb == "garbage":
                sim.garbage()
            elif verb == "raw" and rest:
                try:
                    sim.send(bytes.fromhex(rest))
                except ValueError:
                    print("error: raw takes hex bytes, e.g. raw 41420D0A", flush=True)
                    continue
            elif verb == "unplug":
                sim.unplug()
            elif verb == "plug":
                sim.plug()
                print(f"plugged in again on {sim.path} (pty {sim.pty.slave_path})", flush=True)
            else:
                print("commands: scan CODE | garbage | raw HEX | unplug | plug | quit", flush=True)
                continue
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
