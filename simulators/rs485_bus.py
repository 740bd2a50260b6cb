"""A shared RS-485 wire for several simulated devices and one master, over ptys.

RS-485 is one twisted pair: whatever one node puts on it, every other node hears
(half-duplex, no echo to the sender here, as with an adapter that has echo off). The
master (the gateway's driver) opens :attr:`Rs485Bus.path`; each device simulator keeps
its own pty, and :meth:`attach` puts that pty's far end on the wire. A small thread
moves the bytes: it knows nothing of any protocol, so it is a model of the cable, not
of the driver.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

from simulators.pty import Pty


class Rs485Bus:
    """One wire: the master's pty plus the attached devices' ports."""

    def __init__(self) -> None:
        self.master = Pty()
        self._nodes: list[int] = [self.master.master]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._carry, name="rs485-bus", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        """The port the master (the gateway) opens."""
        return self.master.path

    def attach(self, device_port: str) -> None:
        """Put a device on the wire: ``device_port`` is the port its simulator serves."""
        fd = os.open(device_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with self._lock:
            self._nodes.append(fd)

    def _carry(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                nodes = list(self._nodes)
            try:
                ready, _, _ = select.select(nodes, [], [], 0.05)
            except (OSError, ValueError):  # a node closed meanwhile
                continue
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                for other in nodes:
                    if other != fd:
                        with contextlib.suppress(OSError):  # a node with a full buffer
                            os.write(other, data)  # loses bytes, like a busy receiver

    def close(self) -> None:
        """Stop carrying bytes and hang up every port."""
        self._stopping.set()
        self._thread.join(timeout=2)
        with self._lock:
            nodes, self._nodes = self._nodes[1:], []
        for fd in nodes:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master.close()

    def __enter__(self) -> Rs485Bus:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
