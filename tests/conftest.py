"""Shared fixtures: a real Mosquitto broker on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import MOSQUITTO, Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain (no TLS, anonymous) mosquitto on a free 127.0.0.1 port."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run .ci/run (it installs it with apt)")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
