"""`decide --set` reads a set without a store: the same answers as the store would give
(the later record keeps a credential, an id listed twice keeps its later record), an
invalid set still refused, in worker processes or not, with a progress line."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import set_scan
from gateway.entitlements import credential_key
from gateway.errors import InvalidSet
from gateway.set_scan import Wanted, scan_set
from tests.support.sets import contract, member, rules

CARD = "04A1B2C3"


def card(uid: str) -> dict[str, str]:
    return {"kind": "nfc", "uid": uid}


def the_set(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 3, "rules": rules(), "records": records}


def wanted(uid: str = CARD) -> Wanted:
    return Wanted(key=credential_key("nfc", uid))


@pytest.fixture(params=[1, 2], ids=["in-process", "two-workers"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(set_scan, "SLICE", 2)  # several slices even for a small set
    return int(request.param)


def test_the_later_record_keeps_a_credential_given_twice(workers: int) -> None:
    records = [
        member("M1", credentials=[card(CARD)], contracts=[contract("c1")]),
        member("M2", credentials=[card("04000002")], contracts=[contract("c2")]),
        member("M3", credentials=[card(CARD)], contracts=[contract("c3")]),
    ]
    view = scan_set(the_set(records), wanted(), workers=workers)
    found = view.find("nfc", CARD)
    assert found is not None and found.id == "M3"
    assert view.find("nfc", "04000002") is None  # not wanted: not kept
    assert (view.version, view.count) == (3, 3)


def test_an_id_listed_twice_keeps_its_later_record(workers: int) -> None:
    records = [
        member("M1", credentials=[card(CARD)], contracts=[contract("c1")]),
        member("M2", credentials=[], contracts=[contract("c2")]),
        member("M1", credentials=[card("04000009")], contracts=[contract("c1")]),
    ]
    view = scan_set(the_set(records), wanted(), workers=workers)
    assert view.find("nfc", CARD) is None
    assert view.count == 2


def test_a_pass_finds_its_member_by_id(workers: int) -> None:
    records = [member(f"M{i}", contracts=[contract("c")]) for i in range(5)]
    view = scan_set(the_set(records), Wanted(member="M3"), workers=workers)
    found = view.member("M3")
    assert found is not None and found.id == "M3" and view.member("M2") is None


def test_an_invalid_record_anywhere_refuses_the_set(workers: int) -> None:
    records: list[dict[str, Any]] = [member(f"M{i}", contracts=[contract("c")]) for i in range(5)]
    records[4] = {"member": "M4", "credentials": [{"kind": "nfc", "uid": "zz"}]}
    with pytest.raises(InvalidSet) as refused:
        scan_set(the_set(records), wanted(), workers=workers)
    assert refused.value.problems[0].startswith("records[4](M4)")


def test_progress_is_said_while_it_takes_long(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    real = set_scan._scan_slice

    def slow(start: int, stop: int, want: Wanted) -> Any:
        stopped = __import__("threading").Event()
        stopped.wait(2.5 if start == 0 else 0)  # the first slice outlasts one progress tick
        return real(start, stop, want)

    monkeypatch.setattr(set_scan, "_scan_slice", slow)
    monkeypatch.setattr(set_scan, "SLICE", 2)
    records = [member(f"M{i}", contracts=[contract("c")]) for i in range(4)]
    with set_scan.Progress(said.append) as progress:
        scan_set(the_set(records), wanted(), workers=1, progress=progress)
    assert said and said[0].startswith("decide: 0 of 4 records validated")


def test_the_opening_line_is_said_at_once() -> None:
    said: list[str] = []
    with set_scan.Progress(said.append, "decide: reading set.json (250 MiB), then validating it"):
        assert said == ["decide: reading set.json (250 MiB), then validating it"]
