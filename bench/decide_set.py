"""``accessgw decide --set`` on a big set file: ``python -m bench.decide_set [--members N]``.

Writes an N-member set (the central simulator's generated members), then times the
command as a support person runs it, and when its first progress line reached stderr.
The floor, same run, same file: reading and decoding the file's JSON in one process with
the fastest decoder at hand and no garbage collection (the least any answer costs).
Target: 1,000,000 members in <= 15 s (scaled for fewer), with a progress line after 2 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import Row, add_cpus_argument, emit, pin_cpus  # noqa: E402
from bench.harness import SITE  # noqa: E402
from simulators.central import default_rules, generated_member  # noqa: E402


def write_set(path: Path, members: int) -> None:
    with path.open("w") as out:
        out.write(json.dumps({"version": 1, "rules": default_rules(SITE)})[:-1])
        out.write(', "records": [')
        for i in range(1, members + 1):
            out.write(("," if i > 1 else "") + json.dumps(generated_member(i)))
        out.write("]}")


def decide_seconds(path: Path, members: int) -> tuple[float, float | None, str]:
    """(seconds, seconds to the first progress line or None, the answer's reason)."""
    command = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())",
               "decide", "--set", str(path), "--nfc", f"04{members // 2:012X}",
               "--site", SITE, "--zone", "gym", "--direction", "in",
               "--at", "2026-11-25T10:00:00+01:00"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    first: float | None = None
    for _line in proc.stderr:
        if first is None:
            first = time.perf_counter() - started
    out = proc.stdout.read()
    proc.wait()
    seconds = time.perf_counter() - started
    return seconds, first, json.loads(out).get("reason", "?") if out else f"exit {proc.returncode}"


def floor_seconds(path: Path) -> float:
    # the fastest decoder here (pydantic-core's), and no cyclic garbage collection walking
    # the records as they are made: the least it can cost
    code = (
        "import gc, sys, pydantic_core; gc.disable(); "
        "pydantic_core.from_json(open(sys.argv[1], 'rb').read(), cache_strings='keys')"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    add_cpus_argument(parser)
    args = parser.parse_args(argv)
    print(f"cores: {pin_cpus(args.cpus)}")
    with tempfile.TemporaryDirectory(prefix="accessgw-bench-") as tmp:
        path = Path(tmp) / "set.json"
        write_set(path, args.members)
        print(f"set file: {path.stat().st_size / 2**20:.0f} MiB")
        floor = floor_seconds(path)
        seconds, first, reason = decide_seconds(path, args.members)
    progress = "no progress line" if first is None else f"progress after {first:.1f} s"
    print(f"decide: {seconds:.1f} s ({reason}); {progress}; floor (JSON read) {floor:.1f} s")
    target = 15 * args.members / 1_000_000
    emit(
        [
            Row(
                f"decide --set, {args.members:,} members",
                seconds,
                "s",
                f"value <= {target:g}",
                floor,
                note=f"{reason}; {progress}; floor: JSON read",
            )
        ],
        "decide --set",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
