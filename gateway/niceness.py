"""The CPU priority of the gateway's own background processes: the doors' process first.

On a busy box, Linux shares a core between runnable processes by their niceness, and a
process that wakes (the doors' event loop, when a card's bytes arrive) is let in ahead of
the running one sooner the higher its priority is against it. Measured on 2026-12-02 with
the loop-lag bench: almost every late wake of the doors' loop under load (a check-in drain,
peers' check-ins, a delta, the web UI) was time spent waiting for a core, not for the
interpreter lock. So every process of the gateway that does background work lowers its
own priority once, as it starts; lowering it needs no privilege. The doors' process keeps
the priority it was started with.

The shipped systemd unit allows the one system call this needs (``setpriority``) and
nothing else of ``@resources``. Where the system refuses it anyway, the process says so
in the log and runs on, as an equal of the doors'.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

WIRE = 5  # the MQTT wire (drain, peers' check-ins, commands): behind the doors, ahead of the rest
BACKGROUND = 10  # the web UI, the snapshot builder and its writer, the delta worker


def lower_own_priority(what: str, by: int) -> int | None:
    """Lower this process's priority ``by`` steps below the niceness it inherited (that
    is, below the doors' process); its new niceness, or None (logged) if refused."""
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
