"""Issue 10: the installer UI in the site's language (en, nb, da, fr), complete by construction.

The sources are scanned (templates, JS, Python of ``gateway/web``) for the message ids they
use; each must have a non-empty text in every language with the same placeholders. Text a
page or script shows without going through the catalogue fails the scan too, so a new
English string cannot slip in unnoticed.
"""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path

import pytest

from gateway.messages import DEFAULTS
from gateway.web import i18n
from gateway.web.auth import password_problem
from gateway.web.bridge import Bridge
from gateway.web.i18n import FAMILIES, JS_FAMILIES, LANGUAGES, MESSAGES, js_words, say, t
from gateway.web.words import duration, local_time, row_words

WEB = Path(i18n.__file__).parent
TEMPLATES = sorted((WEB / "templates").glob("*.html"))
SCRIPTS = sorted((WEB / "static").glob("*.js"))
PYTHON = sorted(p for p in WEB.glob("*.py") if p.name != "i18n.py")
KEY = r"[a-z_]+\.[a-z_0-9]+"


def _template_ids(text: str) -> tuple[set[str], set[str]]:
    """Message ids and code families a template uses (inside ``{{ }}`` and ``{% %}``)."""
    ids: set[str] = set()
    families: set[str] = set()
    for block in re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S):
        ids |= set(re.findall(rf"'({KEY})'", block))
        families |= set(re.findall(r"say\(\s*'(\w+)'\s*\)", block))
        families |= set(re.findall(r"map\(\s*'say'\s*,\s*'(\w+)'\s*\)", block))
    return ids, families


def _script_ids(text: str) -> tuple[set[str], set[str]]:
    ids = set(re.findall(rf'\bT\(\s*"({KEY})"', text))
    families = set(re.findall(r'\bsay\(\s*"(\w+)"', text))
    return ids, families


def _python_ids(text: str) -> tuple[set[str], set[str]]:
    ids = set(re.findall(rf'(?<![\w.])(?:i18n\.)?t\(\s*[\w."]+\s*,\s*"({KEY})"', text))
    ids |= set(re.findall(rf'self\._t\(\s*"({KEY})"', text))
    families = set(re.findall(r'(?<![\w.])(?:i18n\.)?say\(\s*[\w.]+\s*,\s*"(\w+)"', text))
    return ids, families


def used() -> tuple[set[str], set[str]]:
    """Every message id and code family the UI's sources use."""
    ids: set[str] = set()
    families: set[str] = set()
    for paths, scan in ((TEMPLATES, _template_ids), (SCRIPTS, _script_ids),
                        (PYTHON, _python_ids)):  # fmt: skip
        for path in paths:
            found, fams = scan(path.read_text(encoding="utf-8"))
            ids |= found
            families |= fams
    return ids, families


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_languages_are_those_of_the_door_messages() -> None:
    assert LANGUAGES == tuple(DEFAULTS) == ("en", "nb", "da", "fr")


def test_the_scan_finds_ids_in_every_kind_of_source() -> None:
    ids, families = used()
    assert {"nav.dashboard", "login.help", "dash.attention"} <= ids  # templates
    assert {"js.working", "js.no_news", "js.remove"} <= ids  # app.js, setup.js
    assert {"login.wrong", "tool.pulsed", "gw.no_answer", "password.short"} <= ids  # Python
    assert {"mode", "decision", "credkind", "event", "dir"} <= families


def test_every_used_id_has_a_text_in_every_language_with_the_same_placeholders() -> None:
    ids, families = used()
    assert families <= set(FAMILIES), families - set(FAMILIES)
    needed = ids | {f"{f}.{code}" for f in FAMILIES for code in FAMILIES[f]}
    missing = needed - set(MESSAGES)
    assert not missing, f"not in the catalogue: {sorted(missing)}"
    unused = set(MESSAGES) - needed
    assert not unused, f"in the catalogue but used nowhere: {sorted(unused)}"
    for key, texts in MESSAGES.items():
        assert len(texts) == len(LANGUAGES), key
        assert all(text.strip() for text in texts), key
        english = _fields(texts[0])
        for lang, text in zip(LANGUAGES, texts, strict=True):
            assert _fields(text) == english, (key, lang, text)
            assert "%s" not in text and "%d" not in text, (key, lang)


def test_the_other_languages_are_translated_not_copied() -> None:
    """Most texts differ from English (a few words are the same: MQTT, Normal, Version...)."""
    for i, lang in enumerate(LANGUAGES[1:], start=1):
        same = [key for key, texts in MESSAGES.items() if texts[i] == texts[0]]
        assert len(same) < len(MESSAGES) // 10, (lang, same)


def test_python_never_builds_a_message_id() -> None:
    """Ids are literals (so the scan sees them); codes go through ``say`` and FAMILIES."""
    for path in PYTHON:
        text = path.read_text(encoding="utf-8")
        calls = re.findall(r"(?<![\w.])(?:i18n\.)?t\(\s*[\w.\"]+\s*,\s*(\w+|\S)", text)
        # app.py's ``_`` and GatewaySide._t hand on ids that are scanned where they are written
        wrappers = {("app.py", "key"), ("gateway_side.py", "key")}
        assert all(key == '"' or (path.name, key) in wrappers for key in calls), (path, calls)
        assert all(q == '"' for q in re.findall(r"self\._t\(\s*(\S)", text)), path.name


# text a template may show as it is: names, units, symbols
_TEMPLATE_OK = {"accessgw", "MQTT", "ms", "·", "—", "→", "/"}


def test_templates_show_no_text_outside_the_catalogue() -> None:
    for path in TEMPLATES:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"<script.*?</script>|<datalist.*?</datalist>", " ", text, flags=re.S)
        literal_attrs = re.findall(r'\b(?:placeholder|title|aria-label|alt)="([^"{]*)"', text)
        for value in literal_attrs:  # examples of ids, hosts, paths: no words of a language
            assert " " not in value.strip(), (path.name, value)
        bare = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", text, flags=re.S)
        bare = re.sub(r"<[^>]*>", " ", bare)
        tokens = (w.strip("()[]:,;.") for w in bare.split())
        leftovers = [w for w in tokens if w not in _TEMPLATE_OK and re.search(r"[^\W\d]", w)]
        assert not leftovers, (path.name, leftovers)


# string literals of the scripts that hold a space but are no words (class lists, joiners)
_SCRIPT_OK = {"use strict", "row fresh row-", "result error", "result ok", "result ", " · ",
              " (", ": ", "; ", ", ", " ", ")", " ms"}  # fmt: skip


def test_scripts_show_no_text_outside_the_catalogue() -> None:
    for path in SCRIPTS:
        code = "\n".join(line.split("//", 1)[0] for line in path.read_text().splitlines())
        for literal in re.findall(r'"((?:[^"\\\n]|\\.)*)"', code):
            if re.fullmatch(KEY, literal) or literal in _SCRIPT_OK:
                continue
            words = re.findall(r"[A-Za-zÀ-ÿ]{2,}", literal)
            assert not (" " in literal and words), (path.name, literal)


def test_the_scripts_get_their_words_and_families() -> None:
    words = js_words("fr")
    assert words["js.working"] == "En cours…"
    assert words["decision.granted"] == "autorisé"
    assert all(k.startswith(("js.", *(f + "." for f in JS_FAMILIES))) for k in words)


@pytest.mark.parametrize(
    ("lang", "number", "when", "uptime"),
    [
        ("en", "1,234,567", "2026-12-02 10:14:03", "3 d 4 h"),
        ("nb", "1\u00a0234\u00a0567", "02.12.2026 10:14:03", "3 d 4 t"),
        ("da", "1.234.567", "02.12.2026 10:14:03", "3 d. 4 t."),
        ("fr", "1\u00a0234\u00a0567", "02/12/2026 10:14:03", "3 j 4 h"),
    ],
)
def test_numbers_dates_and_durations_as_each_language_writes_them(
    lang: str, number: str, when: str, uptime: str
) -> None:
    assert i18n.number(lang, 1_234_567) == number
    assert local_time("2026-12-02T09:14:03+00:00", "Europe/Oslo", lang) == when
    assert duration(3 * 86_400 + 4 * 3600 + 5, lang) == uptime
    assert i18n.number(lang, 2.25, 1) in ("2.2", "2,2")  # banker's rounding: either is fine
    assert i18n.seconds(lang, 0.5) == ("0.5" if lang == "en" else "0,5")


def test_codes_and_events_in_words() -> None:
    assert say("nb", "mode", "lockdown") == "sperret"
    assert say("fr", "decision", "denied") == "refusé"
    assert say("da", "mode", "some_new_mode") == "some new mode"  # unknown: shown as it is
    row = {"kind": "event", "what": "installer_action",
           "body": {"detail": {"action": "door_test", "test": "lockdown"}}}  # fmt: skip
    assert row_words(row, "en") == "Installer action: door test, lockdown"
    assert row_words(row, "nb") == "Handling av installatør: dørtest, sperret"
    decision = {"kind": "decision", "what": "expired", "display": "Ola"}
    assert row_words(decision, "fr") == "Votre abonnement a expiré, Ola."


def test_every_event_the_gateway_journals_has_words() -> None:
    # each event type with a log line (gateway/logs.py) or said by the daemon itself
    from gateway import logs

    journalled = set(logs._EVENT_WORDS) | set(logs._QUIET)
    journalled |= {"bad_message", "component_failed", "installer_action", "disk_full",
                   "journal_unwritable", "duplicate_credential"}  # fmt: skip
    assert journalled - set(FAMILIES["event"]) == set()
    row = {"kind": "event", "what": "journal_filling", "body": {"detail": {}}}
    assert row_words(row, "nb") == "Journalen fylles opp (ikke sendt ennå)"


def test_unknown_languages_fall_back_to_english() -> None:
    assert t("sv", "nav.events") == "Events"
    assert t("fr", "dash.ago", duration="5 min") == "il y a 5 min"
    assert password_problem("short", "da") == "Adgangskoden skal have mindst 10 tegn."
    assert password_problem("short") == "The password needs at least 10 characters."


def test_a_gateway_that_stops_answering_is_told_in_the_sites_language() -> None:
    """The stale banner's reason and a tool's 503 come from the UI's bridge, which learns
    the site's language from the gateway's snapshot."""
    answers: list[dict[str, object] | Exception] = [
        {"language": "nb", "doors": []},
        ConnectionError("refused"),
    ]

    async def remote(name: str, *args: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def scenario() -> dict[str, object]:
        bridge = Bridge(remote)
        assert bridge.language == "en"  # before the first snapshot
        await bridge.snapshot()
        assert bridge.language == "nb"
        bridge.forget_snapshot()
        return await bridge.snapshot()

    stale = asyncio.run(scenario())
    assert stale["stale"] is True
    assert stale["stale_reason"] == "Gatewayen kjører ikke (refused)."
