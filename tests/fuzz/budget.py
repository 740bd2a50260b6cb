"""How many inputs each fuzz test tries: a modest count in CI, a million by hand.

``ACCESSGW_FUZZ_LONG=1`` runs the long form: at least 1,000,000 inputs per parser
(100,000 for ``accessgw decide``, a whole command per input); ``ACCESSGW_FUZZ_EXAMPLES=N``
sets any other count.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("ACCESSGW_FUZZ_LONG") == "1" or os.environ.get("ACCESSGW_LONG") == "1"


def budget(ci: int, long: int = 1_000_000) -> settings:
    """Hypothesis settings for one fuzz test (derandomised in CI: the same inputs each run)."""
    override = os.environ.get("ACCESSGW_FUZZ_EXAMPLES")  # e.g. a timed run for the report
    return settings(
        max_examples=int(override) if override else (long if LONG else ci),
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
