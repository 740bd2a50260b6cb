"""PROTOCOL.md, Entitlement sync (snapshots): chunks verified, validated and staged by the
snapshot builder, applied only when all k chunks of one version are in, nothing of an
invalid one applied."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.entitlements import parse_records, parse_rules
from gateway.staged_set import StagedSet, StagedSetProcess
from gateway.store import EntitlementStore
from gateway.sync.envelopes import seal
from gateway.sync.snapshots import (
    ANSWER_DEADLINE_S,
    SnapshotBuilder,
    SnapshotBuilderFailed,
    SnapshotStager,
)
from tests.support.sets import contract, member, rules

SITE, TOPIC = "oslo-sentrum", "acs/v1/oslo-sentrum/gw/door-1/snapshot"
AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
RULES = rules()


def card(i: int) -> dict[str, str]:
    return {"kind": "nfc", "uid": f"04{i:06X}"}


def chunk(
    version: int, i: int, k: int, records: list[dict[str, Any]], key: Ed25519PrivateKey = KEY
) -> bytes:
    """Chunk i of k of snapshot ``version``, signed by ``key`` (the central system's)."""
    body: dict[str, Any] = {"version": version, "chunk": i, "chunks": k, "records": records}
    if i == 0:
        body.update(rules=RULES, checkins_upto={"door-2": 41})
    return seal("snapshot", SITE, body, key, AT, "door-1")


def members(start: int, n: int, tag: str = "v") -> list[dict[str, Any]]:
    return [
        member(f"M{i}", credentials=[card(i)], contracts=[contract(f"{tag}{i}")])
        for i in range(start, start + n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EntitlementStore]:
    s = EntitlementStore.open(tmp_path / "store.sqlite", b"h" * 32)
    r = parse_rules(RULES)
    s.replace(1, r, parse_records([member("M0", credentials=[card(0)])], r), {}, AT)
    yield s
    s.close()


@pytest.fixture(params=[False, True], ids=["one process", "writer process"])
def stager(request: pytest.FixtureRequest) -> Iterator[SnapshotStager]:
    """A stager writing its staged set itself (one core), or through a writer process."""
    s = SnapshotStager(
        public_key=KEY.public_key(), site=SITE, topic=TOPIC, writer_process=request.param
    )
    yield s
    s.close()


def take(stager: SnapshotStager, store: EntitlementStore, payload: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {"have": store.version, "want": False, "at": AT}
    args.update(kw)
    return stager.take(payload, staging=store.staging(), **args)


def test_chunks_in_any_order_are_staged_then_the_complete_set_is_adopted(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    answers = [
        take(stager, store, chunk(2, 2, 3, members(20, 5))),
        take(stager, store, chunk(2, 0, 3, members(0, 10))),
    ]
    assert [a["status"] for a in answers] == ["staged", "staged"]
    assert store.version == 1  # nothing applied while chunks are missing
    done = take(stager, store, chunk(2, 1, 3, members(10, 10)))
    assert done["status"] == "complete" and done["version"] == 2 and done["count"] == 25
    assert done["checkins_upto"] == {"door-2": 41} and done["notes"] == []
    store.adopt(done["path"])
    assert store.version == 2 and store.record_count == 25
    assert store.find("nfc", f"04{23:06X}").id == "M23"  # type: ignore[union-attr]
    assert store.member("M0").contracts[0].id == "v0"  # type: ignore[union-attr]


def test_a_chunk_that_comes_twice_is_staged_once(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    first = take(stager, store, chunk(2, 1, 2, members(10, 3)))
    again = take(stager, store, chunk(2, 1, 2, members(10, 3)))
    assert (first["status"], again["status"]) == ("staged", "duplicate")
    done = take(stager, store, chunk(2, 0, 2, members(0, 3)))
    assert done["status"] == "complete" and done["count"] == 6


def test_a_chunk_with_a_bad_signature_is_refused_and_stages_nothing(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    forged = chunk(2, 0, 1, members(0, 3), key=Ed25519PrivateKey.generate())
    assert take(stager, store, forged) == {"status": "bad", "reason": "bad signature"}
    assert not Path(store.staging().path).exists()


def test_another_envelope_type_on_the_snapshot_topic_is_refused(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    delta = seal("delta", SITE, {"version": 2, "base": 1, "upsert": []}, KEY, AT, "door-1")
    answer = take(stager, store, delta)
    assert answer["status"] == "bad" and "does not belong" in answer["reason"]


def test_an_invalid_record_refuses_the_whole_version_and_drops_what_was_staged(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    assert take(stager, store, chunk(2, 0, 3, members(0, 3)))["status"] == "staged"
    staged = Path(store.staging().path)
    assert staged.exists()
    broken = [*members(3, 2), {"member": "M9", "contracts": [{"id": "X", "type": "lifetime"}]}]
    answer = take(stager, store, chunk(2, 1, 3, broken))
    assert answer["status"] == "bad" and answer["reason"].startswith("invalid set: ")
    assert "chunk1.records[2](M9)" in answer["reason"]
    assert not staged.exists()
    # the rest of that version changes nothing either
    assert take(stager, store, chunk(2, 2, 3, members(5, 2)))["status"] == "ignored"
    assert not staged.exists() and store.version == 1


def test_invalid_records_among_valid_ones_are_named_as_each_alone_and_nothing_is_adopted(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    # each bad record named by its place and id, in order (the reason holds the first three)
    assert take(stager, store, chunk(2, 0, 2, members(0, 3)))["status"] == "staged"
    staged = Path(store.staging().path)
    ticket = {"ticket": "T1", "code": " ", "valid_from": "2026-11-25T08:00:00+01:00",
              "valid_to": "2026-11-25T22:00:00+01:00"}  # fmt: skip
    bad = member(
        "M9",
        credentials=[{"kind": "nfc", "uid": "zz"}],
        contracts=[{"id": "C", "type": "clipcard"}],
    )
    broken = [*members(3, 2), ticket, "junk", bad]
    answer = take(stager, store, chunk(2, 1, 2, broken))
    assert answer == {
        "status": "bad",
        "reason": "invalid set: chunk1.records[2](T1): ticket code must not be blank; "
        "chunk1.records[3]: must be an object; "
        "chunk1.records[4](M9).credentials.0.nfc: uid must be hex of 4, 7 or 10 bytes",
    }
    assert not staged.exists() and store.version == 1
    assert take(stager, store, chunk(2, 1, 2, members(3, 2)))["status"] == "ignored"


def test_a_schedule_named_before_the_rules_arrived_is_checked_at_the_end(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    odd = [member("M5", contracts=[contract("C5", schedule="no-such-schedule")])]
    assert take(stager, store, chunk(2, 1, 2, odd))["status"] == "staged"
    answer = take(stager, store, chunk(2, 0, 2, members(0, 2)))
    assert answer["status"] == "bad"
    assert (
        "record(M5).contracts(C5).schedule: names schedule 'no-such-schedule'" in (answer["reason"])
    )
    assert not Path(store.staging().path).exists()


def test_an_older_snapshot_is_ignored_and_the_same_version_only_when_asked_for(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    assert take(stager, store, chunk(0, 0, 1, members(0, 1)))["status"] == "ignored"
    assert take(stager, store, chunk(1, 0, 1, members(0, 1)))["status"] == "ignored"
    assert take(stager, store, chunk(1, 0, 1, members(0, 1)), want=True)["status"] == "complete"


def test_a_newer_version_arriving_mid_way_starts_over(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    assert take(stager, store, chunk(2, 0, 2, members(0, 2)))["status"] == "staged"
    assert take(stager, store, chunk(3, 0, 2, members(0, 2, "w")))["status"] == "staged"
    assert take(stager, store, chunk(2, 1, 2, members(2, 2)))["status"] == "ignored"
    done = take(stager, store, chunk(3, 1, 2, members(2, 2, "w")))
    assert done["status"] == "complete" and done["version"] == 3
    store.adopt(done["path"])
    assert store.member("M3").contracts[0].id == "w3"  # type: ignore[union-attr]


def test_a_credential_given_twice_across_chunks_stays_with_the_later_record(
    stager: SnapshotStager, store: EntitlementStore
) -> None:
    later = [member("M7", credentials=[card(1)])]  # M1 of chunk 0 has this card too
    take(stager, store, chunk(2, 1, 2, later))
    done = take(stager, store, chunk(2, 0, 2, members(0, 3)))
    assert done["notes"] == ["a card or code of M1 was also given to M7: M7 keeps it"]
    assert done["notes_count"] == 1
    store.adopt(done["path"])
    assert store.find("nfc", f"04{1:06X}").id == "M7"  # type: ignore[union-attr]


@pytest.fixture
def writing(store: EntitlementStore) -> Iterator[tuple[SnapshotStager, StagedSetProcess]]:
    """A stager with a writer process, chunk 0 of 3 of version 2 staged."""
    stager = SnapshotStager(
        public_key=KEY.public_key(), site=SITE, topic=TOPIC, writer_process=True
    )
    assert take(stager, store, chunk(2, 0, 3, members(0, 3)))["status"] == "staged"
    staged = stager._part.staged  # type: ignore[union-attr]
    assert isinstance(staged, StagedSetProcess) and Path(staged.path).exists()
    yield stager, staged
    stager.close()


def test_a_writer_process_that_dies_fails_the_snapshot_and_leaves_the_store_as_it_was(
    store: EntitlementStore, writing: tuple[SnapshotStager, StagedSetProcess]
) -> None:
    stager, staged = writing
    os.kill(staged._proc.pid, signal.SIGKILL)  # type: ignore[arg-type]  # as the OOM killer would
    staged._proc.join()
    answer = take(stager, store, chunk(2, 1, 3, members(3, 3)))
    assert answer["status"] == "failed" and "could not be written" in answer["reason"]
    assert not Path(store.staging().path).exists()
    assert store.version == 1 and store.find("nfc", f"04{0:06X}").id == "M0"  # type: ignore[union-attr]
    # the snapshot, sent again, is staged afresh
    for i in range(3):
        answer = take(stager, store, chunk(2, i, 3, members(3 * i, 3)))
    assert answer["status"] == "complete" and answer["count"] == 9


def test_a_writer_process_whose_builder_is_gone_deletes_its_file_and_ends(
    writing: tuple[SnapshotStager, StagedSetProcess],
) -> None:
    _, staged = writing
    staged._conn.close()  # what the builder's death does to the pipe
    staged._proc.join(30)
    assert staged._proc.exitcode == 0 and not Path(staged.path).exists()


def test_a_file_deleted_late_by_a_gone_writer_is_never_a_newer_snapshots_file(
    store: EntitlementStore,
) -> None:
    old = StagedSet(store.staging(), chunk_size=10)
    new = StagedSet(store.staging(), chunk_size=10)  # the same path, started afresh
    old.discard()
    assert Path(new.path).exists()  # not the old set's file to delete any more
    new.discard()
    assert not Path(new.path).exists()


# --- the builder process ---------------------------------------------------------------------


def oom_score_adj(pid: int) -> int:
    """How much sooner than others the kernel kills process ``pid`` when memory runs out."""
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


async def test_the_builder_process_stages_a_snapshot_and_reports_its_memory(
    store: EntitlementStore,
) -> None:
    builder = SnapshotBuilder(public_key=KEY.public_key(), site=SITE, topic=TOPIC)
    try:
        staging = store.staging()
        first = await builder.take(
            chunk(2, 0, 2, members(0, 500)), have=1, want=False, at=AT, staging=staging
        )
        pid = builder._proc.pid  # type: ignore[union-attr]
        # short of memory, the kernel kills the builder before the gateway
        assert oom_score_adj(pid) == 500
        # and the doors get a core before it when both want one
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        done = await builder.take(
            chunk(2, 1, 2, members(500, 500)), have=1, want=False, at=AT, staging=staging
        )
    finally:
        await builder.close()
    assert first["status"] == "staged" and done["status"] == "complete"
    assert done["count"] == 1000 and done["rss_kib"] > 0 and done["cpu_s"] > 0
    store.adopt(done["path"])
    assert store.version == 2 and store.find("nfc", f"04{999:06X}").id == "M999"  # type: ignore[union-attr]


async def test_a_builder_that_dies_is_a_clear_error_and_leaves_the_store_as_it_was(
    store: EntitlementStore,
) -> None:
    builder = SnapshotBuilder(public_key=KEY.public_key(), site=SITE, topic=TOPIC)
    staging = store.staging()
    await builder.take(chunk(2, 0, 2, members(0, 5)), have=1, want=False, at=AT, staging=staging)
    assert builder.running
    os.kill(builder._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]  # as the OOM killer would
    await asyncio.sleep(0.1)
    with pytest.raises(SnapshotBuilderFailed, match="snapshot builder process ended"):
        await builder.take(
            chunk(2, 1, 2, members(5, 5)), have=1, want=False, at=AT, staging=staging
        )
    assert not builder.running and store.version == 1
    assert store.find("nfc", f"04{0:06X}").id == "M0"  # type: ignore[union-attr]
    # a new builder starts for the next chunk, and the stale staged file is started afresh
    try:
        done = await builder.take(
            chunk(3, 0, 1, members(0, 3)), have=1, want=False, at=AT, staging=staging
        )
    finally:
        await builder.close()
    assert done["status"] == "complete"


async def test_a_hung_builder_is_stopped_at_its_deadline_and_sync_can_go_on(
    store: EntitlementStore,
) -> None:
    builder = SnapshotBuilder(public_key=KEY.public_key(), site=SITE, topic=TOPIC)
    staging = store.staging()
    await builder.take(chunk(2, 0, 2, members(0, 5)), have=1, want=False, at=AT, staging=staging)
    builder.answer_deadline_s = 1.0  # started (on a busy machine that may take longer)
    pid = builder.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive but silent, as with a stuck disk
    try:
        with pytest.raises(SnapshotBuilderFailed, match="did not answer within 1 s"):
            await builder.take(
                chunk(2, 1, 2, members(5, 5)), have=1, want=False, at=AT, staging=staging
            )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert not builder.running and store.version == 1
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists)  # killed and reaped
    builder.answer_deadline_s = ANSWER_DEADLINE_S
    try:  # the next snapshot gets a fresh builder
        done = await builder.take(
            chunk(3, 0, 1, members(0, 3)), have=1, want=False, at=AT, staging=staging
        )
    finally:
        await builder.close()
    assert done["status"] == "complete"
