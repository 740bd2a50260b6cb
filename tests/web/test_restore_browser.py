"""Restore in a real browser (Debian's Chromium via Playwright, never a downloaded one),
issue 11 point 4: on a running ``accessgw run``, upload another gateway's backup with a
wrong passphrase (refused in words), then the right one; see what it brings and what this
box would keep aside; confirm; see the gateway come back, and sign in to it as door-2.
Screenshots at 1280 and 390x844 go to $ACCESSGW_SCREENSHOTS (or a temporary folder)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.web.restore_box import PASSWORD, running_box
from tests.web.restore_support import PASSPHRASE
from tests.web.restore_support import PASSWORD as DOOR_2_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def _shoot(pg, shots: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    for label, size in (("1280", DESKTOP), ("390", PHONE)):
        pg.set_viewport_size(size)
        pg.wait_for_timeout(150)
        pg.screenshot(path=str(shots / f"restore-{name}-{label}.png"), full_page=True)
    pg.set_viewport_size(DESKTOP)


def _sign_in(pg, url: str, password: str) -> None:  # type: ignore[no-untyped-def]
    pg.goto(url + "/login")
    pg.fill("input[name=password]", password)
    pg.click("button[type=submit]")
    pg.wait_for_url(url + "/")


def test_upload_see_what_it_brings_confirm_and_the_gateway_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shots = Path(os.environ.get("ACCESSGW_SCREENSHOTS") or tempfile.mkdtemp(prefix="shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    with running_box(tmp_path, monkeypatch) as box, sync_api.sync_playwright() as p:
        archive = tmp_path / "door-2.agwbak"
        archive.write_bytes(box.backup.sealed)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        pg = browser.new_context(viewport=DESKTOP).new_page()
        pg.set_default_timeout(30_000)
        _sign_in(pg, box.url, PASSWORD)

        pg.goto(box.url + "/devices")
        form = pg.locator("#restore-form")
        form.locator("input[name=file]").set_input_files(str(archive))
        form.locator("input[name=passphrase]").fill("not the passphrase")
        form.locator("button[type=submit]").click()
        result = pg.locator("#restore-result")
        result.filter(has_text="Not restored").wait_for()
        assert "the passphrase is wrong, or the file is damaged" in result.inner_text()
        pg.locator("#restore-card").scroll_into_view_if_needed()
        _shoot(pg, shots, "refused")

        form.locator("input[name=passphrase]").fill(PASSPHRASE)
        form.locator("button[type=submit]").click()
        pg.wait_for_url(box.url + "/restore/*")
        assert pg.locator("#restore-ask h1").inner_text() == "Restore door-2?"
        warning = pg.locator("#restore-backlog-warning")
        assert warning.is_visible() and "not acknowledged" in warning.inner_text()
        plan = pg.locator("#restore-plan").inner_text()
        assert "main-in (gym, in), side-in (gym, in)" in plan and "entry-osdp" in plan
        assert "old-reader" in plan and "replaced-" in plan
        _shoot(pg, shots, "confirm")

        pg.locator("#restore-confirm").click()
        pg.locator("#restore-waiting").wait_for()
        _shoot(pg, shots, "waiting")
        pg.locator("#restore-sign-in").wait_for(timeout=90_000)
        assert pg.locator("#restore-done h1").inner_text() == "door-2 is back"
        assert pg.locator("#restore-ask").is_hidden()
        _shoot(pg, shots, "back")
        box.daemon.wait_for("gateway door-2 of site demo-club started")

        pg.locator("#restore-sign-in").click()
        pg.fill("input[name=password]", DOOR_2_PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(box.url + "/")
        assert "door-2" in pg.locator("header .gw").inner_text()
        pg.goto(box.url + "/devices")  # the restore is told where it was done
        last = pg.locator("#restore-last")
        assert "Last restore: door-2" in last.inner_text() and "replaced-" in last.inner_text()
        last.scroll_into_view_if_needed()
        _shoot(pg, shots, "devices-after")
        browser.close()
    print(f"\nscreenshots: {shots}")
