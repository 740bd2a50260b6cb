"""The web UI's set-up pages and API: devices (boards, doors, readers) and MQTT/central.

Pages: ``/devices`` and ``/mqtt``. API (signed in, CSRF as for every change):
``GET /api/config``; ``PUT``/``DELETE /api/config/{boards|doors|readers}/{id}``;
``PUT /api/config/mqtt``; ``POST /api/config/upload/{ca_file|cert_file|key_file|
password_file}``; ``POST /api/config/rollback``; ``POST /api/mqtt/test``. A change is
applied at once, as a whole or not at all; a refused one answers 422 with its problems.

Backup and restore: ``POST /api/backup`` downloads one; ``POST /api/restore`` takes one
(the archive as the body, the passphrase in ``X-Backup-Passphrase``, percent-encoded),
checks it for this box and answers its plan, which ``/restore/{token}`` shows;
``POST /api/restore/{token}/confirm`` stages it and the gateway restarts to apply it;
``DELETE /api/restore/{token}`` forgets it; ``GET /api/restore`` tells the last outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import unquote

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.web.bridge import Bridge, GatewayNotAnswering
from gateway.web.i18n import t

audit = logging.getLogger("accessgw.audit")

Id = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")]
Kind = Literal["boards", "doors", "readers"]
APPLY_WAIT = 25.0  # devices restart on apply: more than the bridge's usual 5 s
RESTORE_PATH = "/api/restore"
RESTORE_MAX = 256 * 1024 * 1024  # a full journal (250,000 records) is ~110 MB in a backup
TOO_BIG = f"a backup uploaded here has at most {RESTORE_MAX} bytes: use accessgw restore FILE"
RESTORE_WAIT = 120.0  # scrypt, every database checked, the config validated
Token = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Entry(BaseModel):
    """A board, door or reader as the config file writes it (checked when applied)."""

    model_config = ConfigDict(extra="allow")


class MqttBody(_Body):
    enabled: bool = True
    host: str = Field("127.0.0.1", max_length=253)
    port: int = Field(8883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = Field(None, max_length=256)
    password_file: str | None = Field(None, max_length=4096)
    allow_insecure: bool | None = None
    tls: bool = True
    ca_file: str | None = Field(None, max_length=4096)
    cert_file: str | None = Field(None, max_length=4096)
    key_file: str | None = Field(None, max_length=4096)
    public_key: str | None = Field(None, max_length=200)


class UploadBody(_Body):
    data: str = Field(min_length=1, max_length=90_000, description="the file, base64")


class BackupBody(_Body):
    passphrase: str = Field(min_length=10, max_length=1024)


class RollbackBody(_Body):
    version: int | None = Field(None, ge=1)


def _who(request: Request) -> str:
    return f"installer at {request.client.host if request.client else 'unknown'}"


def _private_file(path: FilePath) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


async def _received(request: Request, target: FilePath) -> int:
    """The request body written to ``target`` (0600), at most RESTORE_MAX bytes."""
    handle = await asyncio.to_thread(_private_file, target)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > RESTORE_MAX:
                raise HTTPException(413, TOO_BIG)
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return size


def _passphrase(request: Request, language: str) -> str:
    raw = request.headers.get("x-backup-passphrase", "")
    try:
        passphrase = unquote(raw[:4096], errors="strict")
    except UnicodeDecodeError:
        passphrase = ""
    if not 10 <= len(passphrase) <= 1024:
        raise HTTPException(422, t(language, "restore.bad_passphrase"))
    return passphrase


def _empty_to_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if v == "" else v) for k, v in values.items()}


def add_config_routes(app: FastAPI, bridge: Bridge, page: Callable[..., HTMLResponse]) -> None:
    """The set-up pages and API on ``app`` (before its middleware is added)."""

    async def call(name: str, *args: Any, wait: float = 0.0) -> Any:
        from gateway.web.gateway_side import InstallerRefused

        try:
            return await bridge.call(name, *args, extra_wait=wait)
        except InstallerRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except GatewayNotAnswering as exc:
            raise HTTPException(503, str(exc)) from None

    def answer(result: dict[str, Any], request: Request, what: str) -> JSONResponse:
        if result.get("ok"):
            bridge.forget_snapshot()
            audit.info("%s: %s: %s", _who(request), what, result.get("message"))
        return JSONResponse(result, 200 if result.get("ok") else 422)

    @app.get("/devices", response_class=HTMLResponse, include_in_schema=False)
    async def devices_page(request: Request) -> HTMLResponse:
        view = await call("config_view")
        restored = await call("restore_status")
        return page("devices.html", request, s=await bridge.snapshot(), c=view, r=restored)

    @app.get("/mqtt", response_class=HTMLResponse, include_in_schema=False)
    async def mqtt_page(request: Request) -> HTMLResponse:
        view = await call("config_view")
        return page("mqtt.html", request, s=await bridge.snapshot(), c=view)

    @app.get("/api/config", tags=["setup"])
    async def api_config() -> dict[str, Any]:
        """Devices, broker settings, profiles, serial ports and kept versions."""
        result: dict[str, Any] = await call("config_view")
        return result

    @app.put("/api/config/mqtt", tags=["setup"])
    async def api_mqtt(body: MqttBody, request: Request) -> JSONResponse:
        """Save the broker and central settings, and apply them."""
        values = _empty_to_none(body.model_dump())
        result = await call("config_mqtt", values, _who(request), wait=APPLY_WAIT)
        return answer(result, request, "mqtt settings")

    @app.put("/api/config/{kind}/{ident}", tags=["setup"])
    async def api_put(
        kind: Kind, ident: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,64}$")],
        entry: Entry, request: Request,
    ) -> JSONResponse:  # fmt: skip
        """Add or change a board, door or reader, and apply (422 with the problems)."""
        values = {**_empty_to_none(entry.model_dump()), "id": ident}
        result = await call("config_put", kind, values, _who(request), wait=APPLY_WAIT)
        return answer(result, request, f"{kind}[{ident}]")

    @app.delete("/api/config/{kind}/{ident}", tags=["setup"])
    async def api_delete(
        kind: Kind, ident: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,64}$")], request: Request
    ) -> JSONResponse:
        """Remove a board, door or reader, and apply."""
        result = await call("config_remove", kind, ident, _who(request), wait=APPLY_WAIT)
        return answer(result, request, f"remove {kind}[{ident}]")

    @app.post("/api/config/upload/{kind}", tags=["setup"])
    async def api_upload(
        kind: Literal["ca_file", "cert_file", "key_file", "password_file"],
        body: UploadBody,
        request: Request,
    ) -> dict[str, Any]:
        """Keep a CA, client certificate, key or password file (0600); its path."""
        result: dict[str, Any] = await call("config_upload", kind, body.data)
        audit.info("%s: uploaded %s", _who(request), kind)
        return result

    @app.post("/api/config/rollback", tags=["setup"])
    async def api_rollback(body: RollbackBody, request: Request) -> JSONResponse:
        """Go back to a kept version (default: the previous one)."""
        result = await call("config_rollback", body.version, _who(request), wait=APPLY_WAIT)
        return answer(result, request, "rollback")

    @app.post("/api/backup", tags=["setup"], response_class=Response)
    async def api_backup(body: BackupBody, request: Request) -> Response:
        """Config, secrets and the unacknowledged journal, encrypted with the passphrase
        (restore it with ``accessgw restore FILE`` on the replacement box)."""
        made = await call("backup", body.passphrase, _who(request), wait=60)
        path = FilePath(made["path"])
        data = await asyncio.to_thread(path.read_bytes)
        await asyncio.to_thread(path.unlink, True)
        audit.info("%s: backup downloaded (%d bytes)", _who(request), len(data))
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"content-disposition": f'attachment; filename="{path.name}"'},
        )

    @app.post(RESTORE_PATH, tags=["setup"])
    async def api_restore_check(request: Request) -> JSONResponse:
        """Upload a backup (the body) with its passphrase (header ``X-Backup-Passphrase``,
        percent-encoded): opened and checked for this box, nothing changed. 200 with the
        plan to confirm, or 422 with the reason in words."""
        passphrase = _passphrase(request, bridge.language)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise HTTPException(411, "the upload must say its length (Content-Length)")
        if int(length) > RESTORE_MAX:
            raise HTTPException(413, TOO_BIG)
        target = FilePath((await call("restore_upload_path"))["path"])
        try:
            if await _received(request, target) == 0:
                empty = t(bridge.language, "restore.empty")
                return JSONResponse({"ok": False, "message": empty}, 422)
            result = await call("restore_check", target.name, passphrase, _who(request),
                                wait=RESTORE_WAIT)  # fmt: skip
        finally:
            await asyncio.to_thread(target.unlink, True)
        audit.info("%s: backup checked for restore: %s", _who(request), result.get("message"))
        return JSONResponse(result, 200 if result.get("ok") else 422)

    @app.get(RESTORE_PATH, tags=["setup"])
    async def api_restore_status() -> dict[str, Any]:
        """The last restore applied on this box, a staged one, or why one failed."""
        result: dict[str, Any] = await call("restore_status")
        return result

    @app.get("/restore/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def restore_page(token: Token, request: Request) -> HTMLResponse:
        plan = await call("restore_plan", token)
        return page("restore.html", request, s=await bridge.snapshot(), p=plan)

    @app.post(RESTORE_PATH + "/{token}/confirm", tags=["setup"])
    async def api_restore_confirm(token: Token, request: Request) -> dict[str, Any]:
        """Restore the checked backup: the gateway stops (doors to their safe state),
        applies it at its start and comes back as the gateway of the backup."""
        result: dict[str, Any] = await call("restore_confirm", token, _who(request), wait=30)
        audit.info("%s: restore confirmed: %s", _who(request), result.get("message"))
        return result

    @app.delete(RESTORE_PATH + "/{token}", tags=["setup"])
    async def api_restore_cancel(token: Token) -> dict[str, Any]:
        """Forget a checked backup without restoring it."""
        result: dict[str, Any] = await call("restore_cancel", token)
        return result

    @app.post("/api/mqtt/test", tags=["setup"])
    async def api_mqtt_test(body: MqttBody) -> dict[str, Any]:
        """Try broker settings before saving: connected, or the cause in words."""
        result: dict[str, Any] = await call("mqtt_test", _empty_to_none(body.model_dump()), wait=20)
        return result
