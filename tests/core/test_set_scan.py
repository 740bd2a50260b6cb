"""`decide --set` reads a set without a store: the same answers as the store would give
(the later record keeps a credential, an id listed twice keeps its later record), an
invalid set still refused, in worker processes or not, with a progress line."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import set_scan
from gateway.entitlements import Member, credential_key, parse_set
from gateway.errors import InvalidSet
from gateway.set_scan import Wanted, scan_set
from tests.fuzz.budget import budget
from tests.support.procs import children
from tests.support.sets import contract, member, rules, ticket

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

    def slow(raws: list[Any], start: int, stop: int, want: Wanted, release: bool = False) -> Any:
        stopped = __import__("threading").Event()
        stopped.wait(2.5 if start == 0 else 0)  # the first slice outlasts one progress tick
        return real(raws, start, stop, want, release)

    monkeypatch.setattr(set_scan, "_scan_slice", slow)
    monkeypatch.setattr(set_scan, "SLICE", 2)
    records = [member(f"M{i}", contracts=[contract("c")]) for i in range(4)]
    with set_scan.Progress(said.append) as progress:
        scan_set(the_set(records), wanted(), workers=1, progress=progress)
    assert said and said[0].startswith("decide: 0 of 4 records validated")


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "two-workers"])
def test_progress_moves_as_slices_are_validated(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    said: list[str] = []
    real = set_scan._scan_slice

    def slow(raws: list[Any], start: int, stop: int, want: Wanted, release: bool = False) -> Any:
        # the second slice of each part outlasts a progress tick: by then the first is done
        __import__("threading").Event().wait(2.5 if start in (2, 6) else 0)
        return real(raws, start, stop, want, release)

    monkeypatch.setattr(set_scan, "_scan_slice", slow)
    monkeypatch.setattr(set_scan, "SLICE", 2)
    records = [member(f"M{i}", contracts=[contract("c")]) for i in range(8)]
    with set_scan.Progress(said.append) as progress:
        scan_set(the_set(records), wanted(), workers=workers, progress=progress)
    done = 2 * workers  # the first slice of each part
    assert said and said[0].startswith(f"decide: {done} of 8 records validated")


def test_the_opening_line_is_said_at_once() -> None:
    said: list[str] = []
    with set_scan.Progress(said.append, "decide: reading set.json (250 MiB), then validating it"):
        assert said == ["decide: reading set.json (250 MiB), then validating it"]


# --- the scan answers as the gateway's own parsing does -----------------------------------

PRESENTED = [  # (kind, value, format): what a support person may ask about
    ("nfc", "04A1B2C3", None),
    ("nfc", "04:a1:b2:c3", None),
    ("nfc", "04000002", None),
    ("nfc", "4711", "wiegand26"),
    ("code", "CODE-1", None),
    ("code", " EVT-1 ", None),
]
CREDENTIALS: list[dict[str, Any]] = [
    card(CARD),
    card("04a1b2c3"),
    card("04-A1-B2-C3"),
    card("04000002"),
    card("zz"),  # not hex: the record is refused
    {"kind": "nfc", "uid": "0004711", "format": "wiegand26"},
    {"kind": "nfc", "uid": "4711", "format": ""},  # no format: 4711 is not a UID
    {"kind": "code", "value": "CODE-1"},
    {"kind": "code", "value": "  CODE-1\t"},
    {"kind": "code", "value": "   "},  # blank: refused
    {"kind": "phone", "device": "d", "key": "code:CODE-1", "bound_at": "2026-01-01T00:00:00Z"},
    {"kind": "fingerprint"},
]
DATES = ["2026-01-01", "2026-02-30", "2026-1-01", "２０２６-01-01", 20260101, None]
SCHEDULES = [None, "open", "offpeak", "nowhere"]


@st.composite
def records(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["member", "member", "member", "ticket", "odd"]))
    rid = draw(st.sampled_from(["M1", "M2", "M3", "T1"]))
    if shape == "member":
        contracts = [
            contract(
                "c", start=draw(st.sampled_from(DATES)), schedule=draw(st.sampled_from(SCHEDULES))
            )
            for _ in range(draw(st.integers(0, 2)))
        ]
        creds = draw(st.lists(st.sampled_from(CREDENTIALS), max_size=3))
        return member(rid, credentials=creds, contracts=contracts)
    if shape == "ticket":
        return ticket(rid, code=draw(st.sampled_from(["EVT-1", " EVT-1", "CODE-1", " "])))
    return draw(st.sampled_from([[], "M1", {"display": "neither member nor ticket"}]))


@budget(ci=300, long=100_000)
@given(
    raws=st.lists(records(), max_size=14),
    presented=st.sampled_from(PRESENTED),
    by_member=st.booleans(),
    slice_size=st.integers(1, 4),
    workers=st.sampled_from([1, 1, 1, 2, 3]),
)
def test_the_scan_answers_as_the_parsed_set_does(
    raws: list[Any],
    presented: tuple[str, str, str | None],
    by_member: bool,
    slice_size: int,
    workers: int,
) -> None:
    raw = the_set(raws)
    key = credential_key(*presented)
    want = Wanted(member="M2") if by_member else Wanted(key=key)
    try:
        _, _, parsed = parse_set(raw)
    except InvalidSet as exc:
        with pytest.raises(InvalidSet) as refused:
            _scan(raw, want, slice_size, workers)
        assert refused.value.problems[:10] == exc.problems[:10]
        return
    view = _scan(raw, want, slice_size, workers)
    latest: dict[str, Any] = {}  # by id, the later record of an id listed twice, in set order
    for record in parsed:
        latest.pop(record.id, None)
        latest[record.id] = record
    assert view.count == len(latest)
    if by_member:
        expected = latest.get("M2")
        assert view.member("M2") == (expected if isinstance(expected, Member) else None)
    else:
        holding = [r for r in latest.values() if key in r.credential_keys()]
        assert view.find(*presented) == (holding[-1] if holding else None)
    for record in parsed:
        for k in (key, "phone:x", "code:", "nfc:04A1B2C3"):
            assert record.holds(k) == (k in record.credential_keys())


def _scan(raw: Any, want: Wanted, slice_size: int, workers: int) -> set_scan.SetView:
    original = set_scan.SLICE
    set_scan.SLICE = slice_size  # several slices of a small set (no fixture: hypothesis)
    try:
        return scan_set(raw, want, workers=workers)
    finally:
        set_scan.SLICE = original


def test_the_records_are_left_alone_unless_released() -> None:
    records = [member(f"M{i}", credentials=[card(CARD)]) for i in range(3)]
    kept, released = the_set(records), the_set(list(records))
    assert scan_set(kept, wanted(), workers=1).find("nfc", CARD) is not None
    assert kept["records"] == records
    view = scan_set(released, wanted(), workers=1, release=True)
    found = view.find("nfc", CARD)
    assert found is not None and found.id == "M2" and view.count == 3
    assert released["records"] == [None, None, None]  # each freed once it was checked


def test_with_workers_every_record_is_released_and_the_answer_is_the_same() -> None:
    records = [member(f"M{i}", credentials=[card(CARD if i == 5 else f"0400000{i}")])
               for i in range(8)]  # fmt: skip
    released = the_set(list(records))
    original = set_scan.SLICE
    set_scan.SLICE = 2
    try:
        view = scan_set(released, wanted(), workers=2, release=True)
    finally:
        set_scan.SLICE = original
    found = view.find("nfc", CARD)
    assert found is not None and found.id == "M5" and view.count == 8
    assert released["records"] == [None] * 8  # the workers' part freed here too


def test_a_worker_that_dies_is_a_clear_error_and_leaves_no_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = set_scan._scan_slice
    parent = os.getpid()

    def dying(raws: list[Any], start: int, stop: int, want: Wanted, release: bool = False) -> Any:
        if os.getpid() != parent:
            os._exit(9)  # as the kernel's out-of-memory killer would end it
        return real(raws, start, stop, want, release)

    monkeypatch.setattr(set_scan, "_scan_slice", dying)
    monkeypatch.setattr(set_scan, "SLICE", 2)
    records = [member(f"M{i}", contracts=[contract("c")]) for i in range(6)]
    before = children(os.getpid())
    with pytest.raises(set_scan.ScanFailed, match="records 3 to 5 ended without an answer"):
        scan_set(the_set(records), wanted(), workers=2)
    assert children(os.getpid()) == before  # none left, not even a zombie


# --- a big file read in parts, one per core ------------------------------------------------

LAYOUTS = [  # how a set file may be written: compact, spaced, indented, keys in odd places
    lambda s: json.dumps(s, separators=(",", ":")),
    json.dumps,
    lambda s: json.dumps(s, indent=2),
    lambda s: json.dumps({"records": s["records"], "version": s["version"],
                          "rules": s["rules"]}),  # records first: does not cut, read whole
    lambda s: json.dumps(s)[:-1] + ', "records": ' + json.dumps(s["records"][::-1]) + "}",
]  # fmt: skip


@st.composite
def valid_records(draw: st.DrawFn) -> Any:
    """Records that pass, mostly: a set of them is cut into parts (one with a problem is not)."""
    rid = draw(st.sampled_from(["M1", "M2", "M3", "M4", "T1"]))
    if rid == "T1":
        return ticket(rid, code=draw(st.sampled_from(["EVT-1", "CODE-1"])))
    creds = draw(st.lists(st.sampled_from([c for c in CREDENTIALS[:4] + CREDENTIALS[5:9]]),
                          max_size=3))  # fmt: skip
    return member(rid, credentials=creds, contracts=[contract("c")])


@budget(ci=120, long=20_000)
@given(
    raws=st.one_of(
        st.lists(valid_records(), min_size=2, max_size=14), st.lists(records(), max_size=14)
    ),
    presented=st.sampled_from(PRESENTED),
    by_member=st.booleans(),
    layout=st.sampled_from(range(len(LAYOUTS))),
    workers=st.sampled_from([2, 3]),
)
def test_a_file_read_in_parts_answers_as_the_whole_file_does(
    raws: list[Any],
    presented: tuple[str, str, str | None],
    by_member: bool,
    layout: int,
    workers: int,
) -> None:
    text = LAYOUTS[layout](the_set(raws))
    want = Wanted(member="M2") if by_member else Wanted(key=credential_key(*presented))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.json"
        path.write_text(text)
        original = set_scan.SPLIT_MIN
        set_scan.SPLIT_MIN = 0  # cut even a small file
        try:
            in_parts = set_scan.scan_file(str(path), want, workers=workers)
        finally:
            set_scan.SPLIT_MIN = original
    try:
        whole = scan_set(json.loads(text), want, workers=1)
    except InvalidSet:
        assert in_parts is None  # a problem: read whole, which says what
        return
    if in_parts is not None:  # None: it did not cut, and is read whole
        assert (in_parts.version, in_parts.count) == (whole.version, whole.count)
        assert list(in_parts.matches.items()) == list(whole.matches.items())


def test_a_big_file_of_members_is_read_in_parts(tmp_path: Path) -> None:
    records = [member(f"M{i}", credentials=[card(f"04{i:06X}")], contracts=[contract("c")])
               for i in range(2000)]  # fmt: skip
    records[1500] = member("M1500", credentials=[card(CARD)], contracts=[contract("c")])
    path = tmp_path / "set.json"
    path.write_text(json.dumps(the_set(records)))
    original = set_scan.SPLIT_MIN
    set_scan.SPLIT_MIN = 0
    try:
        view = set_scan.scan_file(str(path), wanted(), workers=2)
    finally:
        set_scan.SPLIT_MIN = original
    assert view is not None  # cut, not read whole
    found = view.find("nfc", CARD)
    assert found is not None and found.id == "M1500" and view.count == 2000


def test_one_core_or_a_small_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text(json.dumps(the_set([member("M1", credentials=[card(CARD)])])))
    assert set_scan.scan_file(str(path), wanted(), workers=1) is None
    assert set_scan.scan_file(str(path), wanted(), workers=2) is None  # under SPLIT_MIN
