"""Issue 9, point 8: the sync side knows the gateway through a narrow protocol, not the daemon."""

from __future__ import annotations

import subprocess
import sys


def test_the_sync_side_imports_without_the_daemon() -> None:
    """No import cycle: gateway.sync.runner names what it needs (SyncHost) instead of
    importing gateway.daemon, which imports it."""
    code = (
        "import sys, gateway.sync.runner as r; "
        "print('gateway.daemon' in sys.modules, sorted(vars(r.SyncHost)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False ")  # the daemon was not imported
    assert "'record_event'" in out.stdout and "'start'" not in out.stdout
