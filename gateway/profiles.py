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
"""

from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from types import ModuleType
from typing import Any

from gateway.errors import ConfigError

PROFILE_DIR: Traversable = resources.files("gateway") / "firmware_profiles"
ROLES = ("reader", "relay", "input", "turnstile")
# Drivers whose libraries are optional extras (pyproject ``[project.optional-dependencies]``).
OPTIONAL_EXTRAS = {"osdp": "osdp", "gpio": "gpio", "libnfc": "libnfc"}


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
        try:
            return importlib.import_module(f"drivers.{self.driver}")
        except ImportError as exc:
            extra = OPTIONAL_EXTRAS.get(self.driver)
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
