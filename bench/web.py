"""Benchmark the web UI's promises (run by hand, not in CI).

    .venv/bin/python bench/web.py flood [--clients 50] [--decisions 400]
    .venv/bin/python bench/web.py why [--members 1000000]

``flood``: the decision latency at the door (``Entrance.present`` on the gateway's loop,
journal included) and the gateway loop's lag, idle and then while N local clients poll the
web UI's dashboard and events as fast as they can. Target: decision p99 within 2 ms of
its idle value (issue 14 point 4), because the UI runs on a loop and thread of its own.

``why``: ``accessgw why --member M --door D`` as a fresh process beside a store of N
members: wall time (Python start-up included) and the lookup alone. Target: <= 1 s at
1,000,000 members.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.figures import (  # noqa: E402
    Row,
    add_cpus_argument,
    emit,
    latency_line,
    percentile,
    pin_cpus,
)
from gateway import niceness  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.daemon import Gateway  # noqa: E402
from gateway.entitlements import parse_record, parse_records, parse_rules  # noqa: E402
from gateway.readers import CredentialRead  # noqa: E402
from gateway.web.auth import read_setup_code  # noqa: E402

RULES = {"site": "bench", "timezone": "Europe/Oslo", "schedules": {}, "opening_schedule": None,
         "zones": {"gym": {}}, "reentry_free_minutes": 0}  # fmt: skip
PASSWORD = "bench password 123"


def config_text(state: Path, port: int) -> str:
    return f"""
[gateway]
id = "bench"
site = "bench"
state_dir = "{state}"
clock = "trusted"
[mqtt]
enabled = false
[web]
port = {port}
[[boards]]
id = "io"
profile = "fake-io"
[[doors]]
id = "main-in"
zone = "gym"
direction = "in"
lock = {{ board = "io", index = 0 }}
"""


def member(i: int) -> dict[str, object]:
    return {"member": f"M{i}", "display": f"Member {i}",
            "credentials": [{"kind": "nfc", "uid": f"04{i:012X}"}],
            "contracts": [{"id": f"C{i}", "type": "recurring", "start": "2026-01-01"}]}  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    """A 10 ms timer that measures its own lateness (the loop's lag)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        samples.append((loop.time() - due) * 1000)


async def decisions(gateway: Gateway, count: int) -> tuple[list[float], list[float]]:
    entrance = gateway.entrances["main-in"]
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(lag_probe(lags, stop))
    out = []
    for i in range(count):
        read = CredentialRead(
            "bench", "nfc", f"05{i:012X}", datetime.now(UTC)
        )  # unknown: no release
        start = time.perf_counter()
        await entrance.present(read)
        out.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.005)
    stop.set()
    await probe
    return out, lags


def sign_in(url: str, state: Path) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    client.get("/setup")
    code = read_setup_code(state / "secrets")
    form = {
        "code": code,
        "password": PASSWORD,
        "again": PASSWORD,
        "csrf": client.cookies["agw_pre"],
    }
    assert client.post("/setup", data=form).status_code in (200, 303)
    return client


def flood(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state, port = Path(tmp), free_port()
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        gateway = Gateway(parse_config(config_text(state, port), "bench"))
        asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(30)
        rules = parse_rules(RULES)
        gateway.store.replace(1, rules, parse_records([member(i) for i in range(1000)], rules), {},
                              datetime.now(UTC))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        client = sign_in(url, state)
        cookies = dict(client.cookies)

        def run(label: str) -> list[float]:
            ms, lags = asyncio.run_coroutine_threadsafe(
                decisions(gateway, args.decisions), loop
            ).result(600)
            print(
                latency_line(
                    f"{label}: decision at the door", ms, unit="decisions", target_p99_ms=None
                )
            )
            print(
                latency_line(f"{label}: gateway loop lag", lags, unit="ticks", target_p99_ms=None)
            )
            return ms

        idle = run("idle")
        # the clients run in a process of their own, as browsers would
        clients = subprocess.Popen(
            [sys.executable, __file__, "clients", url, json.dumps(cookies), str(args.clients)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2)
        started = time.monotonic()
        busy = run(f"{args.clients} clients polling the UI")
        elapsed = time.monotonic() - started
        clients.terminate()
        served = int((clients.communicate(timeout=30)[0] or "0").strip() or 0)
        rate = served / (elapsed + 2)
        p_idle, p_busy = percentile(sorted(idle), 99), percentile(sorted(busy), 99)
        verdict = "ok" if p_busy - p_idle <= 2 else "OVER TARGET"
        print(f"web UI answered {rate:,.0f} requests/s meanwhile")
        print(f"decision p99 idle {p_idle:.2f} ms, under the flood {p_busy:.2f} ms: "
              f"+{p_busy - p_idle:.2f} ms (target <= +2 ms: {verdict})")  # fmt: skip
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


def poll_clients(url: str, cookies: dict[str, str], count: int) -> None:
    """``count`` clients polling the UI until SIGTERM; prints how many answers came."""
    import signal

    stop = threading.Event()
    served = [0]
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def poll() -> None:
        with httpx.Client(base_url=url, cookies=cookies, timeout=30) as c:
            while not stop.is_set():
                for path in ("/api/status", "/api/events", "/"):
                    with contextlib.suppress(httpx.HTTPError):
                        if c.get(path).status_code == 200:
                            served[0] += 1

    os.nice(19)  # stands for browsers elsewhere: their CPU is not the box's
    niceness.give_back_slice("the web clients")  # nor the doors' short time slices
    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    stop.wait()
    print(served[0], flush=True)


def why(args: argparse.Namespace) -> None:
    from gateway.store import EntitlementStore
    from gateway.web.why import why as why_answer

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        (state / "secrets").mkdir(mode=0o700)
        rules = parse_rules(RULES)
        started = time.monotonic()
        store = EntitlementStore.open(state / "store.sqlite", b"k" * 32)
        store.replace(1, rules, (parse_record(member(i), rules) for i in range(args.members)), {},
                      datetime.now(UTC))  # fmt: skip
        store.close()
        print(f"store of {args.members:,} members built in {time.monotonic() - started:.1f} s")
        import sqlite3

        sqlite3.connect(state / "history.sqlite").executescript(
            "CREATE TABLE checkins (gw TEXT, seq INTEGER, at_unix REAL, body TEXT)"
        )
        cfg = state / "accessgw.toml"
        cfg.write_text(config_text(state, free_port()))
        target = f"M{args.members // 2}"
        config = parse_config(cfg.read_text(), str(cfg))
        lookups = []
        for _ in range(20):
            t = time.perf_counter()
            why_answer(config, target, "main-in")
            lookups.append((time.perf_counter() - t) * 1000)
        print(latency_line("why, in-process", lookups, unit="answers", target_p99_ms=None))
        walls = []
        for _ in range(5):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "gateway.cli", "why", "--member", target,
                                  "--door", "main-in", "--config", str(cfg)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
            walls.append((time.perf_counter() - t) * 1000)
        answer = json.loads(out.stdout)
        worst = max(walls) / 1000
        print(latency_line("accessgw why, whole process", walls, unit="runs", target_p99_ms=None))
        print(f"answer: {answer['now']['decision']} ({answer['now']['reason']}); slowest run "
              f"{worst:.2f} s (target <= 1 s at 1,000,000 members: "
              f"{'ok' if worst <= 1 else 'OVER TARGET'})")  # fmt: skip
        # The floor: the same command line starting, importing the CLI and leaving (its
        # ``--help``): what any answer of `accessgw` costs before it reads anything.
        floors = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True,
                           check=True, cwd=ROOT)  # fmt: skip
            floors.append((time.perf_counter() - t) * 1000)
        emit([Row(f"accessgw why, {args.members:,} members, slowest of 5 runs", max(walls),
                  "ms", "value <= 1000", min(floors),
                  note="floor: the CLI started and left (--help)")],
             "the box's own why")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--clients", type=int, default=50)
    f.add_argument("--decisions", type=int, default=400)
    w = sub.add_parser("why")
    w.add_argument("--members", type=int, default=1_000_000)
    add_cpus_argument(w)
    c = sub.add_parser("clients")  # internal: the flood's clients, in their own process
    c.add_argument("url")
    c.add_argument("cookies")
    c.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.what == "why":
        print(f"cores: {pin_cpus(args.cpus)}")
    if args.what == "clients":
        poll_clients(args.url, json.loads(args.cookies), args.count)
    else:
        flood(args) if args.what == "flood" else why(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
