"""Messages: display text per reason and language, with {display} filled in or left out."""

from __future__ import annotations

import pytest

from gateway.messages import DEFAULTS, REASONS, render


@pytest.mark.parametrize("language", ["en", "nb", "da", "fr"])
def test_every_reason_code_has_a_default_message_in_each_language(language):
    assert set(REASONS) <= set(DEFAULTS[language])


def test_display_is_filled_in():
    assert render("ok", "Kari N.", "nb") == "Velkommen, Kari N.!"


def test_display_is_left_out_with_its_comma_when_there_is_none():
    assert render("ok", None, "en") == "Welcome!"
    assert render("frozen", None, "en") == "Your membership is frozen."


def test_unknown_language_falls_back_to_english():
    assert render("ok", "Kari", "xx") == "Welcome, Kari!"


def test_site_messages_override_the_defaults():
    site = {"nb": {"frozen": "Medlemskapet ditt er fryst."}}
    assert render("frozen", "Kari", "nb", site) == "Medlemskapet ditt er fryst."
    assert render("ok", "Kari", "nb", site) == "Velkommen, Kari!"
