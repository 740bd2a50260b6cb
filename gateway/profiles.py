"""Firmware profiles: data files that describe a supported hardware model.

A profile (``gateway/firmware_profiles/<name>.toml``, package data read through
:mod:`importlib.resources`, so an installed wheel finds them) names the driver module in
``drivers/`` and the settings that model needs (baud rate, frame options, coil numbering, quirks).
An installer picks a profile by name and fills in the port or address in the config;
per-device ``options`` in the config override the profile's ``settings``.

Profile file::

    model = "PN532 NFC module (UART/HSU)"
    role = "reader"            # reader | relay | input | turnstile
    driver = "pn532"           # module drivers/pn532.py
    [settings]
    baudrate = 115200

Drivers are found through a typed registry (:data:`DRIVERS`): each driver module exposes
``BOARD_DRIVER`` (a :class:`BoardDriver`) or ``READER_DRIVER`` (a :class:`ReaderDriver`):
its settings model (pydantic, ``extra="forbid"``), a check of the device's address
(port, host, unit, OSDP address) and a factory that takes plain typed settings, never the
config models or the state directory. :func:`check_devices` validates every board's and
reader's settings and the cross-references between them without starting anything; it is
what ``check-config``, ``run`` and the web UI call (through gateway/validation.py).
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import BoardConfig, Config, ReaderConfig, ReaderFeedback
    from gateway.outputs import Board
    from gateway.readers import HealthCallback, Indicator, Reader

PROFILE_DIR: Traversable = resources.files("gateway") / "firmware_profiles"
ROLES = ("reader", "relay", "input", "turnstile")


@dataclass(frozen=True)
class Profile:
    """One hardware model: which driver runs it, with which settings."""

    name: str
    model: str
    role: str
    driver: str
    settings: dict[str, Any] = field(default_factory=dict)

    def merged(self, options: dict[str, Any]) -> dict[str, Any]:
        """The profile's settings overridden by a device's own ``options``."""
        return {**self.settings, **options}

    def driver_module(self) -> ModuleType:
        """Import the driver module (``drivers/<driver>.py``) on demand.

        Optional extras (osdp, gpio, libnfc) are imported only when a profile uses them;
        a missing extra names the extra to install. Any other ImportError is a broken
        install and is raised as it is, never hidden behind a friendlier message.
        """
        if self.driver not in DRIVERS:
            raise ConfigError(
                f"profile {self.name}",
                [f"driver {self.driver!r} is unknown; drivers: {', '.join(DRIVERS)}"],
            )
        module, extra = DRIVERS[self.driver]
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            if extra is None:
                raise
            raise ConfigError(
                f"profile {self.name}",
                [
                    f"driver {self.driver!r} needs the optional extra {extra!r}, which is not "
                    f"installed ({exc}): pip install 'accessgw[{extra}]'"
                ],
            ) from exc


def _stem(path: Traversable) -> str:
    return path.name.removesuffix(".toml")


def _profile_files(directory: Traversable) -> list[Traversable]:
    return sorted(
        (p for p in directory.iterdir() if p.name.endswith(".toml") and p.is_file()),
        key=lambda p: p.name,
    )


def load_profile(path: Traversable) -> Profile:
    """Read one profile file; raise ConfigError naming the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), [str(exc)]) from exc
    problems = [f"'{k}' is missing" for k in ("model", "role", "driver") if k not in data]
    if data.get("role") not in ROLES and "role" in data:
        problems.append(f"role must be one of {', '.join(ROLES)}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        problems.append("[settings] must be a table")
    if problems:
        raise ConfigError(str(path), problems)
    name, model, role, driver = _stem(path), str(data["model"]), str(data["role"]), data["driver"]
    return Profile(name, model, role, str(driver), settings)


def load_profiles(directory: Traversable = PROFILE_DIR) -> dict[str, Profile]:
    """Every profile in ``directory``, by name (the file name without ``.toml``)."""
    return {_stem(p): load_profile(p) for p in _profile_files(directory)}


def profile_names(directory: Traversable = PROFILE_DIR) -> list[str]:
    """The names of the profiles that exist, sorted."""
    return [_stem(p) for p in _profile_files(directory)]


# A name, never a path: "../config/example" must not load any TOML file it points at.
PROFILE_NAME = re.compile(r"[a-z0-9-]{1,64}")


def find_profile(name: str, directory: Traversable = PROFILE_DIR) -> Profile:
    """The profile called ``name``; the error lists the ones that exist."""
    known = ", ".join(profile_names(directory)) or "none"
    if not PROFILE_NAME.fullmatch(name):
        raise ConfigError(
            f"profile {name!r}",
            [f"firmware profile names are a-z, 0-9 and '-' only: {name!r}; profiles: {known}"],
        )
    path = directory / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(str(path), [f"no firmware profile {name!r}; profiles: {known}"])
    return load_profile(path)


# --- typed driver settings and the driver registry -----------------------------------


class DriverSettings(BaseModel):
    """Base of a driver's settings (profile ``[settings]`` merged with config ``options``).

    Unknown keys are refused: a typo must not silently become a default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


SettingsT = TypeVar("SettingsT", bound=DriverSettings)
SettingsT_co = TypeVar("SettingsT_co", bound=DriverSettings, covariant=True)


def settings_problems(
    model: type[DriverSettings], settings: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(key, message) for every bad setting, in words an installer can act on."""
    try:
        model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(model.model_fields))
                msg = f"unknown setting (a typo?); settings of this driver: {allowed}"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append((key, msg))
        return problems
    return []


def parse_settings(model: type[SettingsT], settings: Mapping[str, Any], where: str) -> SettingsT:
    """Validate ``settings`` into ``model``; ConfigError naming every bad key."""
    problems = settings_problems(model, settings)
    if problems:
        raise ConfigError(where, [f"{key or '(settings)'}: {msg}" for key, msg in problems])
    return model.model_validate(dict(settings))


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """Where a device is plugged in, from its config entry: plain data for drivers."""

    port: str | None = None  # serial port (RTU boards, serial readers)
    host: str | None = None  # network boards
    tcp_port: int | None = None
    unit: int | None = None  # Modbus unit id
    address: int | None = None  # OSDP address


class ReaderSecrets(Protocol):
    """The secrets a reader driver may reach (the state directory gives them)."""

    def osdp_scbk(self, reader_id: str) -> Path:
        """Where the OSDP Secure Channel Base Key of ``reader_id`` is kept."""
        ...


class BoardSettings(Protocol):
    """What every board driver's settings say about the board's size."""

    @property
    def output_count(self) -> int:
        """Outputs a door may name: index 0..output_count-1."""
        ...

    @property
    def input_count(self) -> int:
        """Inputs a door may name: index 0..input_count-1."""
        ...


class BoardDriver(Protocol):
    """A relay/IO board family: its settings model, address check and factory."""

    @property
    def settings_model(self) -> type[DriverSettings]:
        """The pydantic model of the driver's settings."""
        ...

    def check_address(self, address: DeviceAddress, settings: Any) -> list[tuple[str, str]]:
        """(key, message) for every problem with where the board is (host, port, unit)."""
        ...

    def bus(self, address: DeviceAddress, settings: Any) -> tuple[str, str] | None:
        """(port, line settings) of a shared serial bus, or None for other transports."""
        ...

    def create(self, board_id: str, address: DeviceAddress, settings: Any) -> Board:
        """A board, not started."""
        ...


class ReaderDriver(Protocol):
    """A reader family: its settings model, address check and factory."""

    @property
    def settings_model(self) -> type[DriverSettings]:
        """The pydantic model of the driver's settings."""
        ...

    def check_address(self, address: DeviceAddress, settings: Any) -> list[tuple[str, str]]:
        """(key, message) for every problem with where the reader is."""
        ...

    def bus(self, address: DeviceAddress, settings: Any) -> tuple[str, str] | None:
        """(port, line settings) of the serial line the reader is on, if it can share it."""
        ...

    def create(
        self,
        reader_id: str,
        address: DeviceAddress,
        settings: Any,
        secrets: ReaderSecrets,
        on_health: HealthCallback,
    ) -> Reader:
        """A reader, not started."""
        ...


def _no_problems(address: DeviceAddress, settings: Any) -> list[tuple[str, str]]:
    return []


def _no_bus(address: DeviceAddress, settings: Any) -> tuple[str, str] | None:
    return None


def needs_port(address: DeviceAddress, settings: Any) -> list[tuple[str, str]]:
    """The check of drivers that need a serial port."""
    if not address.port:
        return [("port", 'is required for this profile (e.g. port = "/dev/ttyUSB0")')]
    return []


class _AddressOf:
    """What both driver specs do with their address functions."""

    address_check: Callable[[DeviceAddress, Any], list[tuple[str, str]]]
    bus_of: Callable[[DeviceAddress, Any], tuple[str, str] | None]

    def check_address(self, address: DeviceAddress, settings: Any) -> list[tuple[str, str]]:
        """(key, message) for every problem with where the device is."""
        return self.address_check(address, settings)

    def bus(self, address: DeviceAddress, settings: Any) -> tuple[str, str] | None:
        """(port, line settings) of the shared serial bus the device is on, if any."""
        return self.bus_of(address, settings)


@dataclass(frozen=True)
class BoardDriverSpec(_AddressOf, Generic[SettingsT]):
    """A :class:`BoardDriver` built from functions (what driver modules export)."""

    settings_model: type[SettingsT]
    create_board: Callable[[str, DeviceAddress, SettingsT], Board]
    address_check: Callable[[DeviceAddress, SettingsT], list[tuple[str, str]]] = _no_problems
    bus_of: Callable[[DeviceAddress, SettingsT], tuple[str, str] | None] = _no_bus

    def create(self, board_id: str, address: DeviceAddress, settings: Any) -> Board:
        """See :class:`BoardDriver`."""
        return self.create_board(board_id, address, settings)


@dataclass(frozen=True)
class ReaderDriverSpec(_AddressOf, Generic[SettingsT]):
    """A :class:`ReaderDriver` built from functions (what driver modules export)."""

    settings_model: type[SettingsT]
    create_reader: Callable[[str, DeviceAddress, SettingsT, ReaderSecrets, HealthCallback], Reader]
    address_check: Callable[[DeviceAddress, SettingsT], list[tuple[str, str]]] = needs_port
    bus_of: Callable[[DeviceAddress, SettingsT], tuple[str, str] | None] = _no_bus

    def create(
        self,
        reader_id: str,
        address: DeviceAddress,
        settings: Any,
        secrets: ReaderSecrets,
        on_health: HealthCallback,
    ) -> Reader:
        """See :class:`ReaderDriver`."""
        return self.create_reader(reader_id, address, settings, secrets, on_health)


# driver name (a profile's ``driver``) -> (module, the extra that brings its library)
DRIVERS: dict[str, tuple[str, str | None]] = {
    "modbus": ("drivers.modbus", None),
    "gpio": ("drivers.gpio", "gpio"),
    "fake_io": ("drivers.fake_io", None),
    "wiegand": ("drivers.wiegand", "gpio"),
    "pn532": ("drivers.pn532", None),
    "serial_scanner": ("drivers.serial_scanner", None),
    "osdp": ("drivers.osdp", "osdp"),
    "libnfc": ("drivers.libnfc", "libnfc"),
}


def _role_driver(profile: Profile, attribute: str, role: str) -> Any:
    """The driver module's ``attribute`` (its factory for one role); ConfigError if the
    module has none, i.e. the profile names a driver that does not drive ``role``."""
    driver = getattr(profile.driver_module(), attribute, None)
    if driver is None:
        raise ConfigError(
            f"profile {profile.name}", [f"driver {profile.driver!r} does not drive {role}"]
        )
    return driver


def board_driver(profile: Profile) -> BoardDriver:
    """The board driver a profile names; ConfigError if it is no board driver."""
    return _role_driver(profile, "BOARD_DRIVER", "boards")  # type: ignore[no-any-return]


def reader_driver(profile: Profile) -> ReaderDriver:
    """The reader driver a profile names; ConfigError if it is no reader driver."""
    return _role_driver(profile, "READER_DRIVER", "readers")  # type: ignore[no-any-return]


def board_address(config: BoardConfig) -> DeviceAddress:
    """A board config entry's address as plain data."""
    return DeviceAddress(
        port=config.port, host=config.host, tcp_port=config.tcp_port, unit=config.unit
    )


def reader_address(config: ReaderConfig) -> DeviceAddress:
    """A reader config entry's address as plain data."""
    return DeviceAddress(port=config.port, address=config.address)


def build_board(config: BoardConfig, directory: Traversable = PROFILE_DIR) -> Board:
    """A board from its config entry (not started); ConfigError naming every problem."""
    profile = find_profile(config.profile, directory)
    driver = board_driver(profile)
    where = f"board {config.id} (profile {profile.name})"
    settings = parse_settings(driver.settings_model, profile.merged(config.options), where)
    address = board_address(config)
    problems = driver.check_address(address, settings)
    if problems:
        raise ConfigError(where, [f"{key}: {msg}" for key, msg in problems])
    return driver.create(config.id, address, settings)


def build_reader(
    config: ReaderConfig,
    secrets: ReaderSecrets,
    on_health: HealthCallback,
    directory: Traversable = PROFILE_DIR,
) -> Reader:
    """A reader from its config entry (not started); ConfigError naming every problem."""
    profile = find_profile(config.profile, directory)
    driver = reader_driver(profile)
    where = f"reader {config.id} (profile {profile.name})"
    settings = parse_settings(driver.settings_model, profile.merged(config.options), where)
    address = reader_address(config)
    problems = driver.check_address(address, settings)
    if problems:
        raise ConfigError(where, [f"{key}: {msg}" for key, msg in problems])
    return driver.create(config.id, address, settings, secrets, on_health)


def build_indicator(feedback: ReaderFeedback, boards: Mapping[str, Board]) -> Indicator:
    """A reader's LED/beeper outputs (its config's ``feedback``) on started boards."""
    from gateway.outputs import OutputPoint
    from gateway.readers import Indicator

    def point(role: str) -> OutputPoint | None:
        configured = getattr(feedback, role)
        if configured is None:
            return None
        board = boards.get(configured.board)
        if board is None:
            raise ConfigError(
                "readers", [f"feedback {role} names board {configured.board!r}, not configured"]
            )
        return OutputPoint(board, configured.index, configured.active_low)

    return Indicator(green=point("green"), red=point("red"), beep=point("beep"))


# --- validation without starting anything ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceProblem:
    """One problem with a device's config: the key by its path with ids, and why."""

    key: str  # e.g. "boards[relays].options.baudrat", "doors[main-in].lock.index"
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass
class _Checked:
    settings: Any
    bus: tuple[str, str] | None


def _settings_key(prefix: str, key: str, options: Mapping[str, Any], profile: str) -> str:
    """Where a bad setting was written: the device's options, or its profile."""
    top = key.split(".", 1)[0]
    if top in options or not key:
        return f"{prefix}.options.{key}" if key else f"{prefix}.options"
    return f"{prefix}.profile ({profile}: [settings].{key})"


def check_board(config: BoardConfig, directory: Traversable = PROFILE_DIR) -> list[DeviceProblem]:
    """Every problem with one board's profile, settings and address (nothing started)."""
    problems, _ = _check_board(config, directory)
    return problems


def check_reader(config: ReaderConfig, directory: Traversable = PROFILE_DIR) -> list[DeviceProblem]:
    """Every problem with one reader's profile, settings and address (nothing started)."""
    problems, _ = _check_reader(config, directory)
    return problems


def _check_device(
    prefix: str,
    profile_name: str,
    options: Mapping[str, Any],
    address: DeviceAddress,
    role: str,
    directory: Traversable,
) -> tuple[list[DeviceProblem], _Checked | None]:
    try:
        profile = find_profile(profile_name, directory)
        driver: BoardDriver | ReaderDriver = (
            board_driver(profile) if role == "board" else reader_driver(profile)
        )
    except ConfigError as exc:
        return [DeviceProblem(f"{prefix}.profile", p) for p in exc.problems], None
    merged = profile.merged(dict(options))
    bad = settings_problems(driver.settings_model, merged)
    if bad:
        return [
            DeviceProblem(_settings_key(prefix, key, options, profile.name), msg)
            for key, msg in bad
        ], None
    settings = driver.settings_model.model_validate(merged)
    found = [DeviceProblem(f"{prefix}.{k}", m) for k, m in driver.check_address(address, settings)]
    return found, _Checked(settings, driver.bus(address, settings))


def _check_board(
    config: BoardConfig, directory: Traversable
) -> tuple[list[DeviceProblem], _Checked | None]:
    prefix = f"boards[{config.id}]"
    return _check_device(
        prefix, config.profile, config.options, board_address(config), "board", directory
    )


def _check_reader(
    config: ReaderConfig, directory: Traversable
) -> tuple[list[DeviceProblem], _Checked | None]:
    prefix = f"readers[{config.id}]"
    return _check_device(
        prefix, config.profile, config.options, reader_address(config), "reader", directory
    )


def check_devices(config: Config, directory: Traversable = PROFILE_DIR) -> list[DeviceProblem]:
    """Every device problem ``run`` would refuse, found without starting anything.

    Each board's and reader's settings and address; each door point within its board's
    size; serial ports shared only by devices with the same line settings (one RS-485
    bus, one client); OSDP/Modbus addresses unique on a bus.
    """
    problems: list[DeviceProblem] = []
    buses: dict[str, list[tuple[str, str]]] = {}  # port -> [(line settings, device key)]
    sizes: dict[str, tuple[int, int]] = {}
    for board in config.boards:
        found, checked = _check_board(board, directory)
        problems += found
        if checked is None:
            continue
        sizes[board.id] = (checked.settings.output_count, checked.settings.input_count)
        if checked.bus is not None:
            buses.setdefault(checked.bus[0], []).append((checked.bus[1], f"boards[{board.id}]"))
    bus_addresses: dict[str, int] = {}  # reader id -> the address it answers on its bus
    for reader in config.readers:
        found, checked = _check_reader(reader, directory)
        problems += found
        if checked is not None and checked.bus is not None:
            buses.setdefault(checked.bus[0], []).append((checked.bus[1], f"readers[{reader.id}]"))
            # no address in the config: the profile's (OSDP's default 0) is the one used
            default = getattr(checked.settings, "address", None)
            address = reader.address if reader.address is not None else default
            if isinstance(address, int):
                bus_addresses[reader.id] = address
    problems += _shared_port_problems(buses)
    problems += _unit_problems(config, bus_addresses)
    problems += _point_problems(config, sizes)
    return problems


def _shared_port_problems(buses: Mapping[str, list[tuple[str, str]]]) -> list[DeviceProblem]:
    problems = []
    for port, users in buses.items():
        kinds = {line for line, _ in users}
        if len(kinds) > 1:
            who = "; ".join(f"{key} ({line})" for line, key in users)
            for _, key in users[1:]:
                problems.append(
                    DeviceProblem(
                        f"{key}.port",
                        f"serial port {port} is shared with different line settings ({who}): "
                        "devices on one RS-485 bus must use one protocol, baud rate, parity "
                        "and framing",
                    )
                )
    return problems


def _unit_problems(config: Config, bus_addresses: Mapping[str, int]) -> list[DeviceProblem]:
    """Two devices at the same bus address on one port cannot both answer."""
    problems = []
    seen: dict[tuple[str, str, int], str] = {}
    for board in config.boards:
        where = board.port or (f"{board.host}:{board.tcp_port or 502}" if board.host else None)
        if where is None:
            continue
        key = ("unit", where, board.unit)
        if key in seen:
            problems.append(
                DeviceProblem(
                    f"boards[{board.id}].unit",
                    f"unit {board.unit} on {where} is already {seen[key]}: give each board on "
                    "a bus its own unit id (1-247)",
                )
            )
        seen.setdefault(key, f"boards[{board.id}]")
    for reader in config.readers:
        address = bus_addresses.get(reader.id)
        if reader.port is None or address is None:
            continue
        key = ("osdp", reader.port, address)
        if key in seen:
            problems.append(
                DeviceProblem(
                    f"readers[{reader.id}].address",
                    f"address {address} on {reader.port} is already {seen[key]}: give "
                    "each reader on a bus its own address",
                )
            )
        seen.setdefault(key, f"readers[{reader.id}]")
    return problems


def _point_problems(config: Config, sizes: Mapping[str, tuple[int, int]]) -> list[DeviceProblem]:
    problems = []
    roles = ("lock", "contact", "rex", "passage", "fire")
    for door in config.doors:
        for role in roles:
            point = getattr(door, role, None)
            if point is None or point.board not in sizes:
                continue
            outputs, inputs = sizes[point.board]
            count, what = (outputs, "outputs") if role == "lock" else (inputs, "inputs")
            if point.index >= count:
                allowed = f"0..{count - 1}" if count else "none"
                problems.append(
                    DeviceProblem(
                        f"doors[{door.id}].{role}.index",
                        f"board {point.board!r} has {count} {what} (index {allowed})",
                    )
                )
    for reader in config.readers:
        for role in ("green", "red", "beep"):
            point = None if reader.feedback is None else getattr(reader.feedback, role)
            if point is None:
                continue
            key = f"readers[{reader.id}].feedback.{role}"
            if point.board not in sizes:
                known = ", ".join(sorted(sizes)) or "none"
                problems.append(DeviceProblem(f"{key}.board", f"no such board (boards: {known})"))
            elif point.index >= sizes[point.board][0]:
                count = sizes[point.board][0]
                problems.append(
                    DeviceProblem(f"{key}.index", f"board {point.board!r} has {count} outputs")
                )
    return problems
