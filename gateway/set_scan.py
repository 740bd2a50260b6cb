"""``accessgw decide --set``: one decision against a whole set file, without a store.

The decision needs the site rules, the record holding the presented credential and, for a
phone pass, the member it names. Loading a million members into a store to answer one
question would take a minute; instead every record is validated (an invalid set is still
refused, as the gateway would refuse it) and only the records that matter are kept. With
several cores the records are split in as many parts: this process validates the first
and forked workers the others (each hands back what it found, then leaves at once); a
progress line goes to stderr every two seconds once it takes that long.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import pickle
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pydantic_core

from gateway.entitlements import (
    Member,
    Record,
    SiteRules,
    Ticket,
    credential_key,
    parse_record,
    parse_set_head,
    schedule_uses,
    undefined_schedules,
)
from gateway.errors import InvalidSet

SLICE = 25_000  # records a worker validates at a time (progress moves per slice)
MAX_PROBLEMS = 10


class ScanFailed(RuntimeError):
    """A worker ended without its answer (killed, out of memory): the set was not checked."""


@dataclass(frozen=True)
class Wanted:
    """What the decision will ask for: the canonical credential key, or a member's id."""

    key: str | None = None
    member: str | None = None

    def matches(self, record: Record) -> bool:
        """True when the decision may read ``record`` (it holds the key, or is the member)."""
        if self.key is not None and record.holds(self.key):
            return True
        # type(), not isinstance: a model class's isinstance goes through ABCMeta in Python,
        # and this is asked of every record (the validators make exactly these classes)
        return self.member is not None and type(record) is Member and record.member == self.member


@dataclass
class SetView:
    """The part of a set the decision reads (:class:`gateway.decision.EntitlementView`)."""

    rules: SiteRules | None
    version: int
    count: int
    matches: dict[str, Record] = field(default_factory=dict)  # by id, in set order

    def find(self, kind: str, value: str, fmt: str | None = None) -> Member | Ticket | None:
        key = credential_key(kind, value, fmt)
        found = [r for r in self.matches.values() if key is not None and key in r.credential_keys()]
        return found[-1] if found else None  # the later record keeps a credential given twice

    def member(self, member_id: str) -> Member | None:
        record = self.matches.get(member_id)
        return record if isinstance(record, Member) else None


@dataclass
class _SliceResult:
    start: int
    ids: list[str]  # every record's id, in order (a later record of the same id wins)
    matches: list[tuple[int, Record]]
    problems: list[str]
    schedules: list[tuple[str, str]]


def _scan_slice(
    raws: list[Any], start: int, stop: int, wanted: Wanted, release: bool = False
) -> _SliceResult:
    # once per record of a million: no work here that a valid record does not need (its
    # place in the problems is worked out only for an invalid one)
    result = _SliceResult(start, [], [], [], [])
    ids, problems, uses = result.ids, result.problems, result.schedules
    matches = wanted.matches
    for i in range(start, stop):
        raw = raws[i]
        if release:  # freed once checked, while still in the cache (not in a pass of its own)
            raws[i] = None
        try:
            record = parse_record(raw)
        except InvalidSet:
            problems.extend(_problems_of(raw, i))
            if len(problems) >= MAX_PROBLEMS:
                break
            ids.append("")
            continue
        ids.append(record.id)
        if matches(record):
            result.matches.append((i, record))
        if type(record) is Member:
            for contract in record.contracts:
                if contract.schedule is not None:
                    uses.extend(schedule_uses((record,)))
                    break
    return result


def _problems_of(raw: Any, i: int) -> list[str]:
    """The problems of the invalid record at ``records[i]``, named by its place."""
    try:
        parse_record(raw, f"records[{i}]")
    except InvalidSet as exc:
        return exc.problems
    raise AssertionError("a record refused once is refused again")


def scan_set(
    raw: Any,
    wanted: Wanted,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    release: bool = False,
) -> SetView:
    """Validate a set ``{"version", "rules", "records"}`` and keep what ``wanted`` needs.

    Raises :class:`InvalidSet` with the first problems, as :func:`parse_set` would.
    ``release``: the caller has no further use for ``raw``, whose records list may then be
    emptied (set to None) as it is read, in this process.
    """
    version, rules, raws = parse_set_head(raw)
    cores = workers or len(os.sched_getaffinity(0))
    progress = progress or Progress(None)
    progress.total = len(raws)
    parts = min(cores, -(-len(raws) // SLICE))  # no part smaller than a slice
    if parts > 1:
        results = _scan_forked(raws, wanted, parts, progress, release)
    else:
        results = _scan_part(raws, 0, len(raws), wanted, release, progress.set_done)
    return _view(rules, version, results)


def _scan_part(
    raws: list[Any],
    start: int,
    stop: int,
    wanted: Wanted,
    release: bool,
    done: Callable[[int], None],
) -> list[_SliceResult]:
    """``raws[start:stop]`` slice by slice, ``done(records so far)`` after each."""
    results = []
    for a in range(start, stop, SLICE):
        results.append(_scan_slice(raws, a, min(a + SLICE, stop), wanted, release))
        done(min(a + SLICE, stop) - start)
        if results[-1].problems and sum(len(r.problems) for r in results) >= MAX_PROBLEMS:
            break
    return results


def _scan_forked(
    raws: list[Any], wanted: Wanted, parts: int, progress: Progress, release: bool
) -> list[_SliceResult]:
    """The records in ``parts`` parts: the first here, each other in a forked worker.

    Forked (not a pool): the workers see the records as they are in memory (nothing sent
    to them), send back what they found and leave with ``os._exit``, without freeing a
    copy of a million records first (a pool waited for that). Meanwhile this process
    validates its part and then, if ``release``, frees the others' records (a second and
    a half for half a million, here no longer after the scan)."""
    size = -(-len(raws) // parts)
    bounds = [(k * size, min((k + 1) * size, len(raws))) for k in range(parts)]
    counts, done = _counters(parts)
    progress.status = lambda: (sum(counts), progress.total)
    with _Workers() as workers:
        for k, (start, stop) in enumerate(bounds[1:], 1):
            workers.start(
                f"validating records {start} to {stop - 1}",
                functools.partial(_scan_part, raws, start, stop, wanted, False, done[k]),
            )
        results = _scan_part(raws, *bounds[0], wanted, release, done[0])
        if release:
            for i in range(bounds[1][0], len(raws)):
                raws[i] = None
        for found in workers.answers():
            results.extend(found)
    return results


def _counters(parts: int) -> tuple[Any, list[Callable[[int], None]]]:
    """Records done per part, in memory the forked workers share: the array, and for each
    part the function that sets its count."""
    counts = multiprocessing.get_context("fork").Array("q", parts, lock=False)

    def counter(k: int) -> Callable[[int], None]:
        def done(n: int) -> None:
            counts[k] = n

        return done

    return counts, [counter(k) for k in range(parts)]


class _Workers:
    """Forked workers, each running one function and sending back its result; a context
    manager that leaves none behind (an error, or no further use for their answers)."""

    def __init__(self) -> None:
        self._running: list[tuple[int, int, str]] = []  # pid, its answer's pipe, what it does

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for pid, readable, _ in self._running:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                os.close(readable)
        self._running.clear()

    def start(self, what: str, work: Callable[[], object]) -> None:
        """Fork a worker that runs ``work()`` on what this process holds now."""
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(readable)
            _answer_and_leave(work, writable)
        os.close(writable)
        self._running.append((pid, readable, what))

    def answers(self) -> Iterator[Any]:
        """Each worker's result, in the order they were started; :class:`ScanFailed` for a
        worker that ended without one."""
        while self._running:
            pid, readable, what = self._running.pop(0)
            with os.fdopen(readable, "rb") as answer:
                data = answer.read()
            _, status = os.waitpid(pid, 0)
            if status != 0 or not data:
                raise ScanFailed(
                    f"the worker {what} ended without an answer (wait status {status}; "
                    "out of memory?)"
                )
            yield pickle.loads(data)


def _answer_and_leave(work: Callable[[], object], answer: int) -> NoReturn:
    """A forked worker's whole life: never returns into the caller's code."""
    code = 1
    try:
        data = pickle.dumps(work(), protocol=5)
        with os.fdopen(answer, "wb") as out:
            out.write(data)
        code = 0
    except BaseException:
        # straight to the file descriptor: a lock of sys.stderr may have been held by
        # another thread of the parent when it forked
        os.write(2, traceback.format_exc().encode(errors="replace"))
    finally:
        os._exit(code)


def _view(rules: SiteRules, version: int, results: list[_SliceResult]) -> SetView:
    problems = [p for r in results for p in r.problems][:MAX_PROBLEMS]
    uses = [u for r in results for u in r.schedules]
    problems += undefined_schedules(uses, rules)[: MAX_PROBLEMS - len(problems)]
    if problems:
        raise InvalidSet(problems)
    last: dict[str, int] = {}  # id -> the position of its last record
    for r in results:  # a later position of an id replaces an earlier one (in C: no loop here)
        last.update(zip(r.ids, itertools.count(r.start)))
    view = SetView(rules, version, len(last))
    for r in results:
        for position, record in r.matches:
            if last[record.id] == position:  # an id listed twice keeps its later record
                view.matches.pop(record.id, None)
                view.matches[record.id] = record
    return view


# --- a big file read in parts, each by its own process ------------------------------------

SPLIT_MIN = 8 << 20  # bytes: a smaller file is read whole (forking would cost more)
# Where one record ends and the next begins, in the records list: "}", ",", "{" and the key
# "member" or "ticket". A JSON string cannot hold '{"' (a quote in it is always escaped), so
# every match is between two objects, the second starting with such a key: records, as the
# central system writes them. One between two other objects (a record whose keys come in
# another order, a nested object with such a key) is found out by the parts failing to
# decode (see scan_file), and the file is read whole.
_BETWEEN = re.compile(rb'\}\s*,\s*(?=\{\s*"(?:member|ticket)"\s*:)')


def scan_file(
    path: str, wanted: Wanted, *, workers: int | None = None, progress: Progress | None = None
) -> SetView | None:
    """:func:`scan_set` of the set file at ``path``, its JSON decoded in parts at once, one
    per core: reading a big file is half of the work, and one decoder takes one core.

    The file is cut between records near each ``1/n``-th of it: the first part
    ``{...version, rules, "records": [r0, ..., rk]}`` keeps everything before the cut, the
    others are ``[rk+1, ...]``. Each part must decode as such, which it does only if the
    cut is between two of the records of the set's (last) ``records`` key, which closes
    the object; the records are then the parts' records in order, as a whole read gives.
    None (read it whole) when the file does not cut so, is not valid, or a record has a
    problem: the whole read says what, in the same words as ever.

    Raises :class:`OSError` if the file cannot be read, :class:`ScanFailed` if a worker
    ended without its answer."""

    cores = workers or len(os.sched_getaffinity(0))
    if cores < 2 or os.path.getsize(path) < SPLIT_MIN:
        return None
    progress = progress or Progress(None)
    view = _scan_in_parts(path, wanted, cores, progress)
    if view is None:  # read whole after all: with its own progress
        progress.status = None
    return view


def _scan_in_parts(path: str, wanted: Wanted, cores: int, progress: Progress) -> SetView | None:
    with open(path, "rb") as file:
        data = file.read()
    end = data.rfind(b"}")
    cuts: list[tuple[int, int]] = []  # (end of a part, start of the next)
    for k in range(1, cores):
        after = max(cuts[-1][1] if cuts else 0, k * len(data) // cores)
        between = _BETWEEN.search(data, after, end)
        if between is None:
            break
        cuts.append((between.start() + 1, between.end()))
    if not cuts:
        return None
    head = data[: cuts[0][0]] + b"]}"
    tails = [
        b"[" + data[start : cuts[k + 1][0]] + b"]" if k + 1 < len(cuts) else b"[" + data[start:end]
        for k, (_, start) in enumerate(cuts)
    ]
    del data
    parts = 1 + len(tails)
    counts, done = _counters(parts)
    totals = multiprocessing.get_context("fork").Array("q", [-1] * parts, lock=False)
    progress.status = lambda: (sum(counts), None if min(totals) < 0 else sum(totals))
    with _Workers() as workers:  # leaving early (read whole): the workers are stopped
        for k, text in enumerate(tails, 1):
            workers.start(
                f"reading part {k + 1} of {path}",
                functools.partial(_scan_text, text, wanted, done[k], totals, k),
            )
        del tails
        try:
            version, rules, raws = parse_set_head(
                pydantic_core.from_json(head, cache_strings="keys")
            )
        except (ValueError, InvalidSet):
            return None
        del head
        totals[0] = len(raws)
        results = _scan_part(raws, 0, len(raws), wanted, True, done[0])
        if any(r.problems for r in results):
            return None
        offset = len(raws)
        for told in workers.answers():
            if told is None:  # not a list of records, or a record with a problem
                return None
            count, found = told
            for r in found:  # its records' places in the whole list
                r.start += offset
                r.matches = [(i + offset, record) for i, record in r.matches]
            results.extend(found)
            offset += count
    try:
        view = _view(rules, version, results)
    except InvalidSet:  # a schedule the rules do not define: read whole, it says so
        return None
    return view


def _scan_text(
    text: bytes, wanted: Wanted, done: Callable[[int], None], totals: Any, k: int
) -> tuple[int, list[_SliceResult]] | None:
    """A worker's part of the file: ``(count, results)``, or None if it is not a list of
    records without a problem."""
    try:
        raws = pydantic_core.from_json(text, cache_strings="keys")
    except ValueError:
        return None
    if not isinstance(raws, list):
        return None
    totals[k] = len(raws)
    results = _scan_part(raws, 0, len(raws), wanted, True, done)
    return None if any(r.problems for r in results) else (len(raws), results)


class Progress:
    """Says how far ``decide`` is, every 2 s once it has taken 2 s (reading the file, then
    validating the records), from a thread of its own; a context manager.

    Decoding a big file's JSON holds the GIL for its whole length (tens of seconds for a
    million members), so no thread can speak meanwhile: ``opening``, if given, is said at
    once, before it starts."""

    def __init__(self, say: Callable[[str], None] | None, opening: str | None = None) -> None:
        self.say = say
        self.opening = opening
        self.total: int | None = None
        self.done = 0
        # (done, total or None while still reading), if not ``done`` and ``total``
        self.status: Callable[[], tuple[int, int | None]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_done(self, done: int) -> None:
        """``done`` records are validated."""
        self.done = done

    def __enter__(self) -> Progress:
        if self.say is not None and self.opening:
            self.say(self.opening)
        if self.say is not None:
            self._thread = threading.Thread(target=self._run, name="decide-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self.say is not None
        started = time.monotonic()
        while not self._stop.wait(2.0):
            seconds = time.monotonic() - started
            done, total = self.status() if self.status is not None else (self.done, self.total)
            if total is None:
                self.say(f"decide: reading the set file ({seconds:.0f} s)")
            else:
                self.say(f"decide: {done:,} of {total:,} records validated ({seconds:.0f} s)")


def stderr_line(text: str) -> None:
    """Print a progress line on stderr."""
    print(text, file=sys.stderr, flush=True)
