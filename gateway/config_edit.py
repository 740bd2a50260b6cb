"""Edits of the config file that keep it the installer's file: comments, order, layout.

The TOML file stays the source of truth. The web UI's changes are made to it with
:mod:`tomlkit` (which keeps comments and formatting), one device or section at a time, and
the result is validated as a whole before it is applied (:mod:`gateway.config_apply`).
Nothing here touches the disk.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import tomlkit
from tomlkit.items import AoT, Table

from gateway.errors import ConfigError

DeviceKind = Literal["boards", "doors", "readers"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("boards", "doors", "readers")
# the keys a device entry may set from the browser (the rest stays as the file has it)
EDITABLE_SECTIONS = ("mqtt", "central")


def _document(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises its own ParseError family
        raise ConfigError("<config>", [f"not valid TOML: {exc}"]) from None


def _plain(value: Any) -> Any:
    """A JSON-like value as TOML items: small tables inline, as an installer writes them."""
    if isinstance(value, Mapping):
        table = tomlkit.inline_table()
        for key, item in value.items():
            if item is not None:
                table[key] = _plain(item)
        return table
    if isinstance(value, list):
        if any(item is None for item in value):  # TOML has no null (a tomlkit error before)
            raise ConfigError("<config>", ["a list cannot hold null: leave the item out"])
        return [_plain(item) for item in value]
    return value


def put_device(text: str, kind: DeviceKind, entry: Mapping[str, Any]) -> str:
    """Add the device ``entry`` (with its ``id``), or replace the one with that id.

    A replaced entry keeps its place in the file and the comments above it; keys the new
    entry leaves out (or sets to None) are removed from it.
    """
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind {kind!r}")
    ident = entry.get("id")
    if not isinstance(ident, str) or not ident:
        raise ConfigError("<config>", [f"{kind}: an entry needs an id"])
    document = _document(text)
    array = document.get(kind)
    if array is None:
        array = tomlkit.aot()
        document.append(kind, array)
    if not isinstance(array, AoT):
        raise ConfigError("<config>", [f"{kind} must be written as [[{kind}]] tables"])
    for table in array:
        if table.get("id") == ident:
            for key in [k for k in table if k not in entry or entry[k] is None]:
                del table[key]
            for key, value in entry.items():
                if value is not None:
                    table[key] = _plain(value)
            return tomlkit.dumps(document)
    table = tomlkit.table()
    for key, value in entry.items():
        if value is not None:
            table[key] = _plain(value)
    array.append(table)
    return tomlkit.dumps(document)


def remove_device(text: str, kind: DeviceKind, ident: str) -> str:
    """The config without the device ``ident`` of ``kind`` (ConfigError if there is none)."""
    document = _document(text)
    array = document.get(kind)
    if isinstance(array, AoT):
        for index, table in enumerate(array):
            if table.get("id") == ident:
                del array[index]
                if not len(array):
                    del document[kind]
                return tomlkit.dumps(document)
    raise ConfigError("<config>", [f"{kind}[{ident}] is not in the config"])


def put_section(text: str, section: str, values: Mapping[str, Any]) -> str:
    """Set keys of a section (``mqtt``, ``mqtt.tls``, ``central``); None removes a key.

    Setting ``mqtt.tls`` to None as a whole removes the table.
    """
    document = _document(text)
    parts = section.split(".")
    if parts[0] not in EDITABLE_SECTIONS:
        raise ValueError(f"section {section!r} is not edited from the browser")
    node: Any = document
    for part in parts:
        child = node.get(part)
        if child is None:
            child = tomlkit.table()
            node[part] = child
        if not isinstance(child, Table | dict):
            raise ConfigError("<config>", [f"{section} must be a table"])
        node = child
    for key, value in values.items():
        if value is None:
            if key in node:
                del node[key]
        else:
            node[key] = _plain(value)
    return tomlkit.dumps(document)


def drop_section(text: str, section: str) -> str:
    """The config without the table ``section`` (e.g. ``mqtt.tls``), if it is there."""
    document = _document(text)
    *parents, last = section.split(".")
    node: Any = document
    for part in parents:
        node = node.get(part)
        if node is None:
            return text
    if last in node:
        del node[last]
    return tomlkit.dumps(document)


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def changed_keys(old_text: str, new_text: str) -> list[str]:
    """The keys that differ between two configs, by path with ids; never a value."""
    old, new = tomllib.loads(old_text), tomllib.loads(new_text)
    return _diff("", old, new)


def _diff(prefix: str, old: Any, new: Any) -> list[str]:
    if old is None and (isinstance(new, dict) or _is_entries(new)):
        old = type(new)()  # a table or a list of entries that is new: its keys, one by one
    if new is None and (isinstance(old, dict) or _is_entries(old)):
        new = type(old)()
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for name in sorted(set(old) | set(new), key=str):
            found += _diff(_key(prefix, name), old.get(name), new.get(name))
        return found
    if _is_entries(old) and _is_entries(new):
        olds = {e["id"]: e for e in old}
        news = {e["id"]: e for e in new}
        found = []
        for ident in [*olds, *(i for i in news if i not in olds)]:
            found += _diff(f"{prefix}[{ident}]", olds.get(ident), news.get(ident))
        return found
    return [] if old == new else [prefix]


def _is_entries(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(e, dict) and isinstance(e.get("id"), str) for e in value
    )
