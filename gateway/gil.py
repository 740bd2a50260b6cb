"""How long a thread of the doors' process may hold the interpreter lock while another waits.

The doors' event loop shares the interpreter lock (GIL) with the store's, the journal's
and the history's threads. While one of them computes, a waiting thread gets the lock
after the *switch interval* at the latest (5 ms by default in CPython). The gateway runs
with :data:`DOORS_S` and shortens it to :data:`COMPUTING_S` while a store thread does a
long stretch of Python work beside the doors' loop (:func:`short_turns_while_computing`).

Why not short always: a tap's path crosses threads several times (the loop, the journal's
commit, the store's read) and every forced switch costs. 0.25 ms for the whole process was
tried on 2026-12-02: a loop beside a computing thread woke sooner (median lateness 1.2 ->
0.43 ms), but a tap during a check-in drain took longer (p99 9-11 -> 15-16 ms, two pairs).

Why short while a delta is applied: measured on 2026-12-03 with a thread waking every
2 ms beside a 20,000-record delta applied to 100,000 members (six deltas each): at 1 ms,
74-95 of its wakes per delta were more than 1 ms late; at 0.1 ms, 2-4. The delta's own time
did not grow (577-667 ms against 604-739 ms).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DOORS_S = 0.001  # the whole process, from the gateway's start
COMPUTING_S = 0.0001  # while a store thread computes beside the doors' loop

_lock = threading.Lock()
_computing = 0  # threads inside short_turns_while_computing
_before = DOORS_S  # the interval to go back to when the last of them leaves


def use_doors_interval() -> None:
    """Set the process's switch interval for the doors (the gateway's start)."""
    global _before
    with _lock:
        _before = DOORS_S
        if not _computing:
            sys.setswitchinterval(DOORS_S)


@contextmanager
def short_turns_while_computing() -> Iterator[None]:
    """Inside, any thread waiting for the interpreter lock gets it after
    :data:`COMPUTING_S`; the interval before is put back when the last thread inside leaves
    (threads may overlap)."""
    global _computing, _before
    with _lock:
        if not _computing:
            _before = sys.getswitchinterval()
            sys.setswitchinterval(COMPUTING_S)
        _computing += 1
    try:
        yield
    finally:
        with _lock:
            _computing -= 1
            if not _computing:
                sys.setswitchinterval(_before)
