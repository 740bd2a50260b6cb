"""The CPU priority of the gateway's own background processes: the doors' process first.

On a busy box, Linux shares a core between runnable processes by their niceness, and a
process that wakes (the doors' event loop, when a card's bytes arrive) is let in ahead of
the running one sooner the higher its priority is against it. Measured on 2026-12-02 with
the loop-lag bench: almost every late wake of the doors' loop under load (a check-in drain,
peers' check-ins, a delta, the web UI) was time spent waiting for a core, not for the
interpreter lock. So every process of the gateway that does background work lowers its
own priority once, as it starts; lowering it needs no privilege. The doors' process keeps
the priority it was started with.

The doors' process also asks the kernel for short time slices (Linux 6.12 and later, whose
scheduler, EEVDF, takes a slice request per thread): a thread with a shorter slice has an
earlier deadline, so when it wakes it is let in ahead of a running thread with a longer
one instead of waiting out the rest of that thread's slice. Measured on 2026-12-02 with
the loop-lag bench, the loop's thread at 0.1 ms against the default (1.4 ms there), three
pairs alternated: p99 4.67 / 3.62 / 4.22 -> 2.72 / 3.30 / 2.55 ms, max 24.0 / 20.3 / 20.4
-> 15.3 / 13.7 / 11.6 ms; as built here (the whole doors' process), three pairs on a quiet
machine: p99 3.09 / 2.76 / 5.16 -> 2.41 / 2.77 / 2.85 ms, max 25.2 / 18.0 / 22.2 -> 13.3 /
17.5 / 10.9 ms. Tap to relay during a drain, two pairs: p99 13.7 / 18.5 -> 9.42 / 13.2 ms.
Threads and children inherit a thread's slice; the background processes give it back as
they lower their priority.

Last, the doors' event loop thread itself runs under ``SCHED_FIFO`` at real-time priority 1
(:func:`doors_loop_first`), which its threads and the processes it starts do not inherit.

The shipped systemd unit allows the two system calls this needs (``setpriority``,
``sched_setattr``) and nothing else of ``@resources``, and real-time priority 1 at most
(``LimitRTPRIO=1``). Where the system refuses any of it, the process says so in the log and
runs on, as an equal of the doors'.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

WIRE = 5  # the MQTT wire (drain, peers' check-ins, commands): behind the doors, ahead of the rest
BACKGROUND = 10  # the web UI, the snapshot builder and its writer, the delta worker


def lower_own_priority(what: str, by: int) -> int | None:
    """Lower this process's priority ``by`` steps below the niceness it inherited (that
    is, below the doors' process); its new niceness, or None (logged) if refused."""
    give_back_slice(what)
    try:
        return os.nice(by)
    except OSError as exc:
        log.warning(
            "%s: its CPU priority could not be lowered (%s): it competes with the doors' "
            "process for the CPU as an equal",
            what,
            exc,
        )
        return None


# --- time slices (sched_setattr, Linux) ------------------------------------------------------

# 0.1 ms: the shortest slice the kernel takes (it clamps a request to 0.1-100 ms). A thread
# of the doors' process runs a few hundred microseconds at a time (a decision, a frame, a
# commit handed to a thread), so a short slice costs it nothing in switches.
SHORT_SLICE_NS = 100_000
DEFAULT_SLICE = 0  # a request of 0: the kernel's own slice

# sched_setattr(2)'s number where the gateway runs: PCs, 64- and 32-bit Raspberry Pis.
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "armv7l": 380, "armv6l": 380}
_SLICE_KERNEL = (6, 12)  # the first whose fair scheduler takes a thread's slice request


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` as of Linux 3.14 (its first 48 bytes, all this needs)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),  # for SCHED_OTHER since 6.12: the slice asked for
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def _no_sched_setattr() -> str | None:
    """The system (``Linux on riscv64``), where it has no sched_setattr(2) of known number;
    None where it has."""
    uname = os.uname()
    if uname.sysname != "Linux" or uname.machine not in _SYS_SCHED_SETATTR:
        return f"{uname.sysname} on {uname.machine}"
    return None


def slices_supported() -> str | None:
    """Why this system takes no slice request, or None if it does."""
    system = _no_sched_setattr()
    if system is not None:
        return f"{system} has no per-thread slice request"
    uname = os.uname()
    numbers = uname.release.split("-")[0].split(".")
    try:
        release = (int(numbers[0]), int(numbers[1]))
    except (IndexError, ValueError):
        return f"kernel {uname.release}: its version is not understood"
    if release < _SLICE_KERNEL:
        return f"kernel {uname.release} takes no slice request (Linux 6.12 and later do)"
    return None


def _set_slice(ns: int, tid: int = 0) -> None:
    """Ask for ``ns`` as thread ``tid``'s slice (0: the calling thread; ``ns`` 0: the
    default), keeping its niceness; OSError if the system refuses."""
    if os.sched_getscheduler(tid) != os.SCHED_OTHER:
        return  # a real-time or batch policy someone chose: not ours to change back
    _sched_setattr(
        _SchedAttr(
            size=ctypes.sizeof(_SchedAttr),
            sched_policy=os.SCHED_OTHER,
            sched_nice=os.getpriority(os.PRIO_PROCESS, tid),  # the thread's own, on Linux
            sched_runtime=ns,
        ),
        tid,
    )


def _sched_setattr(attr: _SchedAttr, tid: int = 0) -> None:
    """sched_setattr(2) for thread ``tid`` (0: the calling one); OSError if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    number = _SYS_SCHED_SETATTR[os.uname().machine]
    # syscall(2) is variadic and reads longs: each argument passed at its full width
    status = libc.syscall(
        ctypes.c_long(number), ctypes.c_long(tid), ctypes.byref(attr), ctypes.c_long(0)
    )
    if status != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def ask_for_short_slices(what: str) -> bool:
    """Ask for :data:`SHORT_SLICE_NS` slices for the calling thread, and so for the threads
    and processes it starts from now on; whether the system took it (if not, logged)."""
    why_not = slices_supported()
    if why_not is not None:
        log.info("%s: runs with the kernel's default time slices: %s", what, why_not)
        return False
    try:
        _set_slice(SHORT_SLICE_NS)
    except OSError as exc:
        log.warning(
            "%s: short time slices refused (%s): it may wait for a core behind a "
            "background process a little longer when it wakes",
            what,
            exc,
        )
        return False
    return True


def give_back_slice(what: str, tid: int = 0) -> None:
    """Back to the kernel's default slice for thread ``tid`` (0: the calling one), a
    background process's, which inherited the doors' short one; a refusal is logged."""
    if slices_supported() is not None:
        return  # nothing was asked for, so there is nothing to give back
    try:
        _set_slice(DEFAULT_SLICE, tid)
    except OSError as exc:
        log.warning("%s: could not give back its short time slices (%s)", what, exc)


# --- the doors' loop: first to a core (SCHED_FIFO) --------------------------------------------

# The lowest real-time priority: ahead of every ordinary process, behind the kernel's own
# real-time threads and anything an administrator ranks higher. The shipped unit allows this
# much and no more (LimitRTPRIO=1).
REALTIME_PRIORITY = 1
_SCHED_FLAG_RESET_ON_FORK = 0x01


def doors_loop_first(what: str) -> bool:
    """Run the calling thread, the doors' event loop, under ``SCHED_FIFO`` at
    :data:`REALTIME_PRIORITY`; whether the system took it (if not, logged).

    Short slices (above) let the loop in sooner; under load it still waited for a core: on
    2026-12-03 the loop-lag bench (a drain, peers' check-ins, a delta, the web UI, taps) read
    p99 3.67 / 4.00 ms (2 cores / 1 core) with them, 0.60 / 0.57 ms with the loop's thread
    real-time, and 0.66 ms again at 2 cores. A real-time thread that is woken runs at once,
    whatever ordinary process is running. What it starts does not inherit it
    (``SCHED_RESET_ON_FORK``): the journal's, store's and history's threads, the web UI, the
    wire process and the builders run as ordinary threads and processes behind it. The loop
    does little per wake (a frame, a decision, a notice) and hands fsyncs, big JSON and
    crypto to them; should it ever spin, the kernel still leaves ordinary processes 5% of
    each core (``sched_rt_runtime_us``), the watchdog sees the loop stop answering, and
    systemd restarts it."""
    system = _no_sched_setattr()
    if system is not None:
        log.info("%s: runs under the ordinary policy (%s)", what, system)
        return False
    try:
        _sched_setattr(
            _SchedAttr(
                size=ctypes.sizeof(_SchedAttr),
                sched_policy=os.SCHED_FIFO,
                sched_flags=_SCHED_FLAG_RESET_ON_FORK,
                sched_priority=REALTIME_PRIORITY,
            )
        )
    except OSError as exc:
        log.info(
            "%s: runs under the ordinary policy (real-time priority %d refused: %s); under "
            "load a card may wait a few milliseconds for a core (the unit allows it with "
            "LimitRTPRIO=1 and RestrictRealtime=no)",
            what,
            REALTIME_PRIORITY,
            exc,
        )
        return False
    return True
