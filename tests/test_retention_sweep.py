"""Retention against real S3 with object lock: sweep, holds and legal holds, crashes between phases, S3 errors.

Segments are made fast without ffmpeg: random payloads spooled and ingested
with back-dated times, like tests/test_ingest.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from minio.error import S3Error

from nvr.api.metrics import Exposition
from nvr.base.times import now_ms
from nvr.config.retention import RetentionRuleError, Rule, RuleSet, parse_rules, with_floor
from nvr.config.settings import load_config
from nvr.ingest.pipeline import Ingestor
from retention.holds import HoldRequest
from retention.service import RetentionBusy, RetentionService, RetentionSettings
from retention.sweep import emergency_rules
from storage.audit import AuditLog
from storage.chainlock import ChainLocks
from storage.errors import IndexError_
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.ledger import ChainHead, tombstone_record, verify_chain
from storage.objectstore import ObjectStore
from storage.spool import ClosedSegment, Spool
from tests.support import tomlw

pytestmark = pytest.mark.integration

MIN = 60_000
H = 60 * MIN
SEG = 2_000
ONE_MINUTE = RuleSet(default=Rule(max_age=60.0, min_age=60.0))


class Crash(Exception):
    """Stands for the process dying at this point."""


@dataclass
class Env:
    tmp: Path
    store: ObjectStore
    index: Index
    keyring: Keyring
    spool: Spool
    audit: AuditLog
    services: list[RetentionService] = field(default_factory=list)
    ingestors: dict[float, Ingestor] = field(default_factory=dict)

    def ingestor(self, lock_seconds: float) -> Ingestor:
        if lock_seconds not in self.ingestors:
            self.ingestors[lock_seconds] = Ingestor(store=self.store, index=self.index, keyring=self.keyring,
                                                    spool=self.spool, node_id="test", lock_seconds=lock_seconds)
        return self.ingestors[lock_seconds]

    async def add(self, camera: str, start_ms: int, count: int, *, lock_seconds: float = 0.0,
                  svc: RetentionService | None = None) -> list[SegmentRow]:
        """``count`` contiguous 2 s segments from ``start_ms``, stored and indexed (the ingest hook called)."""
        run = f"r{start_ms:013d}"
        rows = []
        for n in range(count):
            seg = ClosedSegment(camera=camera, file=f"{run}-{n:06d}.mp4", run=run, n=n,
                                start_ms=start_ms + n * SEG, end_ms=start_ms + (n + 1) * SEG, partial=False,
                                closed_ms=start_ms + (n + 1) * SEG)
            self.spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
            self.spool.path(seg).write_bytes(os.urandom(3000))
            self.spool.write_ticket(seg)
            row = await self.ingestor(lock_seconds).ingest(seg)
            if svc is not None:
                await svc.on_segment_stored(row)
            rows.append(row)
        return rows

    async def service(self, rules: RuleSet = ONE_MINUTE, *, floor: float = 60.0, lock_seconds: float = 0.0,
                      fault=None, **settings) -> RetentionService:
        s = RetentionSettings(rules=rules, min_age_floor=floor, lock_seconds=lock_seconds,
                              sweep_interval=settings.pop("sweep_interval", 3600.0),
                              first_run_delay=settings.pop("first_run_delay", 3600.0), **settings)
        return await self._open(s, fault)

    async def _open(self, settings: RetentionSettings, fault) -> RetentionService:
        svc = RetentionService(index=self.index, store=self.store, node_id="test", audit=self.audit,
                               settings=settings, chain_locks=ChainLocks(),
                               lock_file=self.tmp / "data" / "retention.lock", fault=fault)
        await svc.open()
        self.services.append(svc)
        return svc

    async def restart(self, svc: RetentionService, fault=None) -> RetentionService:
        """The same service after a crash: a new one on the same index (the lock of the dead one released)."""
        await svc.stop()
        return await self._open(svc.settings, fault)

    async def crash_after_marking(self, svc: RetentionService) -> RetentionService:
        """Restart ``svc`` with a fault at the end of the sweep's phase 2 and run it into the crash."""

        def crash(at: str, segment: str | None) -> None:
            if at == "marked":
                raise Crash(at)

        crashing = await self.restart(svc, fault=crash)
        with pytest.raises(Crash):
            await crashing.run_now("test")
        return crashing

    def rows(self, camera: str) -> list[SegmentRow]:
        return self.index.segments(camera)

    def versions(self) -> set[tuple[str, str]]:
        return {(o.object_name, o.version_id) for o in self.store.client.list_objects(
            self.store.bucket, recursive=True, include_version=True)}

    def tombstones(self, camera: str) -> list[dict]:
        return [r for r in self.index.ledger_records(camera) if r["type"] == "tombstone"]

    def assert_consistent(self, *cameras: str) -> None:
        """No pending row, one tombstone per deleted segment, bucket == stored rows, chains intact."""
        stored, deleted = set(), []
        for cam in cameras:
            for r in self.rows(cam):
                assert r.state in ("stored", "deleted"), r
                if r.state == "stored":
                    stored.add((r.object_key, r.version_id))
                else:
                    deleted.append(r)
            assert verify_chain(cam, self.index.ledger_records(cam)) == []
            stones = [t["segment_seq"] for t in self.tombstones(cam)]
            assert sorted(stones) == sorted(r.seq for r in deleted if r.camera == cam)
        assert self.versions() == stored  # nothing orphaned, nothing missing
        assert self.index.query("SELECT COUNT(*) FROM retention_pending")[0][0] == 0


@pytest.fixture
async def env(tmp_path, s3, bucket):
    store = ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket,
                        object_lock=True)
    store.ensure_bucket()
    index = Index(tmp_path / "data" / "index.sqlite3")
    e = Env(tmp_path, store, index, Keyring.open(tmp_path / "data" / "keyring"), Spool(tmp_path / "data" / "spool"),
            AuditLog(index))
    yield e
    for svc in e.services:
        await svc.stop()
    index.close()
    store.close()



def metrics_text(svc) -> str:
    exp = Exposition()
    svc.write_metrics(exp)
    return exp.text()

def legal_hold(env: Env, row: SegmentRow) -> bool:
    st = env.store.stat(row.object_key, row.version_id)
    assert st is not None, f"{row.id} is gone from the bucket"
    return st.legal_hold


def actions(env: Env, action: str):
    return env.index.audit_entries(action=action)


# ---------------------------------------------------------------------- the sweep


async def test_sweep_keeps_only_held_and_young_footage_and_tombstones_the_rest(env):
    now = now_ms()
    svc = await env.service()
    old = await env.add("a", now - 2 * H, 10, svc=svc)
    await env.add("b", now - 3 * H, 4, svc=svc)
    young = await env.add("a", now - 10_000, 3, svc=svc)
    held = old[3:6]
    change = await svc.holds.place(HoldRequest("case-1", ("a",), held[0].start_ms, held[-1].end_ms, "robbery", None),
                                   ("token:officer", "evidence"))
    assert change.legal_holds.set == 3 and all(legal_hold(env, r) for r in held)
    assert not legal_hold(env, old[2]) and not legal_hold(env, old[6])  # touching the range is not overlapping

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
        assert legal_hold(env, r)
    [sweep] = actions(env, "retention.sweep")
    assert sweep.detail["cameras"]["a"] == {"segments": 7, "bytes": report.deleted["a"].bytes,
                                            "rules": {"max_age": 7}}
    assert sweep.detail["cameras"]["b"]["segments"] == 4
    assert actions(env, "hold.place")[0].actor == "token:officer"
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


def test_chain_head_inside_a_transaction_sees_its_own_appends(tmp_path):
    index = Index(tmp_path / "index.sqlite3")

    def stone(seq: int) -> dict:
        return tombstone_record(head=index.chain_head("a"), segment_seq=seq, segment_record_hash="h",
                                object_key=f"k{seq}", rule="max_age", deleted_at="2024-01-01T00:00:00Z", node="t")

    with pytest.raises(Crash):
        with index.transaction() as db:
            index.append_record_in(db, stone(0))
            assert index.chain_head("a").seq == 0
            raise Crash()
    assert index.chain_head("a") == ChainHead("a")  # rolled back
    with index.transaction() as db:
        hashes = [index.append_record_in(db, stone(n)) for n in range(3)]
        assert index.chain_head("a") == ChainHead("a", 2, hashes[-1])
    assert verify_chain("a", index.ledger_records("a")) == [] and len(index.ledger_records("a")) == 3
    with pytest.raises(IndexError_):  # outside a transaction each record would commit on its own
        index.append_record_in(sqlite3.connect(":memory:"), stone(3))
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
    assert legal_hold(env, stuck)  # reconcile did not touch a legal hold it does not own
    attempts, error = env.index.query("SELECT attempts, error FROM retention_pending WHERE segment_id = ?",
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
    assert legal_hold(env, rows[2]) and legal_hold(env, rows[3])
    env.assert_consistent("a")


# ---------------------------------------------------------------------- holds


async def test_open_ended_hold_covers_later_segments_and_release_clears_only_unneeded_legal_holds(env):
    now = now_ms()
    svc = await env.service()
    first = await env.add("a", now - 20_000, 2, svc=svc)
    officer = ("token:officer", "evidence")
    h1 = (await svc.holds.place(HoldRequest("c1", ("a",), now - 30_000, None, "ongoing", None), officer)).hold
    h2 = (await svc.holds.place(HoldRequest("c2", ("a", "b"), first[1].start_ms, first[1].end_ms, "one", None),
                                officer)).hold
    assert all(legal_hold(env, r) for r in first)
    later = await env.add("a", now - 5_000, 2, svc=svc)  # recorded after the hold was placed
    assert all(legal_hold(env, r) for r in later)
    elsewhere = await env.add("b", now - 5_000, 1, svc=svc)  # camera b: h2's range only, so not held
    assert not legal_hold(env, elsewhere[0])

    change = await svc.holds.release(h1.id, "case closed", officer)
    assert change.legal_holds.cleared == 3  # first[0] and both later ones; first[1] is still under h2
    assert legal_hold(env, first[1]) and not legal_hold(env, first[0]) and not any(legal_hold(env, r) for r in later)
    await svc.holds.release(h2.id, "case closed", officer)
    assert not legal_hold(env, first[1])
    released = [e for e in actions(env, "hold.release")]
    assert [(e.target, e.detail["reason"], e.actor) for e in released] == [
        (h1.id, "case closed", "token:officer"), (h2.id, "case closed", "token:officer")]
    assert env.index.query("SELECT COUNT(*) FROM retention_legal_holds")[0][0] == 0


async def test_expired_hold_stops_protecting_and_its_expiry_is_audited(env):
    now = now_ms()
    svc = await env.service()
    rows = await env.add("a", now - 2 * H, 3, svc=svc)
    hold = await asyncio.to_thread(svc.rstore.add_hold, case_id="c", cameras=["a"], start_ms=rows[0].start_ms,
                                   end_ms=None, reason="r", expires_ms=now - 1, actor="x", now_ms=now - 10)
    report = await svc.run_now("test")
    assert report.deleted["a"].segments == 3
    assert [e.target for e in actions(env, "hold.expire")] == [hold.id]
    await svc.run_now("test")
    assert len(actions(env, "hold.expire")) == 1  # once


# ---------------------------------------------------------------------- storage full, scheduler, rules


async def test_storage_full_deletes_oldest_across_cameras_then_alarms_when_nothing_is_left(env):
    now = now_ms()
    floor = 20_000
    svc = await env.service(RuleSet(default=Rule(min_age=60.0)), min_free_bytes=floor, low_disk_cooldown=0.0)
    a = await env.add("a", now - 3 * H, 3, svc=svc)
    b = await env.add("b", now - 2 * H, 3, svc=svc)
    young = await env.add("a", now - 5_000, 2, svc=svc)
    await svc.holds.place(HoldRequest("c", ("b",), b[1].start_ms, None, "r", None), ("token:o", "evidence"))

    need = floor + floor // 4 - (floor - 1000)  # 6000 bytes: two of these ~3 KB objects
    task = await svc.on_spool_check(floor - 1000)
    report = await task
    assert report.trigger == "low_disk" and report.free_needed == need
    gone = [r.id for r in env.rows("a") + env.rows("b") if r.state == "deleted"]
    assert gone == [a[0].id, a[1].id]  # the oldest first, across cameras, just enough
    assert report.deleted_bytes >= need and svc.storage_full is None

    # Still low (the disk has not caught up): this episode already freed what was missing, nothing more goes.
    report = await (await svc.on_spool_check(floor - 1000))
    assert report.deleted_segments == 0 and svc.storage_full is None
    # The disk got fuller: only what is neither held nor young can go, then the server says it is full.
    report = await (await svc.on_spool_check(1000))
    assert {r.id for r in env.rows("a") + env.rows("b") if r.state == "stored"} == {
        b[1].id, b[2].id, *(r.id for r in young)}
    assert svc.storage_full and "held or younger than min_age" in svc.storage_full
    assert svc.alarm == svc.storage_full
    assert "nvr_retention_storage_full 1" in metrics_text(svc).splitlines()
    assert len(actions(env, "retention.storage_full")) == 1
    assert await svc.on_spool_check(floor) is None  # back above the floor
    assert svc.storage_full is None and len(actions(env, "retention.storage_full_cleared")) == 1
    env.assert_consistent("a", "b")


async def test_scheduler_runs_the_sweep_and_stops_cleanly(env):
    now = now_ms()
    svc = await env.service(first_run_delay=0.1, sweep_interval=3600.0)
    await env.add("a", now - 2 * H, 2, svc=svc)
    await svc.start()
    await svc.pulse.wait_until(lambda: svc.last_report is not None, timeout=30)
    assert svc.last_report.trigger == "schedule" and svc.last_report.deleted_segments == 2
    assert svc.status()["next_run"] is not None and svc.runs["schedule"] == 1
    await svc.stop()
    assert svc.status()["next_run"] is None


async def test_rules_persist_latest_change_wins_and_every_change_is_audited(env):
    cfg_a = RuleSet(default=Rule(max_age=30 * 86400.0))
    svc = await env.service(cfg_a)
    assert svc.stored.source == "config" and svc.rules.default.max_age == 30 * 86400
    assert svc.rules.default.min_age == 60.0  # the floor fills the default's min_age
    b = svc.parse_rules({"default": {"max_age": "7d"}, "cameras": {"gate": {"max_bytes": "1GiB"}}})
    await svc.set_rules(b, ("token:admin", "admin"))
    await svc.set_camera_rule("lobby", {"max_age": "2d"}, ("token:admin", "admin"))
    await svc.delete_camera_rule("gate", ("token:admin", "admin"))
    with pytest.raises(KeyError):
        await svc.delete_camera_rule("gate", ("token:admin", "admin"))

    same = await env.restart(svc)  # config file unchanged: the API's rules stay
    assert same.stored.source == "api" and same.rules.default.max_age == 7 * 86400
    assert set(same.rules.cameras) == {"lobby"}
    await same.stop()
    changed = await env.service(RuleSet(default=Rule(max_age=90 * 86400.0)))  # config edited: it wins now
    assert changed.stored.source == "config" and changed.rules.default.max_age == 90 * 86400

    updates = actions(env, "retention.rules.update")
    assert [e.actor for e in updates] == ["system", "token:admin", "system"]
    assert updates[1].detail["old"]["default"]["max_age"] == "30d" and updates[1].detail["new"]["default"] == {
        "max_age": "1w", "min_age": "1m"}
    cams = actions(env, "retention.rules.camera")
    assert [(e.target, e.detail["old"], e.detail["new"]) for e in cams] == [
        ("lobby", None, {"max_age": "2d"}), ("gate", {"max_bytes": "1GiB"}, None)]

    await changed.stop()
    # The API lowered min_age; then the config's floor was raised past it, the file's rules unchanged:
    # the stored rules are no longer allowed, the config file's replace them, loudly.
    explicit = RuleSet(default=Rule(max_age=90 * 86400.0, min_age=3 * 3600.0))
    first = await env.service(explicit)
    await first.set_rules(first.parse_rules({"default": {"max_age": "30d", "min_age": "1m"}}), ("token:a", "admin"))
    await first.stop()
    raised = await env.service(explicit, floor=2 * 3600.0)
    assert raised.rules == explicit and raised.stored.source == "config"
    [reset] = actions(env, "retention.rules.reset")
    assert "cameras" not in reset.detail["error"] and "default.min_age" in reset.detail["error"]
    assert reset.detail["old"]["default"]["min_age"] == "1m"


def test_rule_floor_and_emergency_quota_are_pure_and_strict():
    with pytest.raises(RetentionRuleError) as err:
        parse_rules({"cameras": {"gate": {"min_age": "30m"}}}, 3600.0)
    assert err.value.field == "cameras.gate.min_age" and "below retention.min_age (1h)" in err.value.message
    assert parse_rules({"default": {"max_age": "1m"}}, 60.0).default == Rule(max_age=60.0, min_age=60.0)
    with pytest.raises(RetentionRuleError):
        with_floor(RuleSet(default=Rule(max_age=60.0)), 3600.0)  # max_age below the floor-filled min_age
    base = RuleSet(default=Rule(min_age=60.0))
    assert emergency_rules(base, 10_000, 0) is base
    e = emergency_rules(base, 10_000, 3_000)
    assert e.quota_bytes == 9_999 and e.high_watermark == 1.0 and abs(e.low_watermark * 9_999 - 7_000) < 1e-6
    quota = replace(base, quota_bytes=5_000)  # the configured quota already asks for more
    assert emergency_rules(quota, 10_000, 1_000).low_watermark * 9_999 == pytest.approx(0.8 * 5_000)


# ---------------------------------------------------------------------- CLI


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvr.cli", "retention", *args, "--config",
                           str(tmp / "nvr.toml"), "--log-level", "warning"], capture_output=True, text=True, timeout=120)


async def test_cli_preview_and_run(env, s3):
    now = now_ms()
    (env.tmp / "nvr.toml").write_text(tomlw.dumps({
        "server": {"data_dir": str(env.tmp / "data")},
        "storage": {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key,
                    "bucket": env.store.bucket},
        "retention": {"min_age": "1m"},
    }))
    svc = await env.service(RetentionSettings.from_config(load_config(env.tmp / "nvr.toml")).rules)
    rows = await env.add("a", now - 2 * H, 3, svc=svc)
    (env.tmp / "rules.json").write_text(json.dumps({"default": {"max_age": "1m"}}))

    proc = await asyncio.to_thread(cli, env.tmp, "preview", "--rules", str(env.tmp / "rules.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cameras"]["a"]["delete_count"] == 3 and out["delete_bytes"] == sum(r.object_size for r in rows)
    proc = await asyncio.to_thread(cli, env.tmp, "preview", "--json")  # the rules in force keep everything
    assert json.loads(proc.stdout)["delete_count"] == 0
    bad = await asyncio.to_thread(cli, env.tmp, "preview", "--rules", str(env.tmp / "nope.json"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr

    # While another process owns the sweep of this data dir, `run` refuses.
    busy = await asyncio.to_thread(cli, env.tmp, "run")
    assert busy.returncode == 1 and "another nvr process holds" in busy.stderr
    await svc.set_rules(svc.parse_rules({"default": {"max_age": "1m"}}), ("token:admin", "admin"))
    await svc.stop()
    proc = await asyncio.to_thread(cli, env.tmp, "run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cameras"]["a"]["segments"] == 3
    assert {r.state for r in env.rows("a")} == {"deleted"}
    assert env.index.audit_entries(action="retention.run")[0].actor.startswith("cli:")
    env.assert_consistent("a")


async def test_lock_file_allows_one_sweeper_per_data_dir(env):
    await env.service()
    with pytest.raises(RetentionBusy):
        await env.service()
