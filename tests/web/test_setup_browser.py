"""Issue 11 in a real browser (Debian's Chromium via Playwright, never a downloaded one):
add a Modbus TCP board and a door from profiles, apply, see the door on the dashboard,
break a field and see the message, roll back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.relay_board import RelayBoardSim
from tests.web.harness import PASSWORD, Site, eventually, site

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with site(Path(tmp_path_factory.mktemp("setup-browser"))) as s:
        yield s


@pytest.fixture(scope="module")
def hall() -> Iterator[RelayBoardSim]:
    sim = RelayBoardSim().start_tcp()
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def page(gw: Site) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        pg.on("dialog", lambda dialog: dialog.accept())
        pg.goto(gw.url + "/setup")
        pg.fill("input[name=code]", gw.setup_code())
        pg.fill("input[name=password]", PASSWORD)
        pg.fill("input[name=again]", PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(gw.url + "/")
        yield pg
        context.close()
        browser.close()


def _apply(page, form: str) -> str:  # type: ignore[no-untyped-def]
    """Submit a set-up form; the result line once the gateway answered."""
    page.locator(f"#{form} button[type=submit]").click()
    result = page.locator("#setup-result")
    eventually(lambda: result.inner_text() not in ("", "Checking and applying…"), within=25)
    return str(result.inner_text())


def test_add_a_board_and_a_door_see_it_break_a_field_roll_back(
    page, gw: Site, hall: RelayBoardSim
) -> None:
    page.goto(gw.url + "/devices")
    board = page.locator("#board-form")
    board.locator("input[name=id]").fill("hall")
    board.locator("select[name=profile]").select_option("modbus-tcp-relay")
    board.locator("input[name=host]").fill("127.0.0.1")
    board.locator("input[name=tcp_port]").fill(str(hall.port))
    assert _apply(page, "board-form").startswith("applied as version")
    page.wait_for_load_state()
    page.locator("tr[data-board=hall]").wait_for()

    door = page.locator("#door-form")
    door.locator("input[name=id]").fill("hall-in")
    door.locator("input[name=zone]").fill("gym")
    door.locator("select[name='lock.board']").select_option("hall")
    door.locator("input[name='lock.index']").fill("1")
    assert _apply(page, "door-form").startswith("applied as version")
    page.locator("tr[data-door=hall-in]").wait_for()

    page.goto(gw.url + "/")
    page.locator("[data-door=hall-in]").wait_for()  # the new door on the dashboard

    page.goto(gw.url + "/devices")
    door = page.locator("#door-form")
    door.locator("input[name=id]").fill("hall-in")
    door.locator("input[name=zone]").fill("gym")
    door.locator("select[name='lock.board']").select_option("hall")
    door.locator("input[name='lock.index']").fill("9")  # the board has 8 relays
    assert _apply(page, "door-form").startswith("not applied: 1 problem(s)")
    problem = page.locator("#setup-problems li").first.inner_text()
    assert problem.startswith("doors[hall-in].lock.index (line ")
    assert problem.endswith(": board 'hall' has 8 outputs (index 0..7)")
    assert "index = 1" in gw.config_path.read_text()  # nothing changed

    page.locator("#rollback").click()
    result = page.locator("#setup-result")
    assert eventually(lambda: result.inner_text().startswith("back"), within=25)
    page.wait_for_timeout(1000)  # the page reloads with the versions
    page.goto(gw.url + "/")
    page.locator("[data-door=main-in]").wait_for()
    assert page.locator("[data-door=hall-in]").count() == 0
    assert "hall-in" not in gw.gateway.doors
