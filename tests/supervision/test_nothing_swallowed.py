"""A daemon that never goes quiet: no failure is swallowed without a word.

Clean-up steps whose failure must not stop the rest (closing what the other side already
closed, turning a reader's LED off on the way out) go through ``gateway.logs.cleanup``,
which logs the cause. A bare ``contextlib.suppress(Exception)`` or ``except Exception:
pass`` would drop it silently, so the source is checked for both.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from gateway.logs import cleanup

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
SWALLOWED = [
    re.compile(r"suppress\([^)]*\bException\b"),
    re.compile(r"except (?:Base)?Exception(?: as \w+)?:\s*\n\s*pass\b"),
]


def test_no_failure_is_swallowed_silently_in_the_gateway() -> None:
    found = []
    for path in sorted(GATEWAY.rglob("*.py")):
        text = path.read_text()
        for pattern in SWALLOWED:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(GATEWAY.parent)}:{line}: {m.group(0)!r}")
    assert found == []


def test_a_failed_clean_up_step_is_logged_with_its_cause_and_the_rest_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.cleanup")
    done = []
    with caplog.at_level(logging.DEBUG, logger="test.cleanup"):
        with cleanup(log, "turning the LED off", logging.WARNING):
            raise OSError(5, "Input/output error")
        done.append("next step")
    assert done == ["next step"]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message == "turning the LED off failed: OSError: [Errno 5] Input/output error"


def test_a_cancellation_is_not_taken_for_a_failed_clean_up() -> None:
    with pytest.raises(asyncio.CancelledError):
        with cleanup(logging.getLogger("test.cleanup"), "closing"):
            raise asyncio.CancelledError
