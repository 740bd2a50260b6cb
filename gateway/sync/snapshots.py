"""Snapshots (PROTOCOL.md, Entitlement sync) built in a process of their own.

A snapshot of a big site is hundreds of chunks of 2,000 records. Opening, validating and
storing a million records is a minute of CPU; done in the gateway's process it would stall
the doors' decisions (the GIL), and gathering the chunks in memory would not fit a 1 GB
gateway. So the gateway hands each chunk's payload, unopened, to a snapshot builder
process: it verifies the envelope, validates the records and writes them to a
:class:`~gateway.store.StagedSet` as they arrive, holding one chunk at a time. When all k
chunks of version N are in, it finishes the staged file and says so; the gateway then
adopts it (:meth:`~gateway.store.EntitlementStore.adopt`), the whole set at once.

The parent's side is :class:`SnapshotBuilder`; the child's is :class:`SnapshotStager` run by
:func:`main` (``python -m gateway.sync.snapshots``). They speak over the child's stdin and
stdout: the parent writes a JSON header line and the payload bytes, the child answers one
JSON line per chunk. The HMAC key travels in the first header, never on a command line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import niceness
from gateway.entitlements import SiteRules, parse_rules, schedule_uses, undefined_schedules
from gateway.errors import AccessGwError, BadMessage, InvalidSet
from gateway.staged_set import StagedSetProcess, peak_rss_kib
from gateway.store import StagedSet, Staging
from gateway.sync.bodies import (
    CHUNK_RECORDS,
    ChunkHeader,
    parse_checkins_upto,
    parse_chunk_header,
    parse_chunk_records,
)
from gateway.sync.envelopes import CARRIES, load_public_key, open_carried, public_key_b64

log = logging.getLogger(__name__)

# How long the builder may take to answer one chunk. The last chunk of a million-member set
# indexes and fsyncs the whole file (tens of seconds on an SD card); a builder silent for
# longer is hung (stopped, deadlocked, its disk stuck) and is killed, so that sync goes on.
ANSWER_DEADLINE_S = 300.0
NOTES_KEPT = 20  # duplicate-credential notes passed on (the count is always complete)
COLLECT_EVERY = 50  # chunks between garbage collections in the builder process


class SnapshotBuilderFailed(AccessGwError):
    """The builder process could not be started, or ended while building."""


# --- the child's side --------------------------------------------------------------------


@dataclass
class _Gathering:
    """The snapshot version being gathered: its staged file and what chunk 0 brought."""

    version: int
    chunks: int
    staged: StagedSet | StagedSetProcess
    rules: SiteRules | None = None
    checkins_upto: dict[str, int] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)  # name -> first contract naming it

    @property
    def complete(self) -> bool:
        """All chunks are in, chunk 0 (with the rules) among them."""
        return len(self.staged.chunks) == self.chunks and self.rules is not None


class SnapshotStager:
    """Verifies snapshot chunks and writes them to a staged set until a version is complete.

    :meth:`take` answers every chunk with a dict: ``status`` is ``staged``, ``duplicate``,
    ``ignored`` (an older snapshot, or a version already refused), ``bad`` (with a
    ``reason``: the envelope or the set is invalid, and that version is dropped whole),
    ``failed`` (the staged file could not be written) or ``complete`` (with the staged file's
    ``path``, ``version``, ``count``, ``checkins_upto`` and duplicate-credential ``notes``).
    """

    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey,
        site: str,
        topic: str,
        writer_process: bool | None = None,
    ) -> None:
        self.public_key, self.site, self.topic = public_key, site, topic
        # where there is a core to spare, a second process writes what this one validates
        self._staged_set = (
            StagedSetProcess
            if (len(os.sched_getaffinity(0)) > 1 if writer_process is None else writer_process)
            else StagedSet
        )
        self._part: _Gathering | None = None
        self._refused: int | None = None  # the last version refused as invalid

    def take(
        self, payload: bytes, *, have: int | None, want: bool, at: datetime, staging: Staging
    ) -> dict[str, Any]:
        """Take one chunk's payload (unopened). ``have``: the store's version; ``want``: a
        snapshot of that same version is wanted (a resync)."""
        try:
            env = open_carried(
                payload, public_key=self.public_key, site=self.site, topic=self.topic,
                types=CARRIES["snapshot"],
            )  # fmt: skip
            head = parse_chunk_header(env.body)
            if not self._wanted(head, have, want):
                return {"status": "ignored", "version": head.version, "chunk": head.chunk}
            return self._stage(head, env.body, at, staging)
        except BadMessage as exc:
            return {"status": "bad", "reason": exc.reason}
        except InvalidSet as exc:
            return {"status": "bad", "reason": "invalid set: " + "; ".join(exc.problems[:3])}
        except (sqlite3.Error, OSError) as exc:
            self.close()
            return {"status": "failed", "reason": f"the staged set could not be written: {exc}"}

    def _wanted(self, head: ChunkHeader, have: int | None, want: bool) -> bool:
        if have is not None and (head.version < have or (head.version == have and not want)):
            return False  # an old snapshot: nothing new in it
        if head.version == self._refused:
            return False
        part = self._part
        return part is None or part.version <= head.version

    def _stage(
        self, head: ChunkHeader, body: dict[str, Any], at: datetime, staging: Staging
    ) -> dict[str, Any]:
        part = self._part
        if part is None or part.version < head.version or part.chunks != head.chunks:
            self.close()  # a newer version (or another split of it) starts over
            staged = self._staged_set(staging, chunk_size=CHUNK_RECORDS)
            part = self._part = _Gathering(head.version, head.chunks, staged)
        where = {"version": head.version, "chunk": head.chunk, "chunks": head.chunks}
        if head.chunk in part.staged.chunks:
            return {"status": "duplicate", **where}
        try:
            if head.chunk == 0:
                part.rules = parse_rules(body.get("rules"))
                part.checkins_upto = parse_checkins_upto(body.get("checkins_upto")) or {}
            records = parse_chunk_records(body, head.chunk)
            for name, contract in schedule_uses(records):
                part.schedules.setdefault(name, contract)
            part.staged.add(head.chunk, records)
            if not part.complete:  # counts for the operator's progress line
                done = len(part.staged.chunks)
                return {
                    "status": "staged",
                    **where,
                    "records": len(records),
                    "staged": done,
                    "rss_kib": self._peak_rss_kib(part.staged),
                }
            assert part.rules is not None
            problems = undefined_schedules(part.schedules.items(), part.rules)
            if problems:
                raise InvalidSet(problems)
        except InvalidSet:
            self._refused = head.version
            self.close()
            raise
        count, notes = part.staged.finish(head.version, part.rules, part.checkins_upto, at)
        rss_kib = self._peak_rss_kib(part.staged)
        # this process's CPU time (it lives for one snapshot) and its writer's, for figures
        writer_cpu_s = part.staged.writer_cpu_s if isinstance(part.staged, StagedSetProcess) else 0
        cpu_s = time.process_time() + writer_cpu_s
        self._part = None
        return {
            "status": "complete",
            "path": part.staged.path,
            "count": count,
            "checkins_upto": part.checkins_upto,
            "notes": notes[:NOTES_KEPT],
            "notes_count": len(notes),
            "rss_kib": rss_kib,
            "cpu_s": round(cpu_s, 3),
            **where,
        }

    @staticmethod
    def _peak_rss_kib(staged: StagedSet | StagedSetProcess) -> int:
        """The peak resident memory of this process plus that of its writer, if any (an
        upper bound: pages the two share since the fork are counted twice)."""
        writer = staged.writer_peak_kib() if isinstance(staged, StagedSetProcess) else 0
        return peak_rss_kib() + writer

    def close(self) -> None:
        """Give up the version being gathered (its staged file is deleted)."""
        if self._part is not None:
            self._part.staged.discard()
            self._part = None


def _read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    line = stream.readline()
    if not line:
        return None
    header: dict[str, Any] = json.loads(line)
    payload = stream.read(int(header.get("size", 0)))
    return header, payload


def main() -> int:
    """The builder process: frames on stdin, one JSON answer line per chunk on stdout."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="snapshot builder: %(message)s"
    )
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write on the answer channel
    # Short of memory, the kernel is to kill this process rather than the doors' (the
    # gateway then asks for the snapshot again). Raising one's own score needs no privilege.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("500")
    # Background work: where the builder and its writer keep every core busy, the doors'
    # process is still to get a core the moment it has a decision to make.
    niceness.lower_own_priority("snapshot builder", niceness.BACKGROUND)  # its writer inherits it
    stdin = sys.stdin.buffer
    first = _read_frame(stdin)
    if first is None:
        return 0
    init = first[0]
    stager = SnapshotStager(
        public_key=load_public_key(init["public_key"]), site=init["site"], topic=init["topic"]
    )
    key = base64.b64decode(init["key"])
    # The records of a chunk are freed by reference counting; the collector would only walk
    # the long-lived objects again and again, so it runs now and then instead.
    gc.freeze()
    gc.disable()
    taken = 0
    try:
        while (frame := _read_frame(stdin)) is not None:
            header, payload = frame
            where = header["staging"]
            staging = Staging(where["path"], key, where["gen"], where["first_rowid"])
            reply = stager.take(
                payload,
                have=header["have"],
                want=header["want"],
                at=datetime.fromisoformat(header["at"]),
                staging=staging,
            )
            replies.write(json.dumps(reply).encode() + b"\n")
            replies.flush()
            taken += 1
            if taken % COLLECT_EVERY == 0:
                gc.collect()
    finally:
        stager.close()
    return 0


# --- the gateway's side ------------------------------------------------------------------


class SnapshotBuilder:
    """The gateway's handle on the builder process, started at the first chunk."""

    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey,
        site: str,
        topic: str,
        answer_deadline_s: float = ANSWER_DEADLINE_S,
    ) -> None:
        self.topic = topic
        self._init = {"public_key": public_key_b64(public_key), "site": site, "topic": topic}
        self._proc: asyncio.subprocess.Process | None = None
        self.answer_deadline_s = answer_deadline_s

    @property
    def pid(self) -> int | None:
        """The builder process's id while it is up (for figures and tests)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the builder process is up."""
        return self._proc is not None and self._proc.returncode is None

    async def take(
        self, payload: bytes, *, have: int | None, want: bool, at: datetime, staging: Staging
    ) -> dict[str, Any]:
        """Hand one chunk to the builder; its answer (see :class:`SnapshotStager`)."""
        proc = await self._started(staging.key)
        assert proc.stdin is not None and proc.stdout is not None
        header = {
            "size": len(payload),
            "have": have,
            "want": want,
            "at": at.isoformat(),
            "staging": {
                "path": staging.path,
                "gen": staging.gen,
                "first_rowid": staging.first_rowid,
            },
        }
        error: OSError | None = None
        try:
            async with asyncio.timeout(self.answer_deadline_s):
                proc.stdin.write(json.dumps(header).encode() + b"\n" + payload)
                await proc.stdin.drain()
                line = await proc.stdout.readline()
        except TimeoutError:  # an OSError too: caught first
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # hung, not dead: it would never answer
            await self.close()
            raise SnapshotBuilderFailed(
                f"the snapshot builder did not answer within {self.answer_deadline_s:g} s and was "
                "stopped: is the disk stuck or the gateway short of memory? The snapshot is "
                "asked for again"
            ) from None
        except OSError as exc:  # ConnectionError (a broken pipe) among them
            line, error = b"", exc
        if not line:
            await self.close()
            raise _ended(proc.returncode, error)
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError:
            await self.close()
            raise SnapshotBuilderFailed("the snapshot builder answered nonsense: a bug") from None
        return answer

    async def _started(self, key: bytes) -> asyncio.subprocess.Process:
        if self._proc is not None:
            if self._proc.returncode is None:
                return self._proc
            code = self._proc.returncode  # it died between two chunks
            await self.close()
            raise _ended(code)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.sync.snapshots",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**20,
            )
        except OSError as exc:
            raise SnapshotBuilderFailed(f"the snapshot builder could not start: {exc}") from exc
        assert proc.stdin is not None
        init = {**self._init, "key": base64.b64encode(key).decode("ascii")}
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        self._proc = proc
        return proc

    async def close(self) -> None:
        """End the builder process; a set it was gathering is dropped with its file."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:  # end of input tells it to stop; its output is read to the end and closed
            if proc.stdin is not None:
                proc.stdin.close()  # communicate() of Python 3.11 leaves it open
            await asyncio.wait_for(proc.communicate(), 10)
        except (TimeoutError, ConnectionError, OSError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(ConnectionError, OSError):
                await proc.communicate()


def _ended(code: int | None, error: OSError | None = None) -> SnapshotBuilderFailed:
    why = f"exit code {code}" + (f", {error}" if error else "")
    return SnapshotBuilderFailed(
        f"the snapshot builder process ended ({why}): is the gateway short of memory? "
        "The snapshot is asked for again"
    )


if __name__ == "__main__":
    raise SystemExit(main())
