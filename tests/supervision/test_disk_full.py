"""Disk full: refused safely, and now also shown (status, web UI data, an event once space
allows) and told at the reader (defect 4). On a real, small tmpfs that this test mounts."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from pathlib import Path

import pytest

from tests.supervision.helpers import (
    ScriptedReader,
    events,
    load_members,
    offline_config,
    running,
    until,
)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m"):
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system to the last byte; the filler file (delete it to free space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
                f.flush()
    return filler


async def test_a_full_disk_is_shown_told_at_the_reader_and_journalled_after(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        async with running(offline_config(disk / "state")) as gw:
            load_members(gw, 1)
            reader = ScriptedReader("r1")
            gw.attach_reader(reader, "in", 0)
            await until(lambda: reader.loops == 1)
            filler = fill(disk)
            for _ in range(50):  # until SQLite needs a page it cannot have
                reader.nfc("04000001")
                await until(lambda: len(reader.feedbacks) >= 1)
                if reader.feedbacks[-1] is False:
                    break
                reader.feedbacks.clear()
                await until(lambda: gw.doors["in"].status()["lock"] == "locked")
            assert reader.feedbacks[-1] is False  # refused, and the reader says so
            status = gw.status()
            assert status["journal"]["state"] == "disk_full"
            assert status["journal"]["decisions_refused"] >= 1
            assert "full" in status["journal"]["reason"]
            assert status["doors"]["in"]["lock"] == "locked"  # nothing journalled, no release
            shown = [e for e in gw.activity.since(-1) if e.get("type") == "disk_full"]
            assert shown  # the installer's live view has it at once
            filler.unlink()  # space again
            reader.feedbacks.clear()
            reader.nfc("04000001")
            await until(lambda: reader.feedbacks == [True])
            assert gw.status()["journal"]["state"] == "ok"
            [event] = await events(gw, "disk_full")
            assert event["detail"]["decisions_refused"] >= 1
            assert event["detail"]["since"] <= event["detail"]["until"]
