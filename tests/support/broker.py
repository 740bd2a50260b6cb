"""A real Mosquitto broker for tests: started on a free 127.0.0.1 port, stopped by pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Broker:
    """One mosquitto process with a generated config. ``extra`` is appended to the config."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = self.extra or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(
            f"persistence false\nlog_dest file {self.log}\nlog_type all\n{base}",
            encoding="utf-8",
        )

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until it accepts connections."""
        self.write_conf()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited: {err}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
