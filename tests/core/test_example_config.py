"""config/example.toml: says which values are defaults and which are examples, truthfully."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from gateway.validation import key_lines, model_at

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"
MARK = re.compile(r"#\s*(required|default|example)\b")


def _value(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        data = data[part]
    return data


def _marked_keys() -> list[tuple[tuple[str | int, ...], int, str, Any]]:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    found = []
    for loc, number in key_lines(text).items():
        line = lines[number - 1]
        if line.lstrip().startswith("[") or not isinstance(loc[-1], str):
            continue  # a table header
        found.append((loc, number, line, _value(data, loc)))
    return found


def test_every_key_says_whether_it_is_required_a_default_or_an_example() -> None:
    for loc, number, line, value in _marked_keys():
        mark = MARK.search(line)
        assert mark, f"example.toml line {number}: say required, default or example: {line}"
        model = model_at(loc[:-1])
        assert model is not None, loc
        field = model.model_fields[str(loc[-1])]
        if field.is_required():
            assert mark.group(1) == "required", f"line {number}: {loc[-1]} has no default"
            continue
        default = field.get_default(call_default_factory=True)
        is_default = TypeAdapter(field.annotation).validate_python(value) == default
        expected = "default" if is_default else "example"
        assert mark.group(1) == expected, f"line {number}: {line.strip()} is a {expected}"


def test_the_example_says_which_contact_level_means_closed() -> None:
    text = EXAMPLE.read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("# contact = ")]
    contact = tomllib.loads(line.removeprefix("# "))["contact"]
    assert contact["closed_when"] == "active"
    assert '"active" (the default: the input is on while the door is closed' in text
    assert "closed = 1" not in text  # the old, wrong polarity note
