"""Logs an operator can use: one line per decision and per state change, in words.

Set up once by ``accessgw run`` (:func:`configure`): JSON lines when stderr is not a
terminal (the journal), readable text on a terminal; ``--log-level``/``[log] level``.
Libraries (pymodbus, paho, uvicorn, aiomqtt) stay at WARNING unless ``[log] libraries``
asks for more, and their raw frame dumps never reach the log. The same error repeated
is written once, then again with how many times it happened meanwhile.

What is logged about people: a member or ticket id, never a credential value (UID, code,
pass token) and never a display name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from gateway.supervisor import describe

log = logging.getLogger("accessgw")
decisions = logging.getLogger("accessgw.decision")
state_changes = logging.getLogger("accessgw.state")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
LIBRARIES = ("pymodbus", "paho", "uvicorn", "uvicorn.error", "uvicorn.access", "aiomqtt")
REPEAT_WINDOW_S = 60.0
PROGRESS_EVERY_S = 5.0  # long work (a snapshot) says how far it is this often
HEX_DUMP = re.compile(r"(?:0x[0-9a-fA-F]{1,2}[\s,]+){3,}|(?:\b[0-9a-fA-F]{2}\s){6,}")
_FIELDS = "fields"  # LogRecord attribute holding a line's structured fields


@contextlib.contextmanager
def cleanup(log: logging.Logger, what: str, level: int = logging.INFO) -> Iterator[None]:
    """A clean-up step (closing what the other side may already have closed, turning a
    reader's LED off on the way out) whose failure must not stop the rest of the clean-up:
    the failure is logged with its cause at ``level``, not raised, and never silent."""
    try:
        yield
    except Exception as exc:
        log.log(level, "%s failed: %s", what, describe(exc))


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: key/value fields shown in both formats."""
    return {_FIELDS: {k: v for k, v in values.items() if v is not None}}


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class ReadableText(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL   message`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", "%H:%M:%S")


class RepeatLimit(logging.Filter):
    """The same warning or error again within a minute is counted, not written.

    The next time it is written (a minute later at the earliest) it says how many times
    it was held back, so a board that fails every 100 ms costs one line a minute.
    """

    def __init__(self, window: float = REPEAT_WINDOW_S, remember: int = 512) -> None:
        super().__init__()
        self.window = window
        self.remember = remember
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        first, held = self._seen.get(key, (None, 0))
        if first is not None and now - first < self.window:
            self._seen[key] = (first, held + 1)
            return False
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        if held:
            record.msg = f"{record.getMessage()} (repeated {held} more times in the last minute)"
            record.args = None
        return True


# pymodbus's own words for a board that went away: the modbus driver already reports
# that as one "board ...: offline: <reason>" line, so these are noise at the same moment
PYMODBUS_ECHOES = re.compile(
    r"No response received|CLOSING CONNECTION|not connected|Failed to connect|"
    r"[Cc]onnection (lost|closed|refused|reset)",
)


class LibraryNoise(logging.Filter):
    """Libraries' raw frames (hex bytes) are for a debugger, not for the operator's log;
    neither are pymodbus's echoes of an outage the gateway reports itself (kept at debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("accessgw", "gateway", "drivers")):
            return True
        message = record.getMessage()
        if HEX_DUMP.search(message):
            return False
        if record.name.startswith("pymodbus") and PYMODBUS_ECHOES.search(message):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def configure(
    level: str = "info",
    format: str = "auto",
    libraries: str = "warning",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in the chosen format; returns the handler."""
    stream = sys.stderr if stream is None else stream
    if format == "auto":
        format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines() if format == "json" else ReadableText())
    handler.addFilter(LibraryNoise())
    handler.addFilter(RepeatLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(max(LEVELS[libraries], LEVELS[level]))
    return handler


# --- what the gateway says ------------------------------------------------------------


def log_decision(checkin: dict[str, Any], latency_s: float | None) -> None:
    """One line per decision: door, decision, reason, member/ticket id, latency."""
    who = checkin.get("member") or checkin.get("ticket") or "unknown credential"
    took = f" in {latency_s * 1000:.0f} ms" if latency_s is not None else ""
    walked = ""
    if checkin.get("decision") == "granted":
        walked = ", walked through" if checkin.get("passed") else ", nobody walked through"
    decisions.info(
        "door %s: %s %s (%s)%s%s",
        checkin.get("door"),
        checkin.get("decision"),
        who,
        checkin.get("reason"),
        walked,
        took,
        extra=fields(
            event="decision",
            door=checkin.get("door"),
            decision=checkin.get("decision"),
            reason=checkin.get("reason"),
            member=checkin.get("member"),
            ticket=checkin.get("ticket"),
            passed=checkin.get("passed"),
            offline=checkin.get("offline") or None,
            latency_ms=None if latency_s is None else round(latency_s * 1000, 1),
        ),
    )


# type -> (level, words); {door} and the detail's keys are filled in
_EVENT_WORDS: dict[str, tuple[int, str]] = {
    "relay_fault": (logging.ERROR, "door {door}: lock relay {board}/{output} failed: {reason}"),
    "door_forced": (logging.WARNING, "door {door}: forced open (no grant, no exit request)"),
    "door_held_open": (logging.WARNING, "door {door}: held open longer than {seconds} s"),
    "door_closed": (logging.INFO, "door {door}: closed again"),
    "unauthorised_passage": (logging.WARNING, "door {door}: passage without a grant"),
    "emergency_release": (logging.WARNING, "door {door}: emergency release ({cause})"),
    "emergency_cleared": (logging.INFO, "door {door}: emergency release over ({cause})"),
    "lockdown": (logging.WARNING, "door {door}: locked down by {by}"),
    "reader_offline": (logging.WARNING, "reader {reader} (door {door}): offline: {reason}"),
    "reader_online": (logging.INFO, "reader {reader} (door {door}): online"),
    "tamper": (logging.WARNING, "reader {reader} (door {door}): tamper switch {state}"),
    "reader_power": (logging.WARNING, "reader {reader} (door {door}): power {state}"),
    "reader_keypad": (logging.INFO, "reader {reader} (door {door}): {keys} keys pressed"),
    "board_offline": (logging.ERROR, "board {board}: offline: {reason}"),
    "board_online": (logging.INFO, "board {board}: online"),
    "ticket_double_use": (logging.WARNING, "door {door}: ticket {ticket} used {uses} times"
                          " (allowed {allowed})"),
    "clock_unsynced": (logging.WARNING, "door {door}: clock not synchronised"),
    "journal_filling": (logging.WARNING, "journal: {pending} records not acknowledged, "
                        "{percent} % of its bound {max_pending}: at the bound new decisions "
                        "are refused"),
    "journal_drained": (logging.INFO, "journal: drained to {pending} records "
                        "({percent} % of its bound)"),
    "journal_full": (logging.WARNING, "journal: was at its bound from {since} until {until}, "
                     "{decisions_refused} decisions refused"),
}  # fmt: skip
_QUIET = frozenset({"started", "stopping", "config_changed"})  # said by the daemon itself
# never in a line, whatever an event's detail holds: credential values and names
_PRIVATE = frozenset({"credential", "value", "uid", "code", "token", "display", "name", "pin"})


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


_HEALTH = {"reader_online": ("reader", True), "reader_offline": ("reader", False),
           "board_online": ("board", True), "board_offline": ("board", False)}  # fmt: skip
_health_said: dict[tuple[str, str], bool] = {}


def log_state_change(type_: str, door: str | None, detail: dict[str, Any]) -> None:
    """One line per state change of a door, reader or board, in words, at its level.

    A reader or board that is offline and fails again for another reason is the same
    state: that is said at DEBUG, so an outage is one warning and its end one line.
    """
    if type_ in _QUIET:
        return
    level, words = _EVENT_WORDS.get(type_, (logging.INFO, "door {door}: " + type_))
    if type_ in _HEALTH:
        part, online = _HEALTH[type_]
        key = (part, str(detail.get(part)))
        if _health_said.get(key) is online:
            level = logging.DEBUG
        _health_said[key] = online
    values = _Blank(
        {k: v for k, v in detail.items() if isinstance(v, str | int | float) and k not in _PRIVATE}
    )
    values["door"] = door or values.get("door", "-")
    if "{reason}" in words and not values.get("reason"):
        values["reason"] = "no reason given"
    state_changes.log(
        level,
        words.format_map(values),
        extra=fields(event=type_, door=door, **{k: v for k, v in values.items() if k != "door"}),
    )


class Progress:
    """Long work said every few seconds: ``snapshot 7: 12 of 40 chunks, 60,000 records``."""

    def __init__(self, what: str, every: float | None = None) -> None:
        self.what = what
        self.every = PROGRESS_EVERY_S if every is None else every
        self._last = time.monotonic()
        self.started = self._last

    def note(self, done: int, total: int | None, records: int) -> None:
        """Log the progress if the last line is ``every`` seconds old."""
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        of = f" of {total}" if total else ""
        log.info(
            "%s: %d%s chunks, %s records so far (%.0f s)",
            self.what,
            done,
            of,
            f"{records:,}",
            now - self.started,
            extra=fields(event="progress", done=done, total=total, records=records),
        )
