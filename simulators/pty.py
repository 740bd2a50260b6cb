"""A pseudo-terminal that plays a serial device: the simulator holds the master side.

The slave path (``/dev/pts/N``) is what a driver, pyserial or libnfc opens. An optional
symlink (``link``) gives the device a stable name, like ``/dev/serial/by-id/...``, so a
test can "unplug" it (close the pty, remove the link) and "plug it back" (a new pty,
the same link).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty
from pathlib import Path


class Pty:
    """A pty pair in raw mode; the slave side stays open too, so the line never hangs up."""

    def __init__(self, link: Path | str | None = None) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation before a client sets it
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self._slave)
        self.link = Path(link) if link is not None else None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.slave_path)
        self.closed = False

    @property
    def path(self) -> str:
        """The path a client opens: the link if there is one, else the slave path."""
        return str(self.link) if self.link is not None else self.slave_path

    def write(self, data: bytes, wait: float = 2.0) -> None:
        """Send ``data`` to the client (waits up to ``wait`` s while the pty buffer is full;
        a client that reads nothing loses the rest, like a line with nobody listening)."""
        view = memoryview(data)
        deadline = time.monotonic() + wait
        while view and not self.closed and time.monotonic() < deadline:
            try:
                sent = os.write(self.master, view)
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)
                continue
            except OSError:
                return  # hung up
            view = view[sent:]

    def read(self, timeout: float) -> bytes | None:
        """What the client sent, waiting up to ``timeout``; b"" if nothing; None if closed."""
        if self.closed:
            return None
        try:
            ready, _, _ = select.select([self.master], [], [], timeout)
            if not ready:
                return b""
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Hang up: close both sides and remove the link (the device is gone)."""
        if self.closed:
            return
        self.closed = True
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
