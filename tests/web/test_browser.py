"""Issue 10 in a real browser: Debian's Chromium driven by Playwright, on the real gateway.

Never downloads a browser: it uses /usr/bin/chromium (scripts/test.sh installs it) and is
skipped with the reason when that is missing. Screenshots of every page at 1280 and 390
px wide go to ``$ACCESSGW_SCREENSHOTS`` (default: a temporary folder), printed at the end.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.harness import CARD_UID, PASSWORD, QR_CODE, Site, eventually, site

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PAGES = ["/", "/events", "/tools", "/why?member=M1002&door=main-in"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(
        os.environ.get("ACCESSGW_SCREENSHOTS") or tempfile.mkdtemp(prefix="accessgw-shots-")
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with site(Path(tmp_path_factory.mktemp("browser"))) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, gw: Site):
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def _shoot(pg, shots: Path, name: str) -> None:
    for label, size in (("1280", DESKTOP), ("390", PHONE)):
        pg.set_viewport_size(size)
        pg.wait_for_timeout(150)
        pg.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
    pg.set_viewport_size(DESKTOP)


def test_first_boot_asks_for_the_setup_code_and_sets_the_password(
    page, gw: Site, shots: Path
) -> None:
    page.goto(gw.url + "/")
    assert page.url.endswith("/setup")
    _shoot(page, shots, "setup")
    page.fill("input[name=code]", "WRONG-CODE-0000")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=again]", PASSWORD)
    page.click("button[type=submit]")
    assert "not right" in page.inner_text(".error")
    page.wait_for_timeout(1100)  # one wrong code: the next try waits a second
    page.fill("input[name=code]", gw.setup_code().lower())  # as typed from a phone
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=again]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(gw.url + "/")
    assert "main-in" in page.inner_text("main")


def test_the_dashboard_says_which_door_has_its_relay_board_down(
    page, gw: Site, shots: Path
) -> None:
    page.goto(gw.url + "/")
    side = page.locator("[data-door=side-out]")
    side.wait_for()
    text = side.inner_text()
    assert "unreachable" in text and "far" in text and "connect" in text
    assert "door-bad" in (side.get_attribute("class") or "")
    assert "unknown" in text  # the lock's state is not claimed when its board is away
    assert "door-ok" in (page.locator("[data-door=main-in]").get_attribute("class") or "")


def test_a_card_tap_appears_live_with_the_members_name(page, gw: Site) -> None:
    page.goto(gw.url + "/")
    page.wait_for_timeout(500)  # the live stream is open
    gw.nfc.place(CARD_UID)
    page.locator("#live-rows li", has_text="Kari Nordmann").first.wait_for()
    gw.nfc.remove()
    gw.qr.scan(QR_CODE)
    row = page.locator("#live-rows li", has_text="T-100").first
    row.wait_for()
    assert "granted" in row.inner_text()
    assert " ms" in row.locator(".latency").inner_text()  # how long the decision took
    assert CARD_UID not in page.content()


def test_the_next_card_shows_its_uid(page, gw: Site, shots: Path) -> None:
    page.goto(gw.url + "/tools")
    form = page.locator("form[data-kind=next-card]")
    form.locator("select[name=reader]").select_option("nfc-in")
    form.locator("button").click()
    eventually(lambda: gw.gateway.next_card._waiting.get("nfc-in"))
    time.sleep(0.6)  # past the reader's repeat guard for the same card
    gw.nfc.place(CARD_UID)
    form.locator(".value").wait_for()
    assert form.locator(".value").inner_text() == CARD_UID
    assert "M1001" in form.inner_text()
    gw.nfc.remove()
    _shoot(page, shots, "next-card")


def test_a_relay_pulse_reaches_the_modbus_boards_coil(page, gw: Site) -> None:
    page.goto(gw.url + "/tools")
    form = page.locator("form[data-api='/api/tools/pulse']")
    form.locator("select[name=board]").select_option("relays")
    form.locator("input[name=index]").fill("3")
    form.locator("input[name=seconds]").fill("1")
    form.locator("button").click()
    assert eventually(lambda: gw.relays.coil(3), 5)
    form.locator("output", has_text="output 3 of relays on for 1 s").wait_for()
    assert eventually(lambda: not gw.relays.coil(3), 5)


def lockdowns(gw: Site) -> list[dict[str, object]]:
    """The journalled ``lockdown`` events' details."""
    records = gw.call(gw.gateway.journal.unacked(0, 10_000))
    return [r["message"]["detail"] for r in records
            if r["kind"] == "event" and r["message"]["type"] == "lockdown"]  # fmt: skip


def test_lockdown_and_normal_from_the_door_test(page, gw: Site) -> None:
    page.goto(gw.url + "/tools")
    form = page.locator("form[data-api='/api/tools/door']")
    form.locator("select[name=door]").select_option("main-in")
    form.locator("button[value=lockdown]").click()
    form.locator("output", has_text="lockdown mode").wait_for()
    assert gw.gateway.doors["main-in"].mode == "lockdown"
    assert eventually(lambda: lockdowns(gw) == [{"by": "installer"}], 5)  # not "central"
    page.goto(gw.url + "/")
    assert "lockdown" in page.locator("[data-door=main-in]").inner_text()
    page.goto(gw.url + "/tools")
    form = page.locator("form[data-api='/api/tools/door']")
    form.locator("select[name=door]").select_option("main-in")
    form.locator("button[value=normal]").click()
    form.locator("output", has_text="normal mode").wait_for()
    assert gw.gateway.doors["main-in"].mode == "normal"
    page.goto(gw.url + "/events?reason=installer_action")
    assert "door test, lockdown" in page.inner_text("#event-rows")


def test_every_page_fits_a_phone_without_sideways_scrolling(page, gw: Site, shots: Path) -> None:
    for path in PAGES:
        page.goto(gw.url + path)
        _shoot(page, shots, path.strip("/").split("?")[0] or "dashboard")
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(100)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
    page.set_viewport_size(DESKTOP)


def test_why_shows_the_refusal_with_its_trace(page, gw: Site, shots: Path) -> None:
    gw.nfc.place("04B2C3D4")  # Ola's card: his contract ended
    eventually(
        lambda: gw.gateway.activity.items and gw.gateway.activity.items[-1].get("member") == "M1002"
    )
    gw.nfc.remove()
    page.goto(gw.url + "/why")
    page.fill("input[name=member]", "Ola")
    page.select_option("select[name=door]", "main-in")
    page.click("form[action='/why'] button")
    page.wait_for_url("**/why?member=Ola*")
    body = page.inner_text("main")
    assert "M1002" in body and "denied" in body and "expired" in body.lower()
    page.click("details summary")  # the trace of the last refusal
    assert "contract C2 (recurring): expired" in page.inner_text("details")
    _shoot(page, shots, "why-refused")


def test_csv_export_of_the_filtered_events(page, gw: Site) -> None:
    page.goto(gw.url + "/events?door=main-in")
    with page.expect_download() as info:
        page.click("text=CSV")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert rows and {r["door"] for r in rows} == {"main-in"}
    assert any(r["member"] == "T-100" and r["decision"] == "granted" for r in rows)
    assert all(float(r["latency_ms"]) >= 0 for r in rows if r["kind"] == "decision")
    assert all(CARD_UID not in str(r) for r in rows)


def test_wrong_passwords_are_slowed_down(browser, gw: Site, shots: Path) -> None:
    context = browser.new_context(viewport=PHONE)
    pg = context.new_page()
    pg.goto(gw.url + "/login")
    _shoot(pg, shots, "login")
    pg.fill("input[name=password]", "not the password")
    pg.click("button[type=submit]")
    assert "Wrong password" in pg.inner_text(".error")
    pg.fill("input[name=password]", PASSWORD)
    pg.click("button[type=submit]")
    assert "wait" in pg.inner_text(".error")  # even the right password waits its turn
    _shoot(pg, shots, "login-slowed")
    context.close()


def test_the_stale_banner_shows_when_the_gateway_stops_answering(
    page, gw: Site, shots: Path
) -> None:
    page.goto(gw.url + "/")
    banner = page.locator("#stale")
    assert banner.is_hidden()
    gw.hang(9)  # the gateway's loop hangs; the web UI's own loop still answers
    banner.wait_for(state="visible", timeout=15_000)
    assert "not answering" in banner.inner_text().lower()
    _shoot(page, shots, "stale")
    banner.wait_for(state="hidden", timeout=20_000)  # back: the banner goes away
    gw.stop()
    banner.wait_for(state="visible", timeout=15_000)
    print(f"\nscreenshots: {shots}")
