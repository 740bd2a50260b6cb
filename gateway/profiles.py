"""Firmware profiles: data files that describe a supported hardware model.

A profile (``firmware-profiles/<name>.toml``) names the driver module in ``drivers/``
and the settings that model needs (baud rate, frame options, coil numbering, quirks).
An installer picks a profile by name and fills in the port or address in the config;
per-device ``options`` in the config override the profile's ``settings``.

Profile file::

    model = "PN532 NFC module (UART/HSU)"
    role = "reader"            # reader | relay | input | turnstile
    driver = "pn532"           # module drivers/pn532.py
    [settings]
    baudrate = 115200
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent.parent / "firmware-profiles"
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

        Optional extras (osdp, gpio, libnfc) are imported only when a profile uses them.
        """
        try:
            return importlib.import_module(f"drivers.{self.driver}")
        except ImportError as exc:
            raise ConfigError(
                f"profile {self.name}",
                [
                    f"driver {self.driver!r} cannot be loaded: {exc}. "
                    f"Is its extra installed (pip install 'accessgw[{self.driver}]')?"
                ],
            ) from exc


def load_profile(path: Path) -> Profile:
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
    return Profile(path.stem, str(data["model"]), str(data["role"]), str(data["driver"]), settings)


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """Every profile in ``directory``, by name (the file name without ``.toml``)."""
    return {p.stem: load_profile(p) for p in sorted(directory.glob("*.toml"))}


def find_profile(name: str, directory: Path = PROFILE_DIR) -> Profile:
    """The profile called ``name``; the error lists the ones that exist."""
    path = directory / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        raise ConfigError(str(path), [f"no firmware profile {name!r}; profiles: {known}"])
    return load_profile(path)
