"""Delta envelopes made ready for the store, a big one in a worker process.

A delta of 20,000 records is about 6 MB of JSON. Parsing it (``json.loads``), validating
its records (pydantic) and encoding them for the store are each one long call that holds
the GIL: in a worker *thread* of the gateway's process the doors' event loop would wait
for every one of them (hundreds of milliseconds). So a delta payload over
:data:`OFF_PROCESS` bytes is opened, verified, validated and encoded in a worker process
(:class:`DeltaOpener`), which hands back a compact :class:`PreparedDelta`: the stored rows
in a few pickled parts (:class:`~gateway.record_codec.EncodedRecords`), the ids to delete,
the rules and the schedules its contracts name. Smaller ones take the same steps in a
worker thread, where they cost the loop less than the hop to another process would.

Nothing is trusted less for it: the worker runs :func:`~gateway.sync.envelopes.open_carried`
and the same validation as the thread does, and the rules a delta's contracts need are
checked when it is applied (:meth:`PreparedDelta.rules_to_apply`), against the rules then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import niceness
from gateway.entitlements import SiteRules, collect_records, parse_rules, schedule_uses
from gateway.entitlements import undefined_schedules as undefined
from gateway.errors import BadMessage, InvalidSet
from gateway.record_codec import EncodedRecords, Record, RecordCodec
from gateway.sync.bodies import count, parse_checkins_upto
from gateway.sync.envelopes import Envelope, load_public_key, open_carried, public_key_b64

log = logging.getLogger(__name__)

OFF_PROCESS = 256 * 2**10  # delta payloads bigger than this are opened in a worker process
IDLE_S = 60.0  # the worker process ends after this long without a big delta


@dataclass(frozen=True)
class PreparedDelta:
    """A delta body, validated (its records against the schema; the schedules they name
    against the rules when it is applied), ready for
    :meth:`~gateway.store.EntitlementStore.apply_delta`."""

    version: int
    base: int
    upsert: Sequence[Record] | EncodedRecords
    delete: list[str]
    rules: SiteRules | None
    checkins_upto: dict[str, int] | None
    schedules: list[tuple[str, str]]  # (schedule, where) for each contract naming one

    def rules_to_apply(self, current: SiteRules | None) -> SiteRules:
        """The rules this delta is applied under (its own, or ``current``); InvalidSet when
        there are none or they lack a schedule that one of its contracts names."""
        rules = self.rules or current
        if rules is None:
            raise InvalidSet(["rules: the gateway has no rules yet and the delta brings none"])
        problems = undefined(self.schedules, rules)
        if problems:
            raise InvalidSet(problems[:10])
        return rules


def prepare_delta(
    body: Mapping[str, Any], have: int | None, codec: RecordCodec | None = None
) -> PreparedDelta:
    """Validate a delta body against ENTITLEMENTS.md (all but the schedules its contracts
    name, which depend on the rules when it is applied); with ``codec``, its records are
    handed back encoded for the store.

    A delta not newer than ``have`` (the store's version, which only grows) is a silent
    no-op (Clarifications, Versions): it comes back empty, its records not even looked at.
    """
    version, base = count(body, "version"), count(body, "base")
    if version != base + 1:
        raise InvalidSet(["version: must be base + 1"])
    if have is not None and version <= have:
        return PreparedDelta(version, base, [], [], None, None, [])
    upsert, delete = body.get("upsert", []), body.get("delete", [])
    if not isinstance(upsert, list):
        raise InvalidSet(["upsert: must be a list"])
    if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
        raise InvalidSet(["delete: must be a list of ids"])
    rules = parse_rules(body["rules"]) if body.get("rules") is not None else None
    records, problems = collect_records(upsert, "records")
    if problems:
        raise InvalidSet(problems)
    uses = list(schedule_uses(records))
    upto = parse_checkins_upto(body.get("checkins_upto"))
    prepared = EncodedRecords.of(codec, records) if codec is not None else records
    return PreparedDelta(version, base, prepared, list(delete), rules, upto, uses)


# --- the worker process ------------------------------------------------------------------

Opened = tuple[str, Any]  # ("delta", PreparedDelta) | ("envelope", Envelope) | ("bad", reason)
# | ("invalid", problems): exceptions are handed back as values, so none has to be pickled


def _open_in_worker(
    payload: bytes,
    key_b64: str,
    site: str,
    topic: str,
    types: tuple[str, ...],
    have: int | None,
    hmac_key: bytes,
) -> Opened:
    """In the worker process: open, verify and (a delta) validate and encode one payload."""
    try:
        key = load_public_key(key_b64)
        env = open_carried(payload, public_key=key, site=site, topic=topic, types=types)
        if env.type != "delta":
            return "envelope", env
        return "delta", prepare_delta(env.body, have, RecordCodec(hmac_key))
    except BadMessage as exc:
        return "bad", exc.reason
    except InvalidSet as exc:
        return "invalid", exc.problems


def _open_here(
    payload: bytes,
    key: Ed25519PublicKey,
    site: str,
    topic: str,
    types: tuple[str, ...],
    have: int | None,
) -> Envelope | PreparedDelta:
    """The same steps in this process (a worker thread): a delta's records stay decoded."""
    env = open_carried(payload, public_key=key, site=site, topic=topic, types=types)
    return prepare_delta(env.body, have) if env.type == "delta" else env


def _started_pool() -> concurrent.futures.ProcessPoolExecutor:
    """A pool of one worker process, started and ready (its priority lowered).

    Run in a thread: starting a process forks this one, and the executor starts its
    worker inside the first ``submit``, which would otherwise be the event loop's, the
    doors' loop stalled for as long as the fork of a process holding a big set takes
    (13-65 ms seen on 2026-12-02 with 100,000 members, in the loop-lag bench).
    """
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
        initializer=niceness.lower_own_priority,
        initargs=("delta worker process", niceness.BACKGROUND),
    )  # fmt: skip
    try:
        pool.submit(_ready).result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return pool


async def _shut_down_if_abandoned(
    starting: Awaitable[concurrent.futures.ProcessPoolExecutor],
) -> concurrent.futures.ProcessPoolExecutor:
    """The pool being started; if the wait is cancelled (the gateway stops), the pool is
    shut down once it has started, not left running."""
    task = asyncio.ensure_future(starting)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_shut_down_if_started)
        raise


def _shut_down_if_started(task: asyncio.Future[concurrent.futures.ProcessPoolExecutor]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().shutdown(wait=False, cancel_futures=True)


def _ready() -> bool:
    """A worker's first task: nothing, so that it has started when it returns."""
    return True


class DeltaOpener:
    """Opens envelopes on the delta topics off the event loop: a big payload in a worker
    process (started when one comes, ended after :data:`IDLE_S` without), the rest in a
    worker thread. Should the process die (short of memory) or fail to start, the payload
    is opened in a thread instead and the next big one tries a new process."""

    def __init__(self, *, public_key: Ed25519PublicKey, site: str, idle_s: float = IDLE_S) -> None:
        self.public_key, self.site, self.idle_s = public_key, site, idle_s
        self._key_b64 = public_key_b64(public_key)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.opened_in_process = 0  # for tests and figures

    async def open(
        self,
        payload: bytes,
        *,
        topic: str,
        types: tuple[str, ...],
        have: int | None,
        hmac_key: bytes,
    ) -> Envelope | PreparedDelta:
        """The envelope (or, for a delta, the delta prepared for the store, given the
        store's version ``have``); raises BadMessage or InvalidSet as :func:`open_envelope`
        and :func:`prepare_delta` do."""
        if len(payload) <= OFF_PROCESS:
            return await asyncio.to_thread(
                _open_here, payload, self.public_key, self.site, topic, types, have
            )
        loop = asyncio.get_running_loop()
        if self._idle is not None:
            self._idle.cancel()
        try:
            if self._pool is None:
                self._pool = await _shut_down_if_abandoned(asyncio.to_thread(_started_pool))
            kind, value = await loop.run_in_executor(
                self._pool, _open_in_worker, payload, self._key_b64, self.site, topic, types,
                have, hmac_key,
            )  # fmt: skip
        except (concurrent.futures.process.BrokenProcessPool, OSError) as exc:
            # it died (short of memory), or could not start (no process or semaphore left)
            log.error("delta worker process failed (%s): this delta is opened in a thread", exc)
            self.close()
            return await asyncio.to_thread(
                _open_here, payload, self.public_key, self.site, topic, types, have
            )
        finally:
            self._idle = loop.call_later(self.idle_s, self.close)
        self.opened_in_process += 1
        if kind == "bad":
            raise BadMessage(str(value), topic)
        if kind == "invalid":
            raise InvalidSet(list(value))
        assert isinstance(value, Envelope | PreparedDelta)
        return value

    def close(self) -> None:
        """End the worker process (it is started again by the next big delta)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(RuntimeError):
                pool.shutdown(wait=False, cancel_futures=True)
