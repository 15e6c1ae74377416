"""The sweep: the pure plan (``retention.policy.plan``) carried out, two-phase and crash-safe.

One run, in order:

1. **plan** over what the index knows (never a bucket listing), the rules in
   force and every hold. Segments whose object-lock retention may not have
   passed yet (``ingested_ms + lock_seconds`` plus a margin for clock skew
   with S3) are given to the plan as state ``"locked"``: they count in usage
   but are never selected, so the sweep never asks S3 for a deletion it must
   refuse.
2. **mark** the selected rows ``pending_delete`` with their rule and run id
   (one transaction). A crash after this leaves pending rows: the next run
   finishes them first (policy: pending bytes are already "gone").
3. **delete** every pending row's object (this run's and earlier runs'), in
   batches with one S3 multi-delete each, *by version id* (with object lock
   the bucket is versioned; a delete without version would only add a delete
   marker and keep the footage). Right before each batch, under the gate
   shared with hold placement, the holds are read again: a pending segment a
   new hold covers goes back to ``stored`` if its object still exists. A
   per-object S3 error leaves that segment pending (with the error noted) and
   the rest proceed; "no such key/version" counts as deleted (an earlier
   run's delete went through before a crash). S3 unreachable stops the run;
   what is left stays pending.
4. **tombstone**: for each deleted object, under the camera's chain lock,
   append ``tombstone_record`` (rule, time, the segment's record hash) to the
   camera's ledger (``index.retention.finish_deleted``); for a segment pending from
   an earlier run, first look for a tombstone that run already wrote (an index
   written before steps 4 and 5 shared a transaction), so none is written
   twice.
5. **mark deleted** (``deleted``, pending row removed). Steps 4 and 5 of one
   camera's objects of a batch are one transaction, on one thread, under that
   camera's chain lock: one durable commit per (camera, batch), not two per
   segment.
6. reconcile S3 legal holds, audit hold expiries, report: a frozen
   :class:`SweepReport`, kept in ``retention_runs``, one ``retention.sweep``
   audit event with counts and bytes per camera, one log line.

A crash between any two steps is finished by the next run: nothing is deleted
that is not pending, every pending row ends deleted-with-one-tombstone or back
to stored, and no object is orphaned because rows leave ``pending_delete``
only after S3 confirmed the version gone. A crash during steps 4-5 rolls back
the whole group's tombstones and states: its rows are still pending, and the
next run deletes them again (S3 answers "no such version", counted as
deleted) and writes their tombstones then.

Object lock and ``min_age``: ingest writes each segment with GOVERNANCE
retention until ``retention.min_age`` (config) after upload. The sweep never
uses ``bypass_governance_mode``: the floor (``nvr.config.retention.with_floor``,
applied to every rule set the service accepts) refuses rules whose ``min_age``
is below ``retention.min_age``, and the
"locked" state above covers ingest latency (a segment uploaded late, after an
S3 outage, is locked longer than its end time suggests).

Rows of deleted segments are kept, in state ``deleted``: they are what each
tombstone refers to (the segment record's hash, object key and times), they
keep ``GET /segments`` able to say "deleted, by which rule" and cost one row
per segment ever recorded, i.e. per camera-day at most
``86400 / segment_seconds`` rows, the same bound as the ledger's own records;
nothing the sweep does adds rows per camera-day beyond one tombstone per
deleted segment. Compacting them (and the ledger) once covered by signed
checkpoints belongs to the custody work and is left to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from minio.deleteobjects import DeleteObject

from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.base.units import format_size
from nvr.config.retention import RuleSet
from retention.holds import covered_by
from retention.legalholds import AuditFn, HoldManager, LegalHoldSync
from retention.policy import STORED, Plan, SegmentInfo, emergency_rules, plan
from retention.store import PendingDeletion, RetentionStore
from storage.audit import SYSTEM
from storage.chainlock import ChainLocks
from storage.errors import StorageError
from storage.index import Index
from storage.ledger import tombstone_record
from storage.objectstore import GONE_CODES, ObjectStore

log = logging.getLogger("nvr.retention.sweep")

LOCKED = "locked"  # a state only the plan sees: object-lock retention may still be running
LOCK_MARGIN_MS = 5_000  # our clock vs S3's

Fault = Callable[[str, str | None], None]  # (phase, segment id) -> None; tests raise to simulate a crash


@dataclass(frozen=True)
class CameraSweep:
    """What a run deleted of one camera."""

    segments: int
    bytes: int
    rules: Mapping[str, int]  # rule -> segments


@dataclass(frozen=True)
class SweepReport:
    """What one run did."""

    run_id: int
    trigger: str
    started_ms: int
    finished_ms: int
    deleted: Mapping[str, CameraSweep]
    failed: tuple[tuple[str, str], ...]  # (segment id, S3 error): left pending
    reverted: tuple[str, ...]  # pending segments a new hold covered: back to stored
    resumed: int  # pending segments of earlier runs finished by this one
    marked: int  # segments this run's plan selected
    pending_left: int
    usage_before: int
    usage_after: int
    quota_unmet: bool
    free_needed: int | None
    legal_holds: LegalHoldSync = field(default_factory=LegalHoldSync)
    error: str | None = None  # S3 unreachable: the run stopped early

    @property
    def deleted_segments(self) -> int:
        """Segments deleted by this run, every camera."""
        return sum(c.segments for c in self.deleted.values())

    @property
    def deleted_bytes(self) -> int:
        """Object bytes deleted by this run, every camera."""
        return sum(c.bytes for c in self.deleted.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the audit event's detail, the run's row, the API's and the CLI's answer."""
        return {
            "run": self.run_id, "trigger": self.trigger, "started": ms_to_rfc3339(self.started_ms),
            "finished": ms_to_rfc3339(self.finished_ms), "deleted_segments": self.deleted_segments,
            "deleted_bytes": self.deleted_bytes,
            "cameras": {cam: {"segments": c.segments, "bytes": c.bytes, "rules": dict(c.rules)}
                        for cam, c in sorted(self.deleted.items())},
            "failed": [{"segment": s, "error": e} for s, e in self.failed[:50]], "failed_count": len(self.failed),
            "reverted": list(self.reverted[:50]), "resumed": self.resumed, "marked": self.marked,
            "pending_left": self.pending_left, "usage_before": self.usage_before, "usage_after": self.usage_after,
            "quota_unmet": self.quota_unmet, "free_needed": self.free_needed,
            "legal_holds": self.legal_holds.as_dict(), "error": self.error,
        }


@dataclass(frozen=True)
class Preview:
    """What a sweep at ``at_ms`` would delete, for an operator (deletes nothing)."""

    at_ms: int
    rules: RuleSet
    plan: Plan
    spans: Mapping[str, tuple[int, int]]  # camera -> (oldest start, newest end) of what goes
    locked: Mapping[str, tuple[int, int]]  # camera -> (segments, bytes) kept by unexpired object lock


def preview_json(pv: Preview, visible: Callable[[str], bool] = lambda c: True) -> dict[str, Any]:
    """The JSON form of a preview, with only the cameras ``visible`` accepts (and totals over those)."""
    t = ms_to_rfc3339
    rules_by_cam: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for d in pv.plan.deletions:
        rules_by_cam[d.segment.camera][d.rule] += 1
    cams: dict[str, Any] = {}
    for cam, c in sorted(pv.plan.per_camera.items()):
        if not visible(cam):
            continue
        span = pv.spans.get(cam)
        locked = pv.locked.get(cam, (0, 0))
        cams[cam] = {
            "delete_count": c.delete_count, "delete_bytes": c.delete_bytes,
            "oldest": t(span[0]) if span else None, "newest": t(span[1]) if span else None,
            "held_count": c.held_count, "held_bytes": c.held_bytes,
            "locked_count": locked[0], "locked_bytes": locked[1],
            "usage_before": c.usage_before, "usage_after": c.usage_after, "rules": dict(rules_by_cam.get(cam, {})),
        }
    return {
        "at": t(pv.at_ms), "delete_count": sum(c["delete_count"] for c in cams.values()),
        "delete_bytes": sum(c["delete_bytes"] for c in cams.values()),
        "held_bytes": sum(c["held_bytes"] for c in cams.values()),
        "usage_before": pv.plan.usage_before, "usage_after": pv.plan.usage_after,
        "pending_bytes": pv.plan.pending_bytes, "quota_unmet": pv.plan.quota_unmet, "cameras": cams,
    }


class Sweeper:
    """Plans and carries out deletions; one :meth:`run` at a time (the service serializes runs)."""

    def __init__(self, *, index: Index, store: ObjectStore, rstore: RetentionStore, holds: HoldManager,
                 audit: AuditFn, node_id: str, gate: asyncio.Lock, chain_locks: ChainLocks,
                 lock_seconds: float = 0.0, batch_size: int = 500, fault: Fault | None = None):
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be 1-1000 (an S3 multi-delete takes at most 1000 keys)")
        self.index = index
        self.store = store
        self.rstore = rstore
        self.holds = holds
        self.audit = audit
        self.node_id = node_id
        self.gate = gate
        self.chain_locks = chain_locks
        self.lock_ms = int(lock_seconds * 1000) if store.object_lock and lock_seconds > 0 else 0
        self.batch_size = batch_size
        self.fault = fault

    def _at(self, phase: str, segment_id: str | None = None) -> None:
        if self.fault is not None:
            self.fault(phase, segment_id)

    # ------------------------------------------------------------------ deciding

    def _infos(self, now: int) -> list[SegmentInfo]:
        out = []
        for sid, cam, start, end, size, state, ingested in self.rstore.live_segments():
            if state == STORED and self.lock_ms and now < ingested + self.lock_ms + LOCK_MARGIN_MS:
                state = LOCKED
            out.append(SegmentInfo(sid, cam, start, end, size, state))
        return out

    async def _decide(self, rules: RuleSet, now: int, free_needed: int | None) -> tuple[Plan, list[SegmentInfo]]:
        infos = await asyncio.to_thread(self._infos, now)
        holds = [h.policy() for h in await asyncio.to_thread(self.rstore.holds)]
        if free_needed:
            rules = emergency_rules(rules, sum(s.size for s in infos), free_needed)
        return await asyncio.to_thread(plan, infos, rules, holds, now), infos

    async def preview(self, rules: RuleSet, now: int | None = None) -> Preview:
        """What :meth:`run` with ``rules`` would delete at ``now``; changes nothing."""
        now = now_ms() if now is None else now
        p, infos = await self._decide(rules, now, None)
        spans: dict[str, tuple[int, int]] = {}
        for d in p.deletions:
            s = d.segment
            lo, hi = spans.get(s.camera, (s.start_ms, s.end_ms))
            spans[s.camera] = (min(lo, s.start_ms), max(hi, s.end_ms))
        locked: dict[str, tuple[int, int]] = {}
        for s in infos:
            if s.state == LOCKED:
                n, b = locked.get(s.camera, (0, 0))
                locked[s.camera] = (n + 1, b + s.size)
        return Preview(now, rules, p, spans, locked)

    # ------------------------------------------------------------------ doing

    async def run(self, rules: RuleSet, *, trigger: str, free_needed: int | None = None) -> SweepReport:
        """One run (see module doc); ``free_needed`` bytes make it the storage-full sweep."""
        started = now_ms()
        run_id = await asyncio.to_thread(self.rstore.start_run, trigger, started)
        p, _ = await self._decide(rules, started, free_needed)
        marked = await asyncio.to_thread(
            self.rstore.mark_pending, [(d.segment.id, d.rule) for d in p.deletions], run_id=run_id, now_ms=started)
        self._at("marked")
        pending = await asyncio.to_thread(self.rstore.pending)
        deleted: dict[str, list[PendingDeletion]] = defaultdict(list)
        failed: dict[str, str] = {}
        reverted: list[str] = []
        resumed = 0
        error: str | None = None

        for i in range(0, len(pending), self.batch_size):
            batch = pending[i:i + self.batch_size]
            go: list[PendingDeletion] = []
            async with self.gate:
                now = now_ms()
                active = [h for h in await asyncio.to_thread(self.rstore.holds, include_released=False)
                          if h.active(now)]
                for item in batch:
                    if covered_by(active, item.camera, item.start_ms, item.end_ms, now) is not None:
                        if await self._exists(item):
                            await asyncio.to_thread(self.rstore.unmark, item.segment_id)
                            reverted.append(item.segment_id)
                            continue
                    go.append(item)
                try:
                    errors = await self.store.run(self._remove, go) if go else {}
                except StorageError as e:  # the whole request failed (S3 unreachable): all stay pending
                    error = f"S3 multi-delete failed: {e}"
                    failed.update((item.segment_id, str(e)) for item in go)
                    break
            failed.update(errors)
            self._at("deleted")
            done = [item for item in go if item.segment_id not in errors]
            for camera, group in groupby(done, key=lambda it: it.camera):
                items = list(group)
                async with self.chain_locks(camera):
                    await asyncio.to_thread(self._finish, items, run_id)
                resumed += sum(item.run_id != run_id for item in items)
                deleted[camera].extend(items)
        if failed:
            await asyncio.to_thread(self.rstore.note_failures, failed)

        await self.holds.note_expiries()
        sync = await self.holds.reconcile()
        usage_after = await asyncio.to_thread(self.rstore.usage_bytes)
        report = SweepReport(
            run_id=run_id, trigger=trigger, started_ms=started, finished_ms=now_ms(),
            deleted={cam: _counts(items) for cam, items in deleted.items()},
            failed=tuple(sorted(failed.items())), reverted=tuple(reverted), resumed=resumed, marked=len(marked),
            pending_left=await asyncio.to_thread(self.rstore.pending_count), usage_before=p.usage_before,
            usage_after=usage_after, quota_unmet=p.quota_unmet, free_needed=free_needed, legal_holds=sync,
            error=error)
        await asyncio.to_thread(self.rstore.finish_run, run_id, report.as_dict(), report.finished_ms)
        await self.audit("retention.sweep", "retention", report.as_dict(), SYSTEM)
        self._log(report)
        return report

    async def _exists(self, item: PendingDeletion) -> bool:
        try:
            return await self.store.run(self.store.stat, item.object_key, item.version_id) is not None
        except StorageError:
            return True  # can't tell: keep it (the hold wins)

    def _remove(self, items: list[PendingDeletion]) -> dict[str, str]:
        """One S3 multi-delete by version id; segment id -> error for the objects S3 refused."""
        by_key = {it.object_key: it.segment_id for it in items}
        objs = [DeleteObject(it.object_key, it.version_id) if it.version_id else DeleteObject(it.object_key)
                for it in items]
        errors: dict[str, str] = {}
        for err in self.store.client.remove_objects(self.store.bucket, objs):
            if err.code in GONE_CODES:
                continue
            sid = by_key.get(err.name)
            if sid is not None:
                errors[sid] = f"{err.code}: {err.message}"
        return errors

    def _finish(self, items: list[PendingDeletion], run_id: int) -> None:
        """Steps 4 and 5 for one camera's deleted objects of a batch, in one transaction (under its chain lock).

        One commit (``synchronous=FULL``) per group rather than two per segment;
        a crash rolls back the whole group, whose rows stay pending for the next
        run to delete again (S3 then answers "no such version") and finish.
        """
        def tombstone(head, i: int):
            item = items[i]
            # An index written before tombstones and states shared a transaction may hold a tombstone
            # for a row still pending: the run that wrote it crashed before marking the row.
            if item.run_id != run_id and self.rstore.tombstone_seq(item.camera, item.seq) is not None:
                return None
            return tombstone_record(
                head=head, segment_seq=item.seq, segment_record_hash=item.record_hash,
                object_key=item.object_key, rule=item.rule, deleted_at=ms_to_rfc3339(now_ms()), node=self.node_id)

        self.index.retention.finish_deleted(items[0].camera, [(it.segment_id, it.seq) for it in items], tombstone,
                                            each=lambda i: self._at("tombstoned", items[i].segment_id))

    def _log(self, r: SweepReport) -> None:
        cams = ", ".join(f"{cam} {c.segments} ({format_size(c.bytes)})" for cam, c in sorted(r.deleted.items()))
        log.info("retention sweep #%d (%s): deleted %d segment(s), %s%s; %d failed, %d pending, %d put back "
                 "under a new hold; usage %s -> %s", r.run_id, r.trigger, r.deleted_segments,
                 format_size(r.deleted_bytes), f" [{cams}]" if cams else "", len(r.failed), r.pending_left,
                 len(r.reverted), format_size(r.usage_before), format_size(r.usage_after))
        for sid, err in r.failed[:20]:
            log.error("retention: segment %s stays pending, S3 refused its deletion: %s", sid, err)
        if r.error:
            log.error("retention sweep #%d stopped early: %s", r.run_id, r.error)


def _counts(items: list[PendingDeletion]) -> CameraSweep:
    rules: dict[str, int] = defaultdict(int)
    for it in items:
        rules[it.rule] += 1
    return CameraSweep(len(items), sum(it.size for it in items), dict(rules))
