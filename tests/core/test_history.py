"""Local state survives a restart: passages, charges, ticket uses and occupancy are rebuilt."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.history import History

OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime.fromisoformat("2026-11-25T10:00:00+01:00")


def checkin(
    seq,
    at,
    *,
    gw="door-1",
    member="M1",
    zone="gym",
    direction="in",
    contract="K",
    charged=0,
    ticket=None,
    decision="granted",
    passed=True,
):
    return {
        "gw": gw,
        "seq": seq,
        "at": at,
        "member": member,
        "zone": zone,
        "direction": direction,
        "contract": contract,
        "charged": charged,
        "ticket": ticket,
        "decision": decision,
        "passed": passed,
    }


def test_passages_charges_and_ticket_uses_survive_a_restart(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-25T09:00:00+01:00", charged=1))
    h.add(
        checkin(
            2, "2026-11-25T09:10:00+01:00", member=None, ticket="T-1", zone="hall", contract=None
        )
    )
    h.close()
    state = History.open(tmp_path / "h.sqlite").rebuild("door-1", NOW, OSLO, {})
    assert [p.zone for p in state.passages["M1"]] == ["gym"]
    assert state.charged("M1", "K") == 1
    assert state.ticket_uses("T-1") == 1
    assert state.own_inside == {"gym": 1, "hall": 1}


def test_denied_or_not_passed_checkins_are_not_kept(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-25T09:00:00+01:00", decision="denied"))
    h.add(checkin(2, "2026-11-25T09:01:00+01:00", passed=False))
    state = h.rebuild("door-1", NOW, OSLO, {})
    assert state.passages == {} and state.own_inside == {}


def test_charges_the_central_has_counted_are_dropped(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(5, "2026-11-25T09:00:00+01:00", charged=1))
    h.add(checkin(6, "2026-11-25T09:30:00+01:00", charged=2, zone="spa"))
    assert h.rebuild("door-1", NOW, OSLO, {"door-1": 5}).charged("M1", "K") == 2


def test_occupancy_counts_only_todays_passages(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-24T20:00:00+01:00"))
    h.add(checkin(2, "2026-11-25T09:00:00+01:00", member="M2"))
    h.add(checkin(3, "2026-11-25T09:05:00+01:00", gw="door-2", member="M3"))
    state = h.rebuild("door-1", NOW, OSLO, {})
    assert state.own_inside == {"gym": 1}
    assert state.peer_count("door-2", "gym") == 1 and state.inside("gym") == 2
    assert len(state.passages["M1"]) == 1  # yesterday still counts for visits and re-entry


def test_a_deleted_member_is_purged(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-25T09:00:00+01:00"))
    assert h.purge_member("M1").result() == 1
    assert h.rebuild("door-1", NOW, OSLO, {}).passages == {}


def test_old_passages_are_pruned(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-10-01T09:00:00+01:00"))
    h.add(checkin(2, "2026-11-20T09:00:00+01:00"))
    assert h.prune(NOW).result() == 1


def test_the_same_checkin_twice_is_kept_once(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-25T09:00:00+01:00", charged=1))
    h.add(checkin(1, "2026-11-25T09:00:00+01:00", charged=1))
    assert h.rebuild("door-1", NOW, OSLO, {}).charged("M1", "K") == 1


def test_writes_leave_the_caller_at_once_and_keep_their_order(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    try:
        pending = h._writer.submit(__import__("time").sleep, 0.3)  # a slow fsync, say
        added = h.add(checkin(1, "2026-11-25T09:00:00+01:00"))
        assert not added.done()  # the caller (the event loop) did not wait for the disk
        assert h.purge_member("M1").result() == 1  # queued after the add: it sees the row
        assert pending.done() and added.result() is True
    finally:
        h.close()


def test_check_ins_added_while_the_writer_is_busy_are_written_in_one_transaction(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    statements: list[str] = []
    try:
        h._writer.call(lambda: h._conn.set_trace_callback(statements.append))
        busy = threading.Event()
        h._writer.submit(busy.wait, 5)  # a slow fsync, say: a burst of peers' check-ins waits
        kept = [h.add(checkin(seq, "2026-11-25T09:00:00+01:00", gw="door-2"))
                for seq in range(1, 51)]  # fmt: skip
        kept.append(h.add(checkin(1, "2026-11-25T09:00:00+01:00", gw="door-2")))  # again
        busy.set()
        assert [k.result(5) for k in kept] == [True] * 50 + [False]
        assert statements.count("COMMIT") == 1  # one fsync for the burst, not 50
        h._writer.call(lambda: h._conn.set_trace_callback(None))
    finally:
        h.close()
    assert len(History.open(tmp_path / "h.sqlite").rebuild("door-1", NOW, OSLO, {})
               .peer_steps["door-2"]) == 50  # fmt: skip


def test_check_ins_a_few_milliseconds_apart_share_one_transaction(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    statements: list[str] = []
    try:
        h._writer.call(lambda: h._conn.set_trace_callback(statements.append))
        kept = []
        for seq in range(1, 6):  # a peer's messages, one at a time, the writer idle between
            kept.append(h.add(checkin(seq, "2026-11-25T09:00:00+01:00", gw="door-2")))
            time.sleep(0.002)
        assert [k.result(5) for k in kept] == [True] * 5
        assert statements.count("COMMIT") == 1  # not an fsync each beside the journal's
        h._writer.call(lambda: h._conn.set_trace_callback(None))
    finally:
        h.close()


def test_a_full_batch_is_written_without_waiting_for_the_window(tmp_path):
    from gateway import history

    h = History.open(tmp_path / "h.sqlite")
    h.group_window = 3600.0  # were the window waited out, the results would not come
    try:
        kept = [h.add(checkin(seq, "2026-11-25T09:00:00+01:00", gw="door-2"))
                for seq in range(1, history.GROUP_MAX + 1)]  # fmt: skip
        assert [k.result(10) for k in kept] == [True] * history.GROUP_MAX
    finally:
        h.group_window = 0.0
        h.close()


def test_an_add_after_a_purge_is_written_after_it(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    try:
        busy = threading.Event()
        h._writer.submit(busy.wait, 5)
        h.add(checkin(1, "2026-11-25T09:00:00+01:00"))
        purged = h.purge_member("M1")
        later = h.add(checkin(2, "2026-11-25T09:05:00+01:00"))  # the member came back
        busy.set()
        assert purged.result(5) == 1 and later.result(5) is True
        assert [p.at.minute for p in h.rebuild("door-1", NOW, OSLO, {}).passages["M1"]] == [5]
    finally:
        h.close()


def test_an_unreadable_stored_row_is_skipped_at_start(tmp_path):
    h = History.open(tmp_path / "h.sqlite")
    h.add(checkin(1, "2026-11-25T09:00:00+01:00"))
    h._writer.call(
        h._conn.execute,
        "INSERT INTO checkins (gw, seq, at_unix, member, body) VALUES (?,?,?,?,?)",
        ("door-2", 7, NOW.timestamp() - 60, "M2",
         '{"gw": "door-2", "seq": 7, "at": "9999-12-31T23:59:59-23:59", "zone": "gym", '
         '"direction": "in", "member": "M2", "decision": "granted", "passed": true}'),
    )  # fmt: skip
    h._writer.call(h._conn.execute, "INSERT INTO checkins VALUES ('door-2', 8, ?, 'M3', 'x', NULL)",
                   (NOW.timestamp() - 30,))  # fmt: skip
    state = h.rebuild("door-1", NOW, OSLO, {})
    h.close()
    assert list(state.passages) == ["M1"]
