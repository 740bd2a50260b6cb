"""One validation of a config file, for ``check-config``, ``run`` and the web UI.

It finds everything ``run`` would refuse, without starting anything: the schema
(:mod:`gateway.config`), cross-references (reader -> door, door -> board), each device's
driver settings, address and size through the driver registry (:mod:`gateway.profiles`),
files that must exist and be readable (CA, client certificate and key, password file), a
writable state directory, and the central system's key when MQTT is on. Each problem names
its key by a path with ids (``doors[main-in].lock.index``), the file and line, and what is
allowed. Warnings (the web UI beyond loopback, an unknown language, MQTT in clear text over
the network) are listed apart and never fail.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from gateway.broker_safety import broker_warnings, refuse_insecure_broker
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.messages import DEFAULTS as LANGUAGES
from gateway.profiles import (
    BoardDriver,
    ReaderDriver,
    board_address,
    board_driver,
    check_devices,
    find_profile,
    reader_address,
    reader_driver,
)

Loc = tuple[str | int, ...]
POINT_ROLES = ("lock", "contact", "rex", "passage", "fire")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: the key by its path with ids, its line in the file, and what to do."""

    key: str  # e.g. "doors[main-in].lock.index"
    message: str
    line: int | None = None
    file: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.key}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        """The finding as a plain object (``check-config --json``, the web UI)."""
        return {"key": self.key, "line": self.line, "file": self.file, "message": self.message}


@dataclass
class Report:
    """The outcome of a validation: the config if it parsed, problems, warnings."""

    file: str
    config: Config | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether ``run`` would accept this config (warnings do not count)."""
        return not self.problems and self.config is not None

    def as_json(self) -> dict[str, Any]:
        """The report as a plain object (``check-config --json``, the web UI)."""
        return {
            "ok": self.ok,
            "file": self.file,
            "problems": [p.as_json() for p in self.problems],
            "warnings": [w.as_json() for w in self.warnings],
        }

    def valid_config(self) -> Config:
        """The config; ConfigError listing every problem if ``run`` would refuse it."""
        if self.problems or self.config is None:
            raise ConfigError(self.file, [str(p) for p in self.problems])
        return self.config


class DeviceProblem(Protocol):
    """A device problem from the driver registry: a key path with ids, and a message."""

    @property
    def key(self) -> str:
        """e.g. ``boards[relays].options.baudrat``."""
        ...

    @property
    def message(self) -> str:
        """What is wrong and what is allowed."""
        ...


# every board's and reader's settings, address and size (gateway.profiles.check_devices)
DeviceCheck = Callable[[Config], Sequence[DeviceProblem]]


@dataclass(frozen=True, slots=True)
class _PortProblem:
    key: str
    message: str


def _bus_of(prefix: str, profile_name: str, options: Mapping[str, Any], address: Any) -> Any:
    """The serial bus a device would share (None: it needs its port alone); ... if unknown."""
    try:
        profile = find_profile(profile_name)
        driver: BoardDriver | ReaderDriver = (
            board_driver(profile) if prefix.startswith("boards") else reader_driver(profile)
        )
        settings = driver.settings_model.model_validate(profile.merged(dict(options)))
    except (ConfigError, ValidationError):
        return ...  # reported by check_devices
    return driver.bus(address, settings)


def exclusive_port_problems(config: Config) -> list[_PortProblem]:
    """A serial port used by a device that cannot share it (a scanner, a PN532...).

    Devices that can share a line (Modbus RTU boards, OSDP readers) say so through their
    driver's ``bus``; :func:`gateway.profiles.check_devices` checks their line settings.
    """
    users: dict[str, list[tuple[str, Any]]] = {}
    for board in config.boards:
        if board.port:
            bus = _bus_of("boards", board.profile, board.options, board_address(board))
            users.setdefault(board.port, []).append((f"boards[{board.id}]", bus))
    for reader in config.readers:
        if reader.port:
            bus = _bus_of("readers", reader.profile, reader.options, reader_address(reader))
            users.setdefault(reader.port, []).append((f"readers[{reader.id}]", bus))
    problems = []
    for port, devices in users.items():
        if len(devices) < 2 or all(bus is not None for _, bus in devices):
            continue
        names = ", ".join(key for key, _ in devices)
        alone = ", ".join(key for key, bus in devices if bus is None)
        for key, _ in devices[1:]:
            problems.append(
                _PortProblem(
                    f"{key}.port",
                    f"serial port {port} is used by {names}, and {alone} cannot share a port: "
                    "give each its own port (only Modbus RTU boards and OSDP readers with the "
                    "same line settings share one RS-485 bus)",
                )
            )
    return problems


def all_device_problems(config: Config) -> list[DeviceProblem]:
    """What the driver registry finds, and ports that cannot be shared."""
    return [*check_devices(config), *exclusive_port_problems(config)]


# --- where a key is in the file ----------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in text.split("."))


def key_lines(text: str) -> dict[Loc, int]:
    """The line (1-based) of every table header and key, by its path in the parsed data.

    Arrays of tables count their entries (``("doors", 1, "lock")``); keys inside an inline
    table are found through the line of the key that holds the table.
    """
    lines: dict[Loc, int] = {}
    arrays: dict[Loc, int] = {}  # array-of-tables path -> index of its last entry
    table: Loc = ()
    closing: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if closing is not None:  # inside a multi-line string
            if closing in line:
                closing = None
            continue
        header = _HEADER.match(line)
        if header:
            is_array = header.group(1) == "[["
            parts = _dotted(header.group(2))
            path: Loc = ()
            for i, part in enumerate(parts):
                path += (part,)
                if path in arrays and not (is_array and i == len(parts) - 1):
                    path += (arrays[path],)  # a sub-table of the array's last entry
            if is_array:
                arrays[path] = arrays.get(path, -1) + 1
                path += (arrays[path],)
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(table + _dotted(key.group(1)), number)
            rest = line[key.end() :]
            for quotes in ('"""', "'''"):
                if rest.count(quotes) == 1:
                    closing = quotes
    return lines


def _line(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc``, or of the nearest table or key that holds it."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def key_path(loc: Loc, data: Any) -> str:
    """``("doors", 0, "lock", "index")`` -> ``doors[main-in].lock.index`` (ids from ``data``)."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            out += f"[{ident}]" if isinstance(ident, str) and ident else f"[{part}]"
            node = item
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


_KEY_PATH = re.compile(r"^([A-Za-z0-9_-]+)\[([^\]]*)\]((?:\.[A-Za-z0-9_-]+)*)")


def loc_of_key(key: str, data: Any) -> Loc:
    """The inverse of :func:`key_path`, as far as the key can be followed in ``data``."""
    match = _KEY_PATH.match(key)
    if match is None:
        return _dotted(key.split(" ", 1)[0])
    table, ident, rest = match.groups()
    items = data.get(table) if isinstance(data, dict) else None
    index: int | None = None
    if isinstance(items, list):
        index = next(
            (i for i, it in enumerate(items) if isinstance(it, dict) and it.get("id") == ident),
            None,
        )
    if index is None:
        return (table,)
    return (table, index, *_dotted(rest[1:])) if rest else (table, index)


# --- the schema ------------------------------------------------------------------------


def model_at(loc: Loc) -> type[BaseModel] | None:
    """The config model that holds the keys at ``loc`` (to list the keys allowed there)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _unwrap(info.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def _schema_message(err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        model = model_at(loc[:-1])
        allowed = f"; keys allowed here: {', '.join(model.model_fields)}" if model else ""
        return f"unknown key (a typo?){allowed}"
    if err["type"] == "missing":
        return "is required"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        message = "must be 1-64 characters of a-z, 0-9 and - (e.g. main-in)"
    return message


def _schema(
    data: dict[str, Any], lines: Mapping[Loc, int], path: str
) -> tuple[Config | None, list[Problem]]:
    try:
        return Config.model_validate(data), []
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.append(
                Problem(key_path(loc, data), _schema_message(err), _line(lines, loc), path)
            )
        return None, problems


# --- the checks beyond the schema -------------------------------------------------------

Found = tuple[Loc, str]


def _cross_references(config: Config) -> Iterable[Found]:
    for name in ("readers", "boards", "doors"):
        seen: set[str] = set()
        for index, item in enumerate(getattr(config, name)):
            if item.id in seen:
                yield (name, index, "id"), f"id {item.id!r} is used twice; ids must be unique"
            seen.add(item.id)
    doors = sorted(d.id for d in config.doors)
    boards = sorted(b.id for b in config.boards)
    for index, reader in enumerate(config.readers):
        if reader.door not in doors:
            yield (
                ("readers", index, "door"),
                f"door {reader.door!r} is not configured; doors: {', '.join(doors) or 'none'}",
            )
    for index, door in enumerate(config.doors):
        for role in POINT_ROLES:
            point = getattr(door, role)
            if point is not None and point.board not in boards:
                yield (
                    ("doors", index, role, "board"),
                    f"board {point.board!r} is not configured; boards: "
                    f"{', '.join(boards) or 'none'}",
                )


def _readable(path: Path) -> str | None:
    """Why ``path`` cannot be read, or None."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        return f"file {path} does not exist"
    except IsADirectoryError:
        return f"{path} is a directory, not a file"
    except OSError as exc:
        return f"file {path} cannot be read: {exc.strerror} (the service user must read it)"
    return None


def _files(config: Config) -> Iterable[Found]:
    mqtt = config.mqtt
    if not mqtt.enabled:
        return
    files: list[tuple[Loc, Path | None]] = [(("mqtt", "password_file"), mqtt.password_file)]
    if mqtt.tls is not None:
        files += [
            (("mqtt", "tls", "ca_file"), mqtt.tls.ca_file),
            (("mqtt", "tls", "cert_file"), mqtt.tls.cert_file),
            (("mqtt", "tls", "key_file"), mqtt.tls.key_file),
        ]
    for loc, path in files:
        why = _readable(path) if path is not None else None
        if why is not None:
            yield loc, why


def state_dir_problem(path: Path) -> str | None:
    """Why the state directory cannot be used (created and written), or None.

    The check really writes: it makes and removes a temporary directory in the state
    directory, or in its nearest existing parent when the state directory is still to be
    made (``run`` makes it), so it is right whatever user, mount or capability applies.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory; set gateway.state_dir to a writable directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".accessgw-check-", dir=probe))
    except OSError as exc:
        what = "written" if probe == path else f"created (in {probe})"
        return (
            f"{path} cannot be {what}: {exc.strerror}; set gateway.state_dir to a writable "
            "directory, or create it for the service user"
        )
    return None


def _state_dir(config: Config) -> Iterable[Found]:
    why = state_dir_problem(config.gateway.state_dir)
    if why is not None:
        yield ("gateway", "state_dir"), why


def _insecure_broker(config: Config) -> Iterable[Found]:
    try:
        refuse_insecure_broker(config.mqtt, "")
    except ConfigError as exc:
        yield from ((("mqtt", "tls"), p.removeprefix("mqtt: ")) for p in exc.problems)


def _web_listen(config: Config) -> Iterable[Found]:
    why = config.web.insecure_listen_problem() if config.web.enabled else None
    if why is not None:
        yield ("web", "listen"), why


def _central_key(config: Config) -> Iterable[Found]:
    if config.mqtt.enabled and config.central.public_key is None:
        yield (
            ("central", "public_key"),
            "is required when MQTT is on: the central system's Ed25519 public key (base64), "
            "without which every entitlement set would be refused; or set mqtt.enabled = false",
        )


# what the file alone must get right, and what depends on the box and the other sections
STRUCTURE_CHECKS: tuple[Callable[[Config], Iterable[Found]], ...] = (_cross_references,)
RUN_CHECKS: tuple[Callable[[Config], Iterable[Found]], ...] = (
    _files,
    _state_dir,
    _central_key,
    _insecure_broker,
    _web_listen,
)


# --- warnings ---------------------------------------------------------------------------


def _warnings(config: Config) -> Iterable[Found]:
    known = ", ".join(LANGUAGES)
    if config.gateway.language not in LANGUAGES:
        yield (
            ("gateway", "language"),
            f"language {config.gateway.language!r} has no texts; members see English. "
            f"Languages: {known}",
        )
    for index, door in enumerate(config.doors):
        if door.language is not None and door.language not in LANGUAGES:
            yield (
                ("doors", index, "language"),
                f"language {door.language!r} has no texts; members see English. Languages: {known}",
            )
    web = config.web
    if web.enabled and web.allow_insecure_listen and not web.loopback_only and web.tls == "off":
        yield (
            ("web", "allow_insecure_listen"),
            f"the web UI serves plain HTTP on {web.listen}: the installer's session and member "
            'data cross the network in clear (set web.tls = "self-signed")',
        )
    for warning in broker_warnings(config.mqtt):
        key = "password_file" if "password" in warning else "tls"
        yield ("mqtt", key), warning.removeprefix("mqtt: ")


# --- the validation ---------------------------------------------------------------------


def validate_text(
    text: str,
    path: str = "<config>",
    *,
    devices: DeviceCheck = all_device_problems,
    structure_only: bool = False,
) -> Report:
    """Validate config text: every problem ``run`` would refuse, and the warnings.

    ``structure_only`` checks the schema and cross-references alone (no files, state
    directory or devices): what :func:`gateway.config.parse_config` needs.
    """
    report = Report(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))  # Python 3.11 has no exc.lineno
        line = int(at.group(1)) if at else None
        report.problems.append(Problem("(file)", f"not valid TOML: {exc}", line, path))
        return report
    lines = key_lines(text)
    config, report.problems = _schema(data, lines, path)
    if config is None:
        return report

    def problem(loc: Loc, message: str) -> Problem:
        return Problem(key_path(loc, data), message, _line(lines, loc), path)

    for check in STRUCTURE_CHECKS if structure_only else STRUCTURE_CHECKS + RUN_CHECKS:
        report.problems += [problem(loc, message) for loc, message in check(config)]
    report.config = config
    if structure_only:
        return report
    for found in devices(config):
        loc = loc_of_key(found.key, data)
        report.problems.append(Problem(found.key, found.message, _line(lines, loc), path))
    report.warnings = [problem(loc, message) for loc, message in _warnings(config)]
    return report


def validate_file(path: Path | str, *, devices: DeviceCheck = all_device_problems) -> Report:
    """Read and validate the config file at ``path``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Report(name, problems=[Problem("(file)", "file not found", None, name)])
    except (OSError, UnicodeDecodeError) as exc:
        return Report(name, problems=[Problem("(file)", f"cannot read: {exc}", None, name)])
    return validate_text(text, name, devices=devices)


def load_valid_config(path: Path | str) -> Config:
    """The config ``run`` starts with; ConfigError listing every problem otherwise."""
    return validate_file(path).valid_config()
