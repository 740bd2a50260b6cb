"""The installer's web app: pages (Jinja2) and the JSON API under ``/api/``.

Every page and API route needs a signed-in session except sign-in and first-time setup
(``PUBLIC``); the check sits in one middleware, so a new route cannot forget it. State
changes need the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf``).
Only the configured host names are answered (DNS rebinding), and every answer carries the
security headers. The app runs on the web UI's own loop; what it needs of the gateway goes
through :class:`gateway.web.bridge.Bridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import __version__
from gateway.web.auth import MIN_PASSWORD, InstallerAuth, Session, password_problem
from gateway.web.bridge import Bridge, GatewayNotAnswering
from gateway.web.config_routes import RESTORE_MAX, RESTORE_PATH, add_config_routes
from gateway.web.eventlog import EventLog, Filter
from gateway.web.gateway_side import DOOR_TEST_MAX_SECONDS, PULSE_MAX_SECONDS, InstallerRefused
from gateway.web.i18n import js_words, language_of, number, say, seconds, t
from gateway.web.words import duration, local_time, shown

log = logging.getLogger("accessgw.web")
audit = logging.getLogger("accessgw.audit")

COOKIE = "agw_session"
PRE_COOKIE = "agw_pre"  # CSRF token of the sign-in and setup forms (no session yet)
PUBLIC = ("/login", "/setup", "/static/")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAX_BODY = 64 * 1024
SSE_CLIENTS = 20
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
Id = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")]


@dataclass
class WebContext:
    """What the app runs on: sign-in, the gateway bridge, the history and a few settings."""

    auth: InstallerAuth
    bridge: Bridge
    events: EventLog
    hosts: frozenset[str]
    secure_cookies: bool = False
    heartbeat: float = 2.0
    live: set[asyncio.Queue[list[dict[str, Any]]]] = field(default_factory=set)
    loop: asyncio.AbstractEventLoop | None = None
    closing: bool = False

    def rows_stored(self, rows: list[dict[str, Any]]) -> None:
        """New history rows (writer thread): pass them to the live streams on the web loop."""
        loop = self.loop
        if rows and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, rows)

    def close_streams(self) -> None:
        """The server stops: end every live stream now (any thread)."""
        self.closing = True
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, [])

    def _fan_out(self, rows: list[dict[str, Any]]) -> None:
        for q in list(self.live):
            if q.qsize() < 100:  # a slow browser misses rows rather than holding memory
                q.put_nowait(rows)


# --- request bodies (the OpenAPI document describes them) ---------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PulseBody(_Body):
    board: Id
    index: int = Field(ge=0, le=1023)
    seconds: float = Field(ge=0.1, le=PULSE_MAX_SECONDS)


class DoorTestBody(_Body):
    door: Id
    action: Literal["unlock", "lockdown", "normal"]
    seconds: int = Field(5, ge=1, le=DOOR_TEST_MAX_SECONDS)


class NextCardBody(_Body):
    reader: Id
    wait: float = Field(30, ge=1, le=120)


class TryBody(_Body):
    door: Id
    kind: Literal["nfc", "code", "pass"]
    value: str = Field(min_length=1, max_length=4096)
    format: Literal["wiegand26"] | None = None


class EnrollBody(_Body):
    reader: Id
    confirm: Id = Field(description="the reader id again: install mode replaces its key")


class Answer(BaseModel):
    """The result of a tool, in words."""

    ok: bool
    message: str


# --- the app ------------------------------------------------------------------------------------


def _templates() -> Environment:
    folder = resources.files("gateway.web") / "templates"
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(["html"]))
    # each page is rendered with ``lang``: the filters write in it
    env.filters["duration"] = pass_context(lambda c, v: duration(v, _lang(c)))
    env.filters["local"] = pass_context(lambda c, at, tz: local_time(at, tz, _lang(c)))
    env.filters["say"] = pass_context(lambda c, code, family: say(_lang(c), family, code))
    env.filters["number"] = pass_context(lambda c, v, decimals=0: number(_lang(c), v, decimals))
    return env


def _lang(context: Context) -> str:
    return language_of(context.get("lang"))


def _words(language: str) -> Callable[..., Markup]:
    """``_("id", name=value)`` in the templates: the catalogue's text, escaped, with its
    values escaped too unless they are markup (a ``<code>`` the page puts in)."""

    def words(key: str, **values: object) -> Markup:
        text = t(language, key)
        return Markup.escape(text).format(**values) if values else Markup.escape(text)

    return words


class Guard:
    """Host allow-list, size limit, session check, CSRF check and security headers."""

    def __init__(self, app: ASGIApp, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.ctx.loop is None:  # the live streams are fed on this loop
            self.ctx.loop = asyncio.get_running_loop()
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await _with_headers(refusal)(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        host = (request.headers.get("host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in self.ctx.hosts:
            return JSONResponse({"detail": f"host {host!r} is not served here"}, 421)
        path = request.url.path
        limit = RESTORE_MAX if path == RESTORE_PATH else MAX_BODY  # an uploaded backup
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > limit):
            return JSONResponse({"detail": "request body too large"}, 413)
        if path.startswith(PUBLIC):
            return None
        session = self.ctx.auth.session(request.cookies.get(COOKIE))
        if session is None:
            if path.startswith("/api/"):
                return JSONResponse({"detail": "sign in first"}, 401)
            target = "/setup" if self.ctx.auth.needs_setup() else "/login"
            return RedirectResponse(target, 303)
        request.scope.setdefault("state", {})["session"] = session
        if request.method in UNSAFE:
            token = request.headers.get("x-csrf-token", "")
            if not (token and _same_secret(token, session.csrf)):
                return JSONResponse({"detail": "missing or wrong CSRF token"}, 403)
        return None


_SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}


def _with_headers(response: Response) -> Response:
    for key, value in _SECURITY_HEADERS.items():
        response.headers[key] = value
    return response


def _same_secret(given: str, expected: str) -> bool:
    """A constant-time comparison of tokens as bytes: ``compare_digest`` raises TypeError
    for non-ASCII text, and a request may carry any (a 500 before)."""
    return secrets.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _session(request: Request) -> Session:
    session = request.scope.get("state", {}).get("session")
    if not isinstance(session, Session):  # the guard lets no request without one through
        raise HTTPException(401, "sign in first")
    return session


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(ctx: WebContext) -> FastAPI:
    """The installer's web app over ``ctx``."""
    app = FastAPI(
        title="accessgw installer API",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    env = _templates()
    static = resources.files("gateway.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    bridge, events, auth = ctx.bridge, ctx.events, ctx.auth

    def page(name: str, request: Request, **values: Any) -> HTMLResponse:
        session = request.scope.get("state", {}).get("session")
        lang = bridge.language
        html = env.get_template(name).render(
            csrf=session.csrf if isinstance(session, Session) else "",
            signed_in=isinstance(session, Session),
            path=request.url.path,
            version=__version__,
            lang=lang,
            _=_words(lang),
            js_words=js_words(lang),
            min_password=MIN_PASSWORD,
            **values,
        )
        return HTMLResponse(html)

    async def tool(request: Request, action: Callable[[], Awaitable[str]]) -> Answer:
        with refusals_in_words():
            message = await action()
        bridge.forget_snapshot()
        audit.info("installer at %s: %s", _client(request), message)
        return Answer(ok=True, message=message)

    async def snapshot() -> dict[str, Any]:
        return await bridge.snapshot()

    # --- first start and signing in -------------------------------------------------------

    def pre_token(request: Request) -> str:
        return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)

    def with_pre(response: Response, token: str) -> Response:
        response.set_cookie(
            PRE_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies, path="/"
        )
        return response

    def pre_ok(request: Request, form_token: str) -> bool:
        cookie = request.cookies.get(PRE_COOKIE, "")
        return bool(cookie) and _same_secret(cookie, form_token)

    def form_gate(
        request: Request, template: str, csrf: str
    ) -> tuple[Callable[[str, int], Response], Response | None]:
        """The sign-in and setup forms: the page again with an error, and the refusal of
        a stale form or of a client that must still wait after wrong tries."""
        token = pre_token(request)

        def again(error: str, status: int) -> Response:
            body = page(template, request, pre=token, error=error)
            body.status_code = status
            return with_pre(body, token)

        lang = bridge.language
        if not pre_ok(request, csrf):
            return again, again(t(lang, "login.expired"), 403)
        wait = auth.throttle.wait_for(_client(request))
        if wait > 0:
            return again, again(t(lang, "login.wait", seconds=f"{wait:.0f}"), 429)
        return again, None

    @app.get("/setup", response_class=HTMLResponse, include_in_schema=False)
    async def setup_page(request: Request) -> Response:
        if not auth.needs_setup():
            return RedirectResponse("/login", 303)
        await bridge.site()  # the site's language, before anyone signs in
        token = pre_token(request)
        return with_pre(page("setup.html", request, pre=token, error=None), token)

    @app.post("/setup", include_in_schema=False)
    async def setup(
        request: Request,
        code: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=512)],
        again: Annotated[str, Form(max_length=512)],
        csrf: Annotated[str, Form(max_length=128)] = "",
    ) -> Response:
        client = _client(request)
        if not auth.needs_setup():
            return RedirectResponse("/login", 303)
        again_page, refusal = form_gate(request, "setup.html", csrf)
        if refusal is not None:
            return refusal
        lang = bridge.language
        problem = password_problem(password, lang) or (
            t(lang, "password.differ") if password != again else None
        )
        if problem:
            return again_page(problem, 400)
        if not await asyncio.to_thread(auth.use_setup_code, code, password):
            auth.throttle.failed(client)
            audit.warning("setup: wrong setup code from %s", client)
            return again_page(t(lang, "setup.wrong_code"), 403)
        audit.info("setup: installer password set from %s", client)
        await _installer_event(bridge, "password_set", client)
        return await _signed_in(auth, client, ctx.secure_cookies)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request) -> Response:
        if auth.needs_setup():
            return RedirectResponse("/setup", 303)
        await bridge.site()  # the site's language, before anyone signs in
        token = pre_token(request)
        return with_pre(page("login.html", request, pre=token, error=None), token)

    @app.post("/login", include_in_schema=False)
    async def login(
        request: Request,
        password: Annotated[str, Form(max_length=512)],
        csrf: Annotated[str, Form(max_length=128)] = "",
    ) -> Response:
        client = _client(request)
        again_page, refusal = form_gate(request, "login.html", csrf)
        if refusal is not None:
            return refusal
        if not await asyncio.to_thread(auth.check_password, password):
            auth.throttle.failed(client)
            audit.warning("sign-in failed from %s", client)
            wait = auth.throttle.wait_for(client)
            return again_page(t(bridge.language, "login.wrong", seconds=f"{wait:.0f}"), 401)
        auth.throttle.succeeded(client)
        audit.info("installer signed in from %s", client)
        return await _signed_in(auth, client, ctx.secure_cookies)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        auth.close_session(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- pages ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard(request: Request) -> HTMLResponse:
        s = await snapshot()
        rows = await asyncio.to_thread(events.page, Filter(), limit=10)
        tz, lang = s.get("tz", "UTC"), s.get("language", "en")
        return page("dashboard.html", request, s=s, rows=[shown(r, tz, lang) for r in rows])

    @app.get("/partials/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_part(request: Request) -> HTMLResponse:
        return page("dashboard_body.html", request, s=await snapshot())

    @app.get("/events", response_class=HTMLResponse, include_in_schema=False)
    async def events_page(
        request: Request,
        door: Annotated[str | None, Query(max_length=64)] = None,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        member: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    ) -> HTMLResponse:
        s = await bridge.site()
        flt = Filter(door=door or None, what=reason or None, member=member or None)
        rows = await asyncio.to_thread(events.page, flt, before=before, limit=50)
        tz, lang = s.get("tz", "UTC"), s.get("language", "en")
        return page(
            "events.html",
            request,
            s=s,
            rows=[shown(r, tz, lang) for r in rows],
            f={"door": door or "", "reason": reason or "", "member": member or ""},
            older=rows[-1]["id"] if len(rows) == 50 else None,
        )

    @app.get("/tools", response_class=HTMLResponse, include_in_schema=False)
    async def tools_page(request: Request) -> HTMLResponse:
        return page("tools.html", request, s=await snapshot())

    @app.get("/why", response_class=HTMLResponse, include_in_schema=False)
    async def why_page(
        request: Request,
        member: Annotated[str | None, Query(max_length=64)] = None,
        door: Annotated[str | None, Query(max_length=64)] = None,
    ) -> HTMLResponse:
        s = await snapshot()
        answer = await why_answer(member, door, s) if member else None
        return page("why.html", request, s=s, q=member or "", door=door or "", a=answer)

    # --- the JSON API --------------------------------------------------------------------------

    @app.get("/api/status", tags=["dashboard"])
    async def api_status() -> dict[str, Any]:
        """Doors, readers, boards, the link, the entitlement set, journal, clock, version."""
        return await snapshot()

    @app.get("/api/events", tags=["events"])
    async def api_events(
        door: Annotated[str | None, Query(max_length=64)] = None,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        member: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Stored decisions and events, newest first; page back with ``before``."""
        s = await bridge.site()
        flt = Filter(door=door, what=reason, member=member)
        rows = await asyncio.to_thread(events.page, flt, before=before, limit=limit)
        return [shown(r, s.get("tz", "UTC"), s.get("language", "en")) for r in rows]

    @app.get("/api/events.csv", tags=["events"], response_class=StreamingResponse)
    async def api_events_csv(
        door: Annotated[str | None, Query(max_length=64)] = None,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        member: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> StreamingResponse:
        """The filtered history as CSV, oldest first (at most 100,000 rows)."""
        s = await bridge.site()
        flt = Filter(door=door, what=reason, member=member, since=since, until=until)
        rows = await asyncio.to_thread(lambda: list(events.export(flt)))
        tz, lang = s.get("tz", "UTC"), s.get("language", "en")
        return StreamingResponse(
            _csv(rows, tz, lang),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="accessgw-events.csv"'},
        )

    @app.get("/api/stream", tags=["dashboard"], response_class=StreamingResponse)
    async def api_stream(request: Request) -> StreamingResponse:
        """Server-sent events: ``status`` every couple of seconds, ``rows`` as they happen."""
        if len(ctx.live) >= SSE_CLIENTS:
            raise HTTPException(503, "too many live views open; close one")
        return StreamingResponse(
            _stream(request, ctx), media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )  # fmt: skip

    @app.post("/api/tools/pulse", tags=["tools"])
    async def api_pulse(body: PulseBody, request: Request) -> Answer:
        """Switch one relay output on for N seconds."""
        who = _client(request)
        return await tool(
            request,
            lambda: bridge.call("pulse", body.board, body.index, body.seconds, who),
        )

    @app.post("/api/tools/door", tags=["tools"])
    async def api_door(body: DoorTestBody, request: Request) -> Answer:
        """Door test: unlock for N s, lockdown, or back to normal."""
        who = _client(request)
        return await tool(
            request,
            lambda: bridge.call("door_test", body.door, body.action, body.seconds, who),
        )

    @app.post("/api/tools/resync", tags=["tools"])
    async def api_resync(request: Request) -> Answer:
        """Ask the central system for a full snapshot of the entitlement set."""
        who = _client(request)
        return await tool(request, lambda: bridge.call("resync", who))

    @app.post("/api/tools/osdp-install", tags=["tools"])
    async def api_enroll(body: EnrollBody, request: Request) -> Answer:
        """OSDP install mode: give the reader a new Secure Channel key (confirm with its id)."""
        if body.confirm != body.reader:
            raise HTTPException(400, t(bridge.language, "tool.confirm"))
        who = _client(request)
        return await tool(request, lambda: bridge.call("enroll", body.reader, who))

    @app.post("/api/tools/next-card", tags=["tools"])
    async def api_next_card(body: NextCardBody, request: Request) -> dict[str, Any]:
        """Wait for the next credential at a reader: its full value and format."""
        with refusals_in_words():
            read = await bridge.call(
                "next_card", body.reader, body.wait, _client(request), extra_wait=body.wait
            )
        if read is None:
            lang = bridge.language
            text = t(lang, "tool.no_card", reader=body.reader, seconds=seconds(lang, body.wait))
            return {"seen": False, "message": text}
        return {"seen": True, **read}

    @app.post("/api/tools/try", tags=["tools"])
    async def api_try(body: TryBody) -> dict[str, Any]:
        """What the door would decide for this credential now (nothing opens or is recorded)."""
        with refusals_in_words():
            result: dict[str, Any] = await bridge.call(
                "try_credential", body.kind, body.value, body.format, body.door
            )
        return result

    async def why_answer(member: str, door: str | None, s: dict[str, Any]) -> dict[str, Any]:
        tz, lang = s.get("tz", "UTC"), s.get("language", "en")
        with refusals_in_words():
            record = await bridge.call("member", member)
            matches: list[tuple[str, str | None]] = []
            if record is None:
                matches = await asyncio.to_thread(events.members_named, member)
                if len(matches) == 1:
                    member = matches[0][0]
                    record = await bridge.call("member", member)
            now = None
            if door and record is not None:
                now = await bridge.call("what_if", member, door)
        rows = await asyncio.to_thread(
            events.page, Filter(member=member, kind="decision"), limit=20
        )
        return {
            "member": member,
            "record": record,
            "matches": [{"member": m, "display": d} for m, d in matches],
            "decisions": [shown(r, tz, lang) for r in rows if r["member"] == member],
            "now": now,
            "door": door,
        }

    @app.get("/api/why", tags=["why"])
    async def api_why(
        member: Annotated[str, Query(min_length=1, max_length=64)],
        door: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """A member (by id or the start of a name): record, last decisions, and "what now"."""
        return await why_answer(member, door, await bridge.site())

    add_config_routes(app, bridge, page)  # devices and MQTT set-up (gateway.web.config_routes)
    app.add_middleware(Guard, ctx=ctx)
    return app


@contextlib.contextmanager
def refusals_in_words() -> Iterator[None]:
    """A tool the gateway refused (409) or a gateway that did not answer (503), in words."""
    try:
        yield
    except InstallerRefused as exc:
        raise HTTPException(409, str(exc)) from None
    except GatewayNotAnswering as exc:
        raise HTTPException(503, str(exc)) from None


async def _signed_in(auth: InstallerAuth, client: str, secure: bool) -> Response:
    session = auth.open_session(client)
    response = RedirectResponse("/", 303)
    response.set_cookie(
        COOKIE, session.token, httponly=True, samesite="strict", secure=secure, path="/",
    )  # fmt: skip
    return response


async def _installer_event(bridge: Bridge, action: str, client: str) -> None:
    try:
        await bridge.call("installer_event", action, client)
    except GatewayNotAnswering:
        log.warning("installer action %s not journalled: the gateway did not answer", action)


def _csv(rows: list[dict[str, Any]], tz: str, lang: str) -> Iterator[str]:
    """The rows for a spreadsheet or a script: the header, codes and the sortable local time
    stay the same in every language; the ``text`` column is in the site's language."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "local_time", "utc", "kind", "door", "member", "name", "decision",
                     "reason", "text", "warnings", "latency_ms"])  # fmt: skip
    for row in rows:
        r = shown(row, tz, lang)
        writer.writerow([r["id"], local_time(r["at"], tz), r["at"], r["kind"], r["door"] or "",
                         r["member"] or "", r["display"] or "", r["decision"] or "",
                         r["what"], _cell(r["text"]), " ".join(r["warnings"]),
                         "" if r["latency_ms"] is None else r["latency_ms"]])  # fmt: skip
        if out.tell() > 64_000:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def _cell(text: str) -> str:
    """No spreadsheet formulas from data (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


async def _stream(request: Request, ctx: WebContext) -> AsyncIterator[str]:
    rows: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    ctx.live.add(rows)
    try:
        status = await ctx.bridge.snapshot()
        yield _sse("status", status)
        while not ctx.closing and not await request.is_disconnected():
            try:
                batch = await asyncio.wait_for(rows.get(), ctx.heartbeat)
            except TimeoutError:
                status = await ctx.bridge.snapshot()
                yield _sse("status", status)
                continue
            if not batch:
                continue
            tz, lang = status.get("tz", "UTC"), status.get("language", "en")
            yield _sse("rows", [shown(r, tz, lang) for r in batch])
    finally:
        ctx.live.discard(rows)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"
