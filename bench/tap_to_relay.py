"""Tap to relay, the whole path under load: ``python -m bench.tap_to_relay [--taps N]``.

The daemon as it runs (store with N members, journal, door, reader, link; see
:mod:`bench.daemon_load`): from the PN532 simulator's InListPassiveTarget answer (a card on
the reader) to the coil set on the Modbus TCP relay simulator, p50/p99/max over the taps,
while the outbox drains a backlog of check-ins and a peer's signed check-ins arrive at
200/s. Beside it, the floor: the sum of the parts measured alone in the same run (frame
parse, decision, journal commit, Modbus write), and the journal fsync's share of a tap.
Target: p99 <= 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon_load import COIL, GW, Load, Rig, card, loaded, rig  # noqa: E402
from bench.disk import FsyncProbe  # noqa: E402
from bench.drain import checkin  # noqa: E402
from bench.figures import Row, add_cpus_argument, emit, percentile, pin_cpus  # noqa: E402
from bench.loop_lag import refill  # noqa: E402

PARTS = 200  # samples of each part alone


def stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(x for x in ms if x == x)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99),
            "max": ordered[-1] if ordered else float("nan"),
            "missed": float(len(ms) - len(ordered))}  # fmt: skip


async def parts_alone(r: Rig, workdir: Path) -> dict[str, dict[str, float]]:
    """Each part of a tap on its own, in this process, with nothing else running."""
    from drivers.pn532_frames import IN_LIST_PASSIVE_TARGET, Frame, FrameParser, parse_targets
    from drivers.pn532_frames import reply as chip_reply
    from gateway.decision import DoorContext, Presented, Request, decide
    from gateway.journal import Journal

    out: dict[str, dict[str, float]] = {}
    uid = bytes.fromhex(card(7))
    answer = chip_reply(IN_LIST_PASSIVE_TARGET, bytes((1, 1, 0x00, 0x04, 0x08, len(uid))) + uid)
    samples = []
    for _ in range(PARTS):
        t0 = time.perf_counter()
        found = [
            parse_targets(item.data[1:])
            for item in FrameParser().feed(answer)
            if isinstance(item, Frame)
        ]
        samples.append((time.perf_counter() - t0) * 1000)
    assert found and found[0][0].uid_hex == card(7), found
    out["frame parse"] = stats(samples)
    door = DoorContext("main-in", "gym", "in", r.gateway.site)
    samples = []
    for i in range(PARTS):
        request = Request(Presented("nfc", card(1 + (i * 7919) % r.members)), door,
                          r.gateway.now())  # fmt: skip
        t0 = time.perf_counter()
        decide(request, r.gateway.store, r.gateway.state)
        samples.append((time.perf_counter() - t0) * 1000)
    out["decision"] = stats(samples)
    journal = await Journal.open(workdir / "alone.sqlite", GW)
    samples = []
    for i in range(PARTS):
        t0 = time.perf_counter()
        await journal.record_decision(checkin(i))
        samples.append((time.perf_counter() - t0) * 1000)
    await journal.close()
    out["journal commit (fsync)"] = stats(samples)
    board = r.gateway.boards["relays"]
    changes: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
    listen = lambda index, value, at: index == COIL and changes.put_nowait((value, at))  # noqa: E731
    r.devices.listeners.append(listen)
    samples = []
    for _ in range(PARTS):
        t0 = time.monotonic()
        await board.set_output(COIL, True)
        while not (change := await asyncio.wait_for(changes.get(), 5))[0]:
            pass
        samples.append((change[1] - t0) * 1000)  # the board's own stamp of the write
        await board.set_output(COIL, False)
        while (await asyncio.wait_for(changes.get(), 5))[0]:
            pass
    r.devices.listeners.remove(listen)
    out["Modbus write"] = stats(samples)
    return out


async def taps(r: Rig, count: int) -> list[float]:
    return [await r.tap(i * 7919) for i in range(count)]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        workdir = Path(tmp)
        async with rig(workdir, args.members, backlog=args.backlog) as r:
            await asyncio.sleep(1)
            # The drain starts with the link, while the set is still being loaded: on a slow
            # machine the backlog is gone before the first tap. Topped up here (signed, as
            # the gateway journals), so the taps always run beside a full drain. The parts
            # alone run after the taps, unloaded.
            await refill(r, args.backlog - await r.gateway.journal.pending_count())
            load = Load(r.port, peer_state=str(r.peer_state), peer_rate=args.peer_rate)
            pending_before = await r.gateway.journal.pending_count()
            async with loaded(load):
                with FsyncProbe(workdir) as disk:
                    tapped = await taps(r, args.taps)
                pending_after = await r.gateway.journal.pending_count()
            parts = await parts_alone(r, workdir)
    return {"taps": stats(tapped), "parts": parts, "pending": (pending_before, pending_after),
            "disk": disk.summary()}  # fmt: skip


def rows(m: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    t, parts = m["taps"], m["parts"]
    floor50 = sum(p["p50"] for p in parts.values())
    floor99 = sum(p["p99"] for p in parts.values())
    fsync = parts["journal commit (fsync)"]["p50"]
    before, after = m["pending"]
    load = (
        f"{args.members:,} members, drain {before:,}->{after:,} pending, peers {args.peer_rate:g}/s"
    )
    return [
        Row(f"tap to relay p99 ({load})", t["p99"], "ms", "value <= 15", floor99,
            note="floor: sum of the parts' p99 alone"),
        Row("tap to relay p50", t["p50"], "ms", "", floor50,
            note=f"floor: sum of the parts' p50; journal fsync {100 * fsync / t['p50']:.0f}% "
            "of it"),
        Row("tap to relay max", t["max"], "ms", "", None,
            note=f"{t['missed']:.0f} taps did not open; {m['disk']}"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=100_000, help="check-ins to drain")
    parser.add_argument("--peer-rate", type=float, default=200.0)
    add_cpus_argument(parser)
    args = parser.parse_args(argv)
    print(f"cores: {pin_cpus(args.cpus)}")
    with contextlib.suppress(KeyboardInterrupt):
        m = asyncio.run(measure(args))
        print(f"taps: {m['taps']}")
        for name, figures in m["parts"].items():
            print(f"  alone: {name:24s} p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms")
        emit(rows(m, args), "tap to relay under load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
