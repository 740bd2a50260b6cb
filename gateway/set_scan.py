"""``accessgw decide --set``: one decision against a whole set file, without a store.

The decision needs the site rules, the record holding the presented credential and, for a
phone pass, the member it names. Loading a million members into a store to answer one
question would take a minute; instead every record is validated (an invalid set is still
refused, as the gateway would refuse it) and only the records that matter are kept. The
records are validated in worker processes, one slice each, when there are several cores,
and a progress line goes to stderr every two seconds once it takes that long.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.entitlements import (
    Member,
    Record,
    SiteRules,
    Ticket,
    credential_key,
    parse_record,
    parse_rules,
    schedule_uses,
    undefined_schedules,
)
from gateway.errors import InvalidSet

SLICE = 25_000  # records a worker validates at a time (progress moves per slice)
MAX_PROBLEMS = 10


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


_RAWS: list[Any] = []  # the records, inherited by forked workers (never pickled)


def _scan_slice(start: int, stop: int, wanted: Wanted, release: bool = False) -> _SliceResult:
    # once per record of a million: no work here that a valid record does not need (its
    # place in the problems is worked out only for an invalid one)
    result = _SliceResult(start, [], [], [], [])
    ids, problems, uses = result.ids, result.problems, result.schedules
    matches, raws = wanted.matches, _RAWS
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
    global _RAWS
    if not isinstance(raw, Mapping):
        raise InvalidSet(["set: must be an object with version, rules, records"])
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidSet(["version: must be a non-negative integer"])
    if "rules" not in raw:
        raise InvalidSet(["rules: missing"])
    rules = parse_rules(raw["rules"])
    raws = raw.get("records", [])
    if not isinstance(raws, list):
        raise InvalidSet(["records: must be a list"])
    slices = [(s, min(s + SLICE, len(raws))) for s in range(0, len(raws), SLICE)]
    cores = workers or len(os.sched_getaffinity(0))
    progress = progress or Progress(None)
    progress.total = len(raws)
    try:
        results = []
        if cores > 1 and len(slices) > 1:
            _RAWS = raws
            fork = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(cores, mp_context=fork) as pool:
                futures = [pool.submit(_scan_slice, a, b, wanted) for a, b in slices]
                for future in futures:
                    results.append(future.result())
                    progress.done += len(results[-1].ids)
        else:
            _RAWS = raws
            for a, b in slices:
                results.append(_scan_slice(a, b, wanted, release))
                progress.done += b - a
    finally:
        _RAWS = []
    return _view(rules, version, results)


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
            if self.total is None:
                self.say(f"decide: reading the set file ({seconds:.0f} s)")
            else:
                self.say(
                    f"decide: {self.done:,} of {self.total:,} records validated ({seconds:.0f} s)"
                )


def stderr_line(text: str) -> None:
    """Print a progress line on stderr."""
    print(text, file=sys.stderr, flush=True)
