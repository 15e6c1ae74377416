"""The sweep against real S3 with object lock: two-phase deletion, tombstones, crashes between steps, S3 errors."""

from __future__ import annotations

import pytest
from minio.error import S3Error

from nvr.base.times import now_ms
from retention.holds import HoldRequest
from storage.errors import IndexError_
from storage.index import Index
from storage.ledger import ChainHead, tombstone_record, verify_chain
from tests.retention.conftest import Crash, H, metrics_text
from tests.support.rawsql import sql_rows, tampering

pytestmark = pytest.mark.integration


async def test_sweep_keeps_only_held_and_young_footage_and_tombstones_the_rest(env):
    now = now_ms()
    svc = await env.service()
    old = await env.add("a", now - 2 * H, 10, svc=svc)
    await env.add("b", now - 3 * H, 4, svc=svc)
    young = await env.add("a", now - 10_000, 3, svc=svc)
    held = old[3:6]
    change = await svc.holds.place(HoldRequest("case-1", ("a",), held[0].start_ms, held[-1].end_ms, "robbery", None),
                                   ("token:officer", "evidence"))
    assert change.legal_holds.set == 3 and all(env.legal_hold(r) for r in held)
    assert not env.legal_hold(old[2]) and not env.legal_hold(old[6])  # touching the range is not overlapping

    report = await svc.run_now("test")

    kept = {r.id for r in env.rows("a") if r.state == "stored"}
    assert kept == {r.id for r in held + young}
    assert {r.state for r in env.rows("b")} == {"deleted"}
    assert report.deleted["a"].segments == 7 and report.deleted["b"].segments == 4
    assert report.deleted["a"].bytes == sum(r.object_size for r in old if r not in held)
    assert report.deleted["a"].rules == {"max_age": 7} and report.failed == () and report.pending_left == 0
    stones = {t["segment_seq"]: t for t in env.tombstones("a")}
    for r in old:
        if r in held:
            assert r.seq not in stones
        else:
            t = stones[r.seq]
            assert (t["segment_record"], t["object_key"], t["rule"], t["node"]) == (
                r.record_hash, r.object_key, "max_age", "test")
    env.assert_consistent("a", "b")
    # The storage itself refuses to delete held footage, even by version id with full credentials.
    for r in held:
        with pytest.raises(S3Error) as err:
            env.store.client.remove_object(env.store.bucket, r.object_key, version_id=r.version_id)
        assert err.value.code == "AccessDenied"
        assert env.legal_hold(r)
    [sweep] = env.actions("retention.sweep")
    assert sweep.detail["cameras"]["a"] == {"segments": 7, "bytes": report.deleted["a"].bytes,
                                            "rules": {"max_age": 7}}
    assert sweep.detail["cameras"]["b"]["segments"] == 4
    assert env.actions("hold.place")[0].actor == "token:officer"
    # Nothing left to do: a second run deletes nothing and says so.
    again = await svc.run_now("test")
    assert again.deleted_segments == 0 and again.marked == 0
    metrics = metrics_text(svc)
    assert 'nvr_retention_deleted_segments_total{camera="a"} 7' in metrics


async def test_object_lock_governance_keeps_young_objects_and_the_sweep_does_not_try(env):
    now = now_ms()
    svc = await env.service(lock_seconds=3600)  # what ingest used below
    locked = await env.add("a", now - 2 * H, 3, lock_seconds=3600, svc=svc)
    st = env.store.client.stat_object(env.store.bucket, locked[0].object_key, version_id=locked[0].version_id)
    assert st.metadata.get("X-Amz-Object-Lock-Mode") == "GOVERNANCE"
    with pytest.raises(S3Error) as err:
        env.store.client.remove_object(env.store.bucket, locked[0].object_key, version_id=locked[0].version_id)
    assert err.value.code == "AccessDenied"
    pv = await svc.preview()
    assert pv.plan.deletions == () and pv.locked["a"] == (3, sum(r.object_size for r in locked))
    report = await svc.run_now("test")
    assert report.marked == 0 and report.failed == () and report.pending_left == 0
    assert {r.state for r in env.rows("a")} == {"stored"}


@pytest.mark.parametrize("phase", ["marked", "deleted", "tombstoned"])
async def test_crash_between_phases_is_finished_by_the_next_run(env, phase):
    now = now_ms()
    svc = await env.service(batch_size=3)
    await env.add("a", now - 2 * H, 5, svc=svc)
    await env.add("b", now - 2 * H, 4, svc=svc)
    young = await env.add("a", now - 5_000, 2, svc=svc)

    seen: list[str] = []

    def crash(at: str, segment: str | None) -> None:
        seen.append(at)
        # "tombstoned" fires per segment inside its group's transaction: crash at the second, after one tombstone.
        if at == phase and seen.count(at) == (2 if at == "tombstoned" else 1):
            raise Crash(at)

    crashing = await env.restart(svc, fault=crash)
    with pytest.raises(Crash):
        await crashing.run_now("test")
    states = [r.state for r in env.rows("a") + env.rows("b")]
    assert "pending_delete" in states  # the crash left work behind
    if phase == "tombstoned":
        # The first batch's objects are gone from S3, but the group's transaction rolled back as a whole:
        # no tombstone (not even the one appended before the crash), every old row still pending.
        assert not {(r.object_key, r.version_id) for r in env.rows("a")[:3]} & env.versions()
        assert env.tombstones("a") == []
        assert {r.state for r in env.rows("a") if r.id not in {y.id for y in young}} == {"pending_delete"}

    fresh = await env.restart(crashing)
    report = await fresh.run_now("test")
    assert report.resumed >= 1 and report.failed == () and report.pending_left == 0
    assert {r.id for r in env.rows("a") if r.state == "stored"} == {r.id for r in young}
    assert {r.state for r in env.rows("b")} == {"deleted"}
    env.assert_consistent("a", "b")  # exactly one tombstone each, no orphan, no pending row


async def test_tombstone_of_a_still_pending_segment_is_not_written_again(env):
    """An index left by a sweep that committed tombstone and state separately, crashing in between."""
    now = now_ms()
    svc = await env.service()
    rows = await env.add("a", now - 2 * H, 3, svc=svc)
    crashing = await env.crash_after_marking(svc)
    done = rows[1]
    env.store.client.remove_object(env.store.bucket, done.object_key, version_id=done.version_id)
    env.index.append_record(tombstone_record(
        head=env.index.chain_head("a"), segment_seq=done.seq, segment_record_hash=done.record_hash,
        object_key=done.object_key, rule="max_age", deleted_at="2024-01-01T00:00:00Z", node="test"))
    fresh = await env.restart(crashing)
    report = await fresh.run_now("test")
    assert report.resumed == 3 and report.deleted["a"].segments == 3 and report.pending_left == 0
    assert [t["segment_seq"] for t in env.tombstones("a")] == [done.seq, rows[0].seq, rows[2].seq]
    env.assert_consistent("a")


# What steps 4 and 5 rely on: tombstones appended inside one transaction see each other, and roll back together.
def test_chain_head_inside_a_transaction_sees_its_own_appends(tmp_path):
    index = Index(tmp_path / "index.sqlite3")

    def stone(seq: int) -> dict:
        return tombstone_record(head=index.chain_head("a"), segment_seq=seq, segment_record_hash="h",
                                object_key=f"k{seq}", rule="max_age", deleted_at="2024-01-01T00:00:00Z", node="t")

    with pytest.raises(Crash):
        with tampering(index):  # an index method called inside a write joins it
            index.append_record(stone(0))
            assert index.chain_head("a").seq == 0
            raise Crash()
    assert index.chain_head("a") == ChainHead("a")  # rolled back
    with tampering(index):
        hashes = [index.append_record(stone(n)) for n in range(3)]
        assert index.chain_head("a") == ChainHead("a", 2, hashes[-1])
    assert verify_chain("a", index.ledger_records("a")) == [] and len(index.ledger_records("a")) == 3
    with pytest.raises(IndexError_):  # a record that does not extend the head is refused
        index.append_record({**stone(3), "seq": 7})
    index.close()


async def test_s3_error_on_one_object_leaves_it_pending_and_the_rest_proceed(env):
    now = now_ms()
    svc = await env.service()
    rows = await env.add("a", now - 2 * H, 4, svc=svc)
    stuck = rows[1]
    # S3 refuses this one deletion: a legal hold set outside nvr (nvr never clears one it did not set).
    env.store.client.enable_object_legal_hold(env.store.bucket, stuck.object_key, version_id=stuck.version_id)
    report = await svc.run_now("test")
    assert [sid for sid, _ in report.failed] == [stuck.id] and "AccessDenied" in report.failed[0][1]
    assert report.deleted["a"].segments == 3 and report.pending_left == 1
    assert env.index.segment(stuck.id).state == "pending_delete"
    assert env.legal_hold(stuck)  # reconcile did not touch a legal hold it does not own
    attempts, error = sql_rows(env.index, "SELECT attempts, error FROM retention_pending WHERE segment_id = ?",
                                      (stuck.id,))[0]
    assert attempts == 1 and "AccessDenied" in error
    assert "nvr_retention_delete_failures_total 1" in metrics_text(svc).splitlines()

    env.store.client.disable_object_legal_hold(env.store.bucket, stuck.object_key, version_id=stuck.version_id)
    again = await svc.run_now("test")
    assert again.deleted["a"].segments == 1 and again.resumed == 1 and again.pending_left == 0
    env.assert_consistent("a")


async def test_hold_placed_after_marking_puts_the_segment_back(env):
    now = now_ms()
    svc = await env.service()
    rows = await env.add("a", now - 2 * H, 6, svc=svc)
    crashing = await env.crash_after_marking(svc)
    assert {r.state for r in env.rows("a")} == {"pending_delete"}
    fresh = await env.restart(crashing)
    await fresh.holds.place(HoldRequest("late", ("a",), rows[2].start_ms, rows[3].end_ms, "found late", None),
                            ("token:officer", "evidence"))
    report = await fresh.run_now("test")
    assert set(report.reverted) == {rows[2].id, rows[3].id}
    assert {r.id for r in env.rows("a") if r.state == "stored"} == {rows[2].id, rows[3].id}
    assert env.legal_hold(rows[2]) and env.legal_hold(rows[3])
    env.assert_consistent("a")
