"""Applying a changed config to a running gateway: all of it, or nothing; and back again.

The TOML file stays the source of truth. A change (from the web UI) is made to the text
(:mod:`gateway.config_edit`), validated as a whole with the one validation
(:mod:`gateway.validation`), written beside the file (``<file>.new``, fsynced), switched
into the running gateway (the changed parts restarted; if they cannot start, the old
ones are started again and nothing changed), and only then swapped into place with an
atomic rename. Every applied version is kept in the state directory
(``config-versions/``, the last :data:`KEEP`), with who changed what, so one call brings
back an earlier one. Uploaded broker certificates, keys and passwords are stored in the
state directory (``secrets/mqtt/``, 0600), never in the config file.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.config import Config
from gateway.config_edit import changed_keys
from gateway.errors import AccessGwError
from gateway.state_dir import fsync_directory, write_secret_atomically
from gateway.validation import Report, validate_text

KEEP = 10
VERSIONS_DIR = "config-versions"
MAX_UPLOAD = 64 * 1024
UploadKind = Literal["ca_file", "cert_file", "key_file", "password_file"]
UPLOAD_NAMES: dict[str, str] = {
    "ca_file": "ca.crt",
    "cert_file": "client.crt",
    "key_file": "client.key",
    "password_file": "password",
}

# The running gateway takes a validated config: it switches the changed parts or raises
# (having put the old ones back). Arguments: the new config, the changed keys, who.
Switch = Callable[[Config, list[str], str], Awaitable[None]]


class ApplyRefused(AccessGwError):
    """A change was not applied; ``report`` lists the problems when validation refused it."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        self.report = report
        super().__init__(message)


@dataclass(frozen=True)
class Version:
    """One applied version of the config file."""

    number: int
    at: str
    by: str
    changed: list[str]
    note: str = ""


@dataclass
class Applied:
    """The outcome of a successful apply."""

    version: int | None  # None: nothing changed
    changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """For the web API."""
        return asdict(self)


class ConfigKeeper:
    """The config file of a gateway, its last versions, and the one way to change it."""

    def __init__(
        self, path: Path | str, state_dir: Path | str, switch: Switch | None = None
    ) -> None:
        self.path = Path(path)
        self.state_dir = Path(state_dir)
        self.versions_dir = self.state_dir / VERSIONS_DIR
        self.switch = switch
        self._lock = asyncio.Lock()

    # --- reading ------------------------------------------------------------------------

    def text(self) -> str:
        """The config file as it is now."""
        return self.path.read_text(encoding="utf-8")

    def check(self, text: str) -> Report:
        """The one validation of a proposed text (as check-config and run do it)."""
        return validate_text(text, str(self.path))

    def versions(self) -> list[Version]:
        """The kept versions, newest first."""
        found = []
        for meta in sorted(self.versions_dir.glob("*.json"), reverse=True):
            try:
                found.append(Version(**json.loads(meta.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                continue  # a damaged entry is skipped, never fatal
        return found

    def version_text(self, number: int) -> str:
        """The config text of a kept version."""
        try:
            return (self.versions_dir / f"{number:06d}.toml").read_text(encoding="utf-8")
        except FileNotFoundError:
            kept = ", ".join(str(v.number) for v in self.versions()) or "none"
            raise ApplyRefused(f"version {number} is not kept; versions: {kept}") from None

    # --- changing -----------------------------------------------------------------------

    async def apply(self, text: str, who: str, note: str = "") -> Applied:
        """Validate ``text``, switch the running gateway to it and make it the file.

        ApplyRefused (with the report) if the validation finds a problem, or if the
        running gateway could not switch (it then runs the old config, and the file is
        unchanged).
        """
        async with self._lock:
            old = await asyncio.to_thread(self.text)
            report = await asyncio.to_thread(self.check, text)
            if not report.ok or report.config is None:
                raise ApplyRefused(
                    f"not applied: {len(report.problems)} problem(s) in the new config", report
                )
            warnings = [str(w) for w in report.warnings]
            changed = changed_keys(old, text)
            if not changed:
                return Applied(None, [], warnings)
            beside = self.path.with_name(self.path.name + ".new")
            try:
                await asyncio.to_thread(_write_file, beside, text)
                await asyncio.to_thread(self._keep_first, old)
            except OSError as exc:
                raise ApplyRefused(
                    f"not applied: {exc.filename} cannot be written ({exc.strerror}); the "
                    f"gateway's user must be able to write {self.path.parent} and the state "
                    "directory"
                ) from exc
            if self.switch is not None:
                try:
                    await self.switch(report.config, changed, who)
                except Exception as exc:
                    await asyncio.to_thread(beside.unlink, True)
                    raise ApplyRefused(f"not applied, the gateway runs as before: {exc}") from exc
            await asyncio.to_thread(_swap, beside, self.path)
            number = await asyncio.to_thread(self._keep, text, who, changed, note)
            return Applied(number, changed, warnings)

    async def rollback(self, who: str, number: int | None = None) -> Applied:
        """Apply a kept version again (default: the one before the current)."""
        if number is None:
            kept = self.versions()
            if len(kept) < 2:
                raise ApplyRefused("there is no earlier version to go back to")
            number = kept[1].number
        text = await asyncio.to_thread(self.version_text, number)
        return await self.apply(text, who, note=f"back to version {number}")

    def store_upload(self, kind: UploadKind, data: bytes) -> Path:
        """Keep an uploaded broker file in ``secrets/mqtt/`` (0600); its path for the config.

        Certificates and keys must be PEM; a password file is one line. Blocking: call it
        from a thread when a loop runs.
        """
        if kind not in UPLOAD_NAMES:
            raise ApplyRefused(f"unknown upload {kind!r}")
        if not data or len(data) > MAX_UPLOAD:
            raise ApplyRefused(f"{kind}: the file must have 1 to {MAX_UPLOAD} bytes")
        if kind != "password_file" and b"-----BEGIN " not in data:
            raise ApplyRefused(f"{kind}: not a PEM file (no -----BEGIN line)")
        if kind == "password_file" and len(data.strip().splitlines()) != 1:
            raise ApplyRefused("password_file: the password must be one line")
        folder = self.state_dir / "secrets" / "mqtt"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / UPLOAD_NAMES[kind]
        write_secret_atomically(path, data)
        return path

    # --- the kept versions ----------------------------------------------------------------

    def _keep_first(self, text: str) -> None:
        """Before the first change from here, keep the file as it was (version 1)."""
        if not any(self.versions_dir.glob("*.toml")):
            self._keep(text, "the file as found", [], "before the first change")

    def _keep(self, text: str, who: str, changed: list[str], note: str) -> int:
        self.versions_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        numbers = sorted(int(p.stem) for p in self.versions_dir.glob("*.toml"))
        number = (numbers[-1] + 1) if numbers else 1
        version = Version(
            number, datetime.now(UTC).isoformat(timespec="seconds"), who, changed, note
        )
        _write_file(self.versions_dir / f"{number:06d}.toml", text)
        _write_file(self.versions_dir / f"{number:06d}.json", json.dumps(asdict(version)))
        for old in numbers[: max(0, len(numbers) + 1 - KEEP)]:
            for suffix in (".toml", ".json"):
                (self.versions_dir / f"{old:06d}{suffix}").unlink(missing_ok=True)
        return number


def _write_file(path: Path, text: str) -> None:
    write_secret_atomically(path, text.encode("utf-8"))


def _swap(new: Path, path: Path) -> None:
    os.replace(new, path)
    fsync_directory(path.parent)
