"""Running ``accessgw`` as the service would: a child process, stopped with SIGTERM."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def minimal_config(state_dir: Path, extra: str = "") -> str:
    """A gateway with no hardware and no broker: enough to create its state."""
    return (
        f'[gateway]\nid = "door-1"\nsite = "club"\nstate_dir = "{state_dir}"\n'
        f'clock = "trusted"\n[mqtt]\nenabled = false\n[web]\nenabled = false\n{extra}'
    )


class Daemon:
    """``accessgw run CONFIG`` in a child process, its stderr collected line by line."""

    def __init__(self, config: Path, *args: str, umask: int = 0o022) -> None:
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", str(config), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.umask(umask),  # the umask a careless shell would give
        )
        self._selector = selectors.DefaultSelector()
        assert self.proc.stderr is not None
        self._selector.register(self.proc.stderr, selectors.EVENT_READ)

    def wait_for(self, text: str, within: float = 30.0) -> str:
        """The first stderr line containing ``text`` (lines before it are kept)."""
        deadline = time.monotonic() + within
        for line in self.lines:
            if text in line:
                return line
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            if not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if text in line:
                return line
        raise AssertionError(f"{text!r} not logged; got:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> int:
        """SIGTERM, then the exit code; the rest of stderr is kept."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.lines.extend(err.splitlines())
        self._selector.close()
        return self.proc.returncode
