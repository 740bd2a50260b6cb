"""Fuzz for the web UI's forms and routes: every one that takes outside input, fed random
and mutated fields with a valid session and CSRF token (issue 9, "Must show": web forms).

The app runs in-process (httpx's ASGITransport) over the real channel to a real gateway
(offline, a fake board, a config file the set-up routes change). For every input: no 500
and no crash; an input refused (4xx) changes nothing (config file, its kept versions, the
installer's password, the doors' modes); memory stays bounded. The routes are listed from
the app itself: a new route that is neither fuzzed below nor named as taking no input
fails :func:`test_every_route_is_fuzzed_or_takes_no_input`.

Modest counts in CI; ``ACCESSGW_FUZZ_LONG=1`` runs 1,000,000 inputs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from gateway.config import parse_config
from gateway.daemon import Gateway
from gateway.web.app import WebContext, create_app
from gateway.web.auth import InstallerAuth, read_setup_code
from gateway.web.bridge import Bridge
from gateway.web.channel import GatewayEnd, UiEnd
from gateway.web.eventlog import EventLog
from gateway.web.gateway_side import GatewaySide
from tests.fuzz.budget import budget
from tests.supervision.helpers import load_members, offline_config

PASSWORD = "fuzzing the forms 1"
HOST = "127.0.0.1"

# --- what each route takes -------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One route that takes input: where it goes (``{x}`` are path parameters) and a valid
    example of each part, which the strategies below mutate."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    query: dict[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    raw: bool = False  # the body is a file (a backup), with its passphrase in a header


FORMS = [
    Form(
        "POST",
        "/setup",
        form={"code": "ABCD-EFGH", "password": PASSWORD, "again": PASSWORD, "csrf": "pre"},
    ),
    Form("POST", "/login", form={"password": "not the password", "csrf": "pre"}),
    Form("GET", "/events", query={"door": "in", "reason": "ok", "member": "M1", "before": "5"}),
    Form("GET", "/why", query={"member": "M1", "door": "in"}),
    Form(
        "GET",
        "/api/events",
        query={"door": "in", "reason": "ok", "member": "M1", "before": "9", "limit": "20"},
    ),
    Form(
        "GET",
        "/api/events.csv",
        query={
            "door": "in",
            "reason": "ok",
            "member": "M",
            "since": "2026-12-01T00:00:00+00:00",
            "until": "2026-12-03T00:00:00+01:00",
        },
    ),
    Form("GET", "/api/why", query={"member": "M1", "door": "in"}),
    Form("POST", "/api/tools/pulse", json={"board": "io", "index": 5, "seconds": 0.1}),
    Form("POST", "/api/tools/door", json={"door": "out", "action": "normal", "seconds": 1}),
    Form("POST", "/api/tools/osdp-install", json={"reader": "r1", "confirm": "r1"}),
    Form("POST", "/api/tools/next-card", json={"reader": "nobody", "wait": 1}),
    Form(
        "POST",
        "/api/tools/try",
        json={"door": "in", "kind": "nfc", "value": "04000001", "format": None},
    ),
    Form(
        "PUT",
        "/api/config/mqtt",
        json={"enabled": False, "host": "127.0.0.1", "port": 1, "protocol": "5", "tls": False},
    ),
    Form(
        "PUT",
        "/api/config/{kind}/{ident}",
        params={"kind": "boards", "ident": "io2"},
        json={"profile": "fake-io"},
    ),
    Form("DELETE", "/api/config/{kind}/{ident}", params={"kind": "readers", "ident": "none"}),
    Form(
        "POST",
        "/api/config/upload/{kind}",
        params={"kind": "ca_file"},
        json={"data": base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()},
    ),
    Form("POST", "/api/config/rollback", json={"version": 99}),
    Form("POST", "/api/backup", json={"passphrase": "short"}),
    Form("POST", "/api/restore", raw=True),
    Form("GET", "/restore/{token}", params={"token": "0123456789abcdef"}),
    Form("POST", "/api/restore/{token}/confirm", params={"token": "0123456789abcdef"}),
    Form("DELETE", "/api/restore/{token}", params={"token": "0123456789abcdef"}),
    Form(
        "POST",
        "/api/mqtt/test",
        json={"enabled": True, "host": "127.0.0.1", "port": 1, "protocol": "5", "tls": False},
    ),
]
# routes that take no outside input, and why they are not fuzzed
NO_INPUT = {
    ("GET", "/setup"), ("GET", "/login"), ("GET", "/"), ("GET", "/partials/dashboard"),
    ("GET", "/tools"), ("GET", "/devices"), ("GET", "/mqtt"), ("GET", "/api/status"),
    ("GET", "/api/config"), ("GET", "/api/restore"), ("GET", "/api/openapi.json"),
    ("POST", "/api/tools/resync"),  # no body; with no MQTT it is refused (409) every time
    ("POST", "/logout"),  # no input; it would end the fuzzer's own session
    ("GET", "/api/stream"),  # no input; a live stream that never ends by design
}  # fmt: skip

# --- the strategies ----------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=60, max_size=600),
    st.sampled_from(["", "0", "-1", "1e309", "NaN", "null", "../../etc/passwd", "in", "io",
                     "\x00", "9" * 30, "%ff", "<script>", "2026-13-45T25:61",
                     "9999-12-31T23:59:59-23:59", "M1", "*"]),
)  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=8,
)


def mutated(example: dict[str, Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``example`` with some fields changed, dropped or added (or something else entirely)."""

    def mutate(ops: list[tuple[int, str, Any]]) -> dict[str, Any]:
        out = dict(example)
        keys = list(example) or ["x"]
        for op, key, value in ops:
            name = keys[hash(key) % len(keys)]
            if op == 0:
                out[name] = value
            elif op == 1:
                out.pop(name, None)
            else:
                out[key] = value
        return out

    ops = st.lists(st.tuples(st.integers(0, 2), texts, values), max_size=4)
    return st.one_of(ops.map(mutate), st.dictionaries(texts, values, max_size=6))


@dataclass
class Attempt:
    method: str
    url: str
    kwargs: dict[str, Any]


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    form = draw(st.sampled_from(FORMS))
    path = form.path
    for name, valid in form.params.items():
        value = draw(st.one_of(st.just(valid), texts))
        path = path.replace("{" + name + "}", quote(value, safe="") or "x")
    kwargs: dict[str, Any] = {}
    if form.query is not None:
        if draw(st.integers(0, 9)) == 0:  # a query string as it comes (%ff, no '=')
            raw = draw(st.binary(max_size=120))
            path += "?" + quote(raw, safe="=&%+")
        else:
            query = draw(mutated(form.query, texts))
            kwargs["params"] = {str(k): str(v) for k, v in query.items()}
    if form.form is not None:
        if draw(st.integers(0, 9)) == 0:  # bytes as they come (bad UTF-8, bad escapes)
            kwargs["content"] = draw(st.binary(max_size=300))
            kwargs["headers"] = {"content-type": "application/x-www-form-urlencoded"}
        else:
            data = draw(mutated(form.form, texts))
            kwargs["data"] = {str(k): str(v) for k, v in data.items()}
    if form.json is not None:
        body = draw(st.one_of(mutated(form.json, json_values), json_values))
        if draw(st.integers(0, 9)) == 0:  # not JSON at all
            kwargs["content"] = draw(st.binary(max_size=200))
            kwargs["headers"] = {"content-type": "application/json"}
        else:
            kwargs["json"] = body
    if form.raw:
        kwargs["content"] = draw(st.binary(max_size=2000))
        passphrase = draw(st.one_of(texts, st.binary(max_size=40).map(quote)))
        with contextlib.suppress(UnicodeEncodeError):
            passphrase.encode("ascii")  # what a header can carry (the UI percent-encodes)
            kwargs["headers"] = {"x-backup-passphrase": passphrase}
    return Attempt(form.method, path, kwargs)


# --- the app, in-process, over the real channel to a real gateway -------------------------


class InProcessUi:
    """A gateway and its web app on one loop in a thread; requests sent from the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.config_path = root / "accessgw.toml"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ui", daemon=True)
        self.tasks: list[asyncio.Task[Any]] = []

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> InProcessUi:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        text = offline_config(self.state)
        self.config_path.write_text(text, encoding="utf-8")
        self.gateway = Gateway(parse_config(text, "fuzz"), config_path=self.config_path)
        await self.gateway.start()
        load_members(self.gateway, 1, 2)
        secrets_dir = self.state / "secrets"
        auth = InstallerAuth(secrets_dir)
        auth.ensure_setup_code()
        ours, theirs = socket.socketpair()
        end = GatewayEnd(GatewaySide(self.gateway), ours)
        self.gateway.activity.listen(end.offer)
        self.events = EventLog(self.root / "web-events.sqlite")
        ui = UiEnd(theirs, self.events.offer)
        self.events.start()
        self.tasks = [asyncio.create_task(end.run()), asyncio.create_task(ui.run())]
        ctx = WebContext(auth=auth, bridge=Bridge(ui.call), events=self.events,
                         hosts=frozenset({HOST}), loop=asyncio.get_running_loop())  # fmt: skip
        self.app = create_app(ctx)
        self.client = self._client(("127.0.0.1", 50000))
        self.stranger = self._client(("192.0.2.7", 50001))  # signs in with guesses
        code = read_setup_code(secrets_dir)
        await self.client.get("/setup")
        pre = self.client.cookies["agw_pre"]
        form = {"code": code, "password": PASSWORD, "again": PASSWORD, "csrf": pre}
        answer = await self.client.post("/setup", data=form)
        assert answer.status_code == 303, answer.text
        home = await self.client.get("/")
        csrf = home.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
        self.client.headers["x-csrf-token"] = csrf
        await self.stranger.get("/login")

    def _client(self, client: tuple[str, int]) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=client)
        return httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}", timeout=60)

    def stop(self) -> None:
        async def stop() -> None:
            await self.client.aclose()
            await self.stranger.aclose()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.gateway.stop()
            await asyncio.to_thread(self.events.stop)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def state_now(self) -> tuple[str, ...]:
        """What a refused input must leave as it was."""
        versions = sorted(p.name for p in self.state.rglob("*") if "version" in p.name)
        hash_file = self.state / "secrets" / "installer.hash"

        async def modes() -> str:
            return json.dumps({d: door.mode for d, door in self.gateway.doors.items()})

        return (
            hashlib.sha256(self.config_path.read_bytes()).hexdigest(),
            hashlib.sha256(hash_file.read_bytes()).hexdigest(),
            ",".join(versions),
            self.run(modes()),
        )

    def send(self, attempt: Attempt) -> httpx.Response:
        who = self.stranger if attempt.url in ("/login", "/setup") else self.client
        if attempt.url in ("/login", "/setup") and "data" in attempt.kwargs:
            attempt.kwargs["data"].setdefault("csrf", who.cookies.get("agw_pre", ""))
        request = who.request(attempt.method, attempt.url, **attempt.kwargs)
        response: httpx.Response = self.run(request)
        return response


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessUi]:
    app = InProcessUi(tmp_path_factory.mktemp("web-fuzz")).start()
    yield app
    app.stop()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_every_route_is_fuzzed_or_takes_no_input(ui: InProcessUi) -> None:
    served = set()
    for route in ui.app.routes:
        if isinstance(route, Mount):
            continue  # /static: files of the package, no input
        assert isinstance(route, Route)
        served |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    fuzzed = {(f.method, f.path) for f in FORMS}
    assert served - fuzzed - NO_INPUT == set(), "a new route: fuzz it (FORMS) or say why not"
    assert fuzzed <= served and NO_INPUT <= served | {("GET", "/api/openapi.json")}


class Failures(logging.Handler):
    """The gateway side's "web UI call ... failed" (a bug met, not a refusal in words)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def test_web_forms_fed_random_and_mutated_fields(ui: InProcessUi) -> None:
    statuses: dict[int, int] = {}
    baseline: list[int] = []
    failures = Failures()
    logging.getLogger("accessgw.web").addHandler(failures)

    @budget(ci=400)
    @given(attempts())
    def one(attempt: Attempt) -> None:
        before = ui.state_now()
        response = ui.send(attempt)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (attempt, response.status_code, response.text[:300])
        assert failures.seen == [], (attempt, failures.seen)  # refused in words, never failed
        if response.status_code >= 400:  # refused: nothing changed
            assert ui.state_now() == before, (attempt, response.status_code)
        if not baseline and sum(statuses.values()) >= 50:
            baseline.append(rss_kib())

    try:
        one()
    finally:
        logging.getLogger("accessgw.web").removeHandler(failures)
    assert sum(statuses.values()) >= 100
    assert any(400 <= s < 500 for s in statuses) and any(s < 400 for s in statuses)
    grew = rss_kib() - (baseline[0] if baseline else rss_kib())
    assert grew < 64 * 1024, f"memory grew by {grew} KiB"  # bounded, also over 1,000,000
    # the gateway and the UI are still there: the dashboard answers, a valid tool works
    assert ui.run(ui.client.get("/api/status")).status_code == 200
    print(f"web forms fuzz: {sum(statuses.values())} inputs, statuses {sorted(statuses.items())}")


def test_a_csv_range_at_the_end_of_time_is_no_500(ui: InProcessUi) -> None:
    """Found by the long form: ``since`` of year 9999 at -23:00 overflowed in UTC (a 500)."""
    for since, until_ in (("9999-12-31T01:00:00-23:00", "9999-12-31T23:00:00-23:59"),
                          ("0001-01-01T00:00:00+23:00", "0001-01-01T01:00:00+23:59")):  # fmt: skip
        query = {"since": since, "until": until_}
        response = ui.run(ui.client.get("/api/events.csv", params=query))
        assert response.status_code == 200, response.text[:300]
