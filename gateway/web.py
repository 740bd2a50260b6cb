"""The installer's local web UI: what the box sees, live.

Read-only: the status (doors, readers, entitlements, journal backlog) and the stream of
reads, decisions and events. Served on loopback by default (``[web] listen``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse

from gateway import __version__
from gateway.activity import Activity

PAGE = (resources.files("gateway") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(status: Callable[[], dict[str, Any]], activity: Activity) -> FastAPI:
    """The web app over the gateway's live ``status`` and ``activity``."""
    app = FastAPI(title="accessgw", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        """The installer's page."""
        return PAGE

    @app.get("/api/status")
    def get_status() -> dict[str, Any]:
        """The gateway's status, with each reader's health."""
        out = dict(status())
        out["readers"] = {
            r: {"online": h.online, "reason": h.reason, "at": h.at.isoformat()}
            for r, h in activity.readers.items()
        }
        return out

    @app.get("/api/activity")
    def get_activity(after: int = Query(-1, ge=-1)) -> list[dict[str, Any]]:
        """Reads, decisions and events after running number ``after``."""
        return activity.since(after)

    return app
