"""Issue 10: the installer UI in the site's language, seen in a real browser.

Debian's Chromium (never a downloaded one) on a real gateway whose ``[gateway] language``
is nb, fr or da: every page has the right ``<html lang>``, shows no English text of the
catalogue (texts equal in both languages, names and data excepted), a live card tap arrives
as a row in that language, and at 390 px no page scrolls sideways. Screenshots of every page
at 1280 and 390 px go to ``$ACCESSGW_SCREENSHOTS`` (default: a temporary folder), printed.
"""

from __future__ import annotations

import os
import re
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.messages import render
from gateway.web.i18n import LANGUAGES, MESSAGES, t
from tests.web.harness import CARD_UID, PASSWORD, Site, eventually, site

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
PAGES = ["/", "/events", "/tools", "/devices", "/mqtt", "/why?member=M1002&door=main-in"]
OLA_UID = "04B2C3D4"

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")

# what the page shows as data, not as its own words: drivers' and the decision's own texts
# and the hardware profiles' model names (English by design, see README), code and file
# names, the card's value
VISIBLE_WORDS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('.problem, .trace, code, datalist, footer, .value, #stale-why, ' +
                        'select[name=profile]')
    .forEach(e => e.remove());
  const attrs = Array.from(document.querySelectorAll('[placeholder], [title]'))
    .map(e => (e.getAttribute('placeholder') || '') + ' ' + (e.getAttribute('title') || ''));
  const hidden = document.createElement('div');
  hidden.style.position = 'absolute';
  hidden.appendChild(body);
  document.documentElement.appendChild(hidden);
  const text = hidden.innerText;
  hidden.remove();
  return text + '\\n' + attrs.join('\\n');
}"""


def english_fragments(lang: str) -> list[str]:
    """The English catalogue's words that must not show on a page in ``lang``: each text's
    fixed parts (placeholders split them) that no text of ``lang`` has too."""
    col = LANGUAGES.index(lang)
    theirs = "\n".join(texts[col] for texts in MESSAGES.values())
    found: set[str] = set()
    for texts in MESSAGES.values():
        english = texts[0]
        if english == texts[col]:
            continue
        for literal, *_ in string.Formatter().parse(english):
            part = literal.strip(" .,:;()…→?!'")
            if len(re.findall(r"[A-Za-z]", part)) >= 4 and part not in theirs:
                found.add(part)
    return sorted(found, key=len, reverse=True)


def assert_in_language(pg: Any, lang: str, where: str) -> None:
    assert pg.evaluate("document.documentElement.lang") == lang, where
    text = pg.evaluate(VISIBLE_WORDS)
    english = [
        f for f in english_fragments(lang) if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)
    ]
    assert not english, (where, english)


@pytest.fixture(scope="module")
def shots() -> Iterator[Path]:
    folder = Path(
        os.environ.get("ACCESSGW_SCREENSHOTS") or tempfile.mkdtemp(prefix="accessgw-shots-")
    )
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\nscreenshots (site languages): {folder}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def _shoot_and_fit(pg: Any, shots: Path, name: str, *, save: bool) -> None:
    """Screenshots at both widths; at 390 px the page must not scroll sideways."""
    for label, size in (("1280", DESKTOP), ("390", PHONE)):
        pg.set_viewport_size(size)
        pg.wait_for_timeout(120)
        if save:
            pg.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], (name, width)
    pg.set_viewport_size(DESKTOP)


def _restore_plan_page(gw: Site, cookies: list[dict[str, Any]]) -> str:
    """A checked (not confirmed) restore of this box's own backup: its confirmation page."""
    jar = {c["name"]: c["value"] for c in cookies}
    with httpx.Client(base_url=gw.url, cookies=jar, timeout=60) as client:
        home = client.get("/")
        csrf = home.text.split('name="csrf" content="', 1)[1].split('"', 1)[0]
        headers = {"x-csrf-token": csrf}
        backup = client.post("/api/backup", json={"passphrase": PASSWORD}, headers=headers)
        assert backup.status_code == 200, backup.text
        checked = client.post(
            "/api/restore",
            content=backup.content,
            headers={**headers, "content-type": "application/octet-stream",
                     "x-backup-passphrase": PASSWORD.replace(" ", "%20")},
        )  # fmt: skip
        assert checked.status_code == 200, checked.text
        return f"/restore/{checked.json()['plan']['token']}"


@pytest.mark.parametrize("lang", ["nb", "fr", "da"])
def test_every_page_in_the_sites_language(
    lang: str, browser: Any, shots: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    save = lang in ("nb", "fr")  # screenshots of two languages; da is checked the same way
    with site(Path(tmp_path_factory.mktemp(f"i18n-{lang}")), language=lang) as gw:
        context = browser.new_context(viewport=DESKTOP)
        pg = context.new_page()
        pg.set_default_timeout(15_000)

        pg.goto(gw.url + "/")
        assert pg.url.endswith("/setup")
        assert_in_language(pg, lang, "setup")
        _shoot_and_fit(pg, shots, f"{lang}-setup", save=save)
        pg.fill("input[name=code]", gw.setup_code())
        pg.fill("input[name=password]", "short")
        pg.fill("input[name=again]", "short")
        pg.evaluate("document.querySelectorAll('[minlength]').forEach(e => e.minLength = 0)")
        pg.click("button[type=submit]")
        assert pg.inner_text(".error") == t(lang, "password.short", n=10)  # the UI's own error
        pg.fill("input[name=code]", gw.setup_code())
        pg.fill("input[name=password]", PASSWORD)
        pg.fill("input[name=again]", PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(gw.url + "/")

        # a live row in the site's language: the decision word and the member's greeting
        pg.wait_for_timeout(500)  # the live stream is open
        gw.nfc.place(CARD_UID)
        row = pg.locator("#live-rows li", has_text="Kari Nordmann").first
        row.wait_for()
        assert t(lang, "decision.granted") in row.inner_text()
        assert render("ok", "Kari Nordmann", lang) in row.inner_text()
        gw.nfc.remove()
        time.sleep(0.6)  # past the repeat guard
        gw.nfc.place(OLA_UID)  # Ola is refused (expired): the why page has his decision
        pg.locator("#live-rows li", has_text="Ola Hansen").first.wait_for()
        gw.nfc.remove()

        for path in [*PAGES, _restore_plan_page(gw, context.cookies())]:
            pg.goto(gw.url + path)
            name = path.strip("/").split("?")[0].split("/")[0] or "dashboard"
            assert_in_language(pg, lang, path)
            _shoot_and_fit(pg, shots, f"{lang}-{name}", save=save)
        pg.click("#restore-cancel")
        pg.wait_for_url("**/devices")

        # a tool's answer, worded by the gateway in the site's language
        pg.goto(gw.url + "/tools")
        form = pg.locator("form[data-api='/api/tools/pulse']")
        form.locator("input[name=index]").fill("3")
        form.locator("input[name=seconds]").fill("1")
        form.locator("button").click()
        pulsed = t(lang, "tool.pulsed", index=3, board="relays", seconds="1")
        form.locator("output", has_text=pulsed).wait_for()
        assert eventually(lambda: not gw.relays.coil(3), 5)

        # the stale banner and its reason, written by the page's script
        pg.goto(gw.url + "/")
        gw.hang(10)
        banner = pg.locator("#stale")
        banner.wait_for(state="visible", timeout=15_000)
        assert t(lang, "stale.title") in banner.inner_text()
        _shoot_and_fit(pg, shots, f"{lang}-stale", save=save)
        banner.wait_for(state="hidden", timeout=20_000)

        pg.click("#logout")
        pg.wait_for_url("**/login")
        pg.fill("input[name=password]", "not the password")
        pg.click("button[type=submit]")
        assert t(lang, "login.wrong", seconds="X").split("X")[0] in pg.inner_text(".error")
        assert_in_language(pg, lang, "login")
        _shoot_and_fit(pg, shots, f"{lang}-login", save=save)
        context.close()
