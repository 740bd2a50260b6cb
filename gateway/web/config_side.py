"""The web UI's device and MQTT set-up, carried out on the gateway's side.

Every change is one call: the config text is edited (:mod:`gateway.config_edit`), then
applied as a whole (:mod:`gateway.config_apply`): validated, switched into the running
gateway, swapped into the file, kept as a version with who made it. A change that the
validation refuses comes back as its problems (key path, line, what is allowed), and
nothing changes. Secrets never come back to the browser: uploaded certificates, keys and
passwords are stored 0600 in the state directory and shown by their path only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import glob
import re
import secrets
import tomllib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.backup import (
    MAX_ARCHIVE,
    TOKEN,
    UPLOADS,
    BackupError,
    RestorePlan,
    commit_restore,
    discard_pending,
    pending_plan,
    restore_status,
    stage_restore,
)
from gateway.config import Config, MqttSection
from gateway.config_apply import UPLOAD_NAMES, Applied, ApplyRefused, ConfigKeeper, UploadKind
from gateway.config_edit import (
    DEVICE_KINDS,
    DeviceKind,
    drop_section,
    put_device,
    put_section,
    remove_device,
)
from gateway.errors import ConfigError
from gateway.mqtt_check import try_broker
from gateway.profiles import load_profiles
from gateway.state_dir import write_secret_atomically
from gateway.web import i18n

SERIAL_PATTERNS = ("/dev/serial/by-id/*", "/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*",
                   "/dev/ttyS0", "/dev/ttySC*")  # fmt: skip
MQTT_KEYS = ("enabled", "host", "port", "protocol", "username", "password_file",
             "allow_insecure", "keepalive")  # fmt: skip
TLS_KEYS = ("ca_file", "cert_file", "key_file")
UPLOAD_NAME = re.compile(r"^[0-9a-f]{16}\.agwbak$")


class ConfiguredGateway(Protocol):
    """What the set-up needs of the running gateway."""

    @property
    def config(self) -> Config: ...

    @property
    def gw(self) -> str: ...

    @property
    def site(self) -> str: ...

    def config_keeper(self) -> ConfigKeeper: ...


def serial_ports() -> list[str]:
    """The serial ports this box has, stable ``/dev/serial/by-id/`` names first."""
    found: list[str] = []
    for pattern in SERIAL_PATTERNS:
        found += sorted(p for p in glob.glob(pattern) if p not in found)
    return found


def _refused(message: str) -> Exception:
    """The UI's refusal (imported here: gateway_side builds on this module)."""
    from gateway.web.gateway_side import InstallerRefused

    return InstallerRefused(message)


def _kind(kind: str) -> DeviceKind:
    if kind not in DEVICE_KINDS:
        raise _refused(f"unknown kind {kind!r}: boards, doors or readers")
    return kind


class ConfigSide:
    """The set-up calls of :class:`gateway.web.gateway_side.GatewaySide` (a mixin)."""

    gateway: Any
    language: str

    def _keeper(self) -> ConfigKeeper:
        try:
            keeper: ConfigKeeper = self.gateway.config_keeper()
        except Exception as exc:
            raise _refused(str(exc)) from None
        return keeper

    async def config_view(self) -> dict[str, Any]:
        """The devices and broker settings as the file has them, and what can be picked."""
        keeper = self._keeper()
        text = await asyncio.to_thread(keeper.text)
        data = tomllib.loads(text)
        profiles = await asyncio.to_thread(load_profiles)
        mqtt = dict(data.get("mqtt", {}))
        return {
            "file": str(keeper.path),
            "boards": data.get("boards", []),
            "doors": data.get("doors", []),
            "readers": data.get("readers", []),
            "mqtt": mqtt,
            "central": data.get("central", {}),
            "profiles": [
                {"name": p.name, "model": p.model, "role": p.role} for p in profiles.values()
            ],
            "ports": await asyncio.to_thread(serial_ports),
            "versions": [vars(v) for v in await asyncio.to_thread(keeper.versions)],
        }

    async def _edit_and_apply(self, edit: Callable[[str], str], who: str) -> dict[str, Any]:
        """Edit the config text, then apply the result as a whole (or refuse it)."""
        keeper = self._keeper()
        text = await asyncio.to_thread(keeper.text)
        try:
            edited = edit(text)
        except ConfigError as exc:
            return {"ok": False, "message": "; ".join(exc.problems), "problems": []}
        return await self._applied(keeper.apply(edited, who))

    async def _applied(self, change: Awaitable[Applied]) -> dict[str, Any]:
        """What the UI is told of an apply or a rollback: the version, or the problems."""
        try:
            applied = await change
        except ApplyRefused as exc:
            problems = [p.as_json() for p in exc.report.problems] if exc.report else []
            return {"ok": False, "message": str(exc), "problems": problems}
        if applied.version is None:
            message = i18n.t(self.language, "setup.nothing")
        else:
            changed = ", ".join(applied.changed)
            version = applied.version
            message = i18n.t(self.language, "setup.applied", version=version, changed=changed)
        return {"ok": True, "message": message, **applied.as_json()}

    async def config_put(self, kind: str, entry: dict[str, Any], who: str) -> dict[str, Any]:
        """Add or change one board, door or reader, and apply."""
        device = _kind(kind)
        return await self._edit_and_apply(lambda text: put_device(text, device, entry), who)

    async def config_remove(self, kind: str, ident: str, who: str) -> dict[str, Any]:
        """Remove one board, door or reader, and apply."""
        device = _kind(kind)
        return await self._edit_and_apply(lambda text: remove_device(text, device, ident), who)

    async def config_rollback(self, number: int | None, who: str) -> dict[str, Any]:
        """Go back to a kept version (default: the previous one)."""
        answer = await self._applied(self._keeper().rollback(who, number))
        if answer["ok"]:
            answer["message"] = i18n.t(self.language, "setup.back", message=answer["message"])
        return answer

    def _mqtt_text(self, text: str, settings: dict[str, Any]) -> str:
        mqtt = {k: settings.get(k) for k in MQTT_KEYS}
        edited = put_section(text, "mqtt", mqtt)
        tls = {k: settings.get(k) for k in TLS_KEYS}
        if settings.get("tls") and tls["ca_file"]:
            edited = drop_section(edited, "mqtt.tls")
            edited = put_section(edited, "mqtt.tls", tls)
        else:
            edited = drop_section(edited, "mqtt.tls")
        return put_section(edited, "central", {"public_key": settings.get("public_key")})

    async def config_mqtt(self, settings: dict[str, Any], who: str) -> dict[str, Any]:
        """Save broker and central settings (after a test connection), and apply."""
        return await self._edit_and_apply(lambda text: self._mqtt_text(text, settings), who)

    async def config_upload(self, kind: str, data_b64: str) -> dict[str, Any]:
        """Keep an uploaded CA, client certificate, key or password file; its path."""
        if kind not in UPLOAD_NAMES:
            raise _refused(f"unknown file {kind!r}: {', '.join(UPLOAD_NAMES)}")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError):
            raise _refused(i18n.t(self.language, "setup.not_base64")) from None
        upload: UploadKind = kind  # type: ignore[assignment]
        try:
            path = await asyncio.to_thread(self._keeper().store_upload, upload, data)
        except ApplyRefused as exc:
            raise _refused(str(exc)) from None
        stored = i18n.t(self.language, "setup.stored", kind=kind, path=path)
        return {"ok": True, "path": str(path), "message": stored}

    async def backup(self, passphrase: str, who: str) -> dict[str, Any]:
        """An encrypted backup (gateway.backup) written to ``<state>/backups/``: its path.

        The UI process reads it from there and hands it to the browser, then deletes it
        (a backup can be larger than a message between the two processes may be).
        """
        from gateway.backup import create_backup

        keeper = self._keeper()
        folder = keeper.state_dir / "backups"
        try:
            sealed = await asyncio.to_thread(create_backup, keeper.path, passphrase)
        except BackupError as exc:
            raise _refused(str(exc)) from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"{self.gateway.gw}-{stamp}.agwbak"

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_secret_atomically(path, sealed)

        await asyncio.to_thread(write)
        self.gateway.record_event("installer_action", None, {"action": "backup", "by": who})
        return {"ok": True, "path": str(path), "bytes": len(sealed)}

    # --- restore from the browser (gateway.backup) -----------------------------------------

    def _state(self) -> Path:
        state: Path = self._keeper().state_dir
        return state

    async def restore_upload_path(self) -> dict[str, Any]:
        """Where the UI process puts an uploaded archive (0700 folder, a fresh name)."""
        folder = self._state() / UPLOADS

        def make() -> None:
            folder.mkdir(exist_ok=True, mode=0o700)
            for old in folder.glob("*.agwbak"):  # an upload never checked (the UI died)
                old.unlink(missing_ok=True)

        await asyncio.to_thread(make)
        return {"path": str(folder / f"{secrets.token_hex(8)}.agwbak")}

    async def restore_check(self, name: str, passphrase: str, who: str) -> dict[str, Any]:
        """Open and check an uploaded backup for this box and stage it, pending the
        installer's confirmation: its plan, or why not in words. Nothing in use changes."""
        if not UPLOAD_NAME.match(name):
            raise _refused(i18n.t(self.language, "restore.no_upload"))
        path = self._state() / UPLOADS / name

        def check() -> RestorePlan:
            try:
                size = path.stat().st_size
                if size > MAX_ARCHIVE:
                    raise BackupError(f"the file is larger than a backup can be ({size} bytes)")
                sealed = path.read_bytes()
            finally:
                path.unlink(missing_ok=True)
            keeper = self._keeper()
            return stage_restore(
                sealed, passphrase, config_path=keeper.path, state_dir=keeper.state_dir
            )

        try:
            plan = await asyncio.to_thread(check)
        except BackupError as exc:
            return {"ok": False, "message": str(exc)}
        except FileNotFoundError:
            raise _refused(i18n.t(self.language, "restore.upload_gone")) from None
        backlog = await self.gateway.journal.pending_count()  # the live count, not the file's
        plan.current.backlog = backlog
        checked = i18n.t(self.language, "restore.checked", gateway=plan.gateway)
        return {"ok": True, "message": checked, "plan": plan.as_json()}

    async def restore_plan(self, token: str) -> dict[str, Any]:
        """The plan of a checked restore waiting for confirmation."""
        try:
            plan = await asyncio.to_thread(pending_plan, self._state(), token)
        except BackupError as exc:
            raise _refused(str(exc)) from None
        plan.current.backlog = await self.gateway.journal.pending_count()
        return plan.as_json()

    async def restore_confirm(self, token: str, who: str) -> dict[str, Any]:
        """Stage the checked restore, journal it, and stop to apply it at the next start."""
        try:
            plan = await asyncio.to_thread(commit_restore, self._state(), token)
        except BackupError as exc:
            raise _refused(str(exc)) from None
        self.gateway.record_event(
            "installer_action",
            None,
            {"action": "restore", "by": who, "backup_of": plan.gateway,
             "backup_created_at": plan.created_at, "journal_backlog": plan.backlog},
        )  # fmt: skip
        self.gateway.restart_soon()
        return {
            "ok": True,
            "message": i18n.t(self.language, "restore.restoring", gateway=plan.gateway),
            "gateway": plan.gateway,
            "web": plan.web,
        }

    async def restore_cancel(self, token: str) -> dict[str, Any]:
        """Forget a checked restore that was not confirmed."""
        if not TOKEN.match(token):
            raise _refused(i18n.t(self.language, "restore.no_restore"))
        await asyncio.to_thread(discard_pending, self._state(), token)
        return {"ok": True, "message": i18n.t(self.language, "restore.nothing")}

    async def restore_status(self) -> dict[str, Any]:
        """The last restore applied here, or the reason a staged one failed."""
        return await asyncio.to_thread(restore_status, self._state())

    async def mqtt_test(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Try broker settings before saving them: connected, or why not in words."""
        values = {k: settings.get(k) for k in MQTT_KEYS if settings.get(k) is not None}
        if settings.get("tls") and settings.get("ca_file"):
            values["tls"] = {k: settings.get(k) for k in TLS_KEYS if settings.get(k)}
        try:
            mqtt = MqttSection.model_validate(values)
        except ValueError as exc:
            return {"ok": False, "stage": "settings", "message": str(exc)}
        gw = self.gateway
        result = await try_broker(mqtt, gw.site, gw.gw, within=8)
        return result.as_json()
