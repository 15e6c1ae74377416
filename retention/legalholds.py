"""Placing and releasing holds, and keeping S3 legal holds on the objects they cover.

A hold protects footage from the moment its row is committed: the sweep reads
the holds table before it marks anything and again, under the same gate, right
before each batch of S3 deletes (see ``retention/sweep.py``). Legal holds are
the second line, enforced by the storage itself: where the bucket has object
lock, every object version a hold covers carries an S3 legal hold, so not even
S3 credentials can delete it.

Legal holds are *reconciled*, not tracked per hold: the wanted set is every
version (of a segment not deleted) overlapping an active hold; this stage's
table ``retention_legal_holds`` says which versions it has set. Placing a hold,
releasing it, a hold expiring, a new segment (``on_segment_stored``) and every
sweep run bring the bucket to the wanted set: set what is missing, clear what
no active hold covers any more. So a crash or an S3 error half-way is mended by
the next reconcile, releasing clears a legal hold only where no other hold
covers the object, and a legal hold set directly in S3 by someone else is never
cleared by us.

Every placement and release is an audit event (``hold.place``,
``hold.release``; ``hold.expire`` when a sweep first sees a hold expired).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nvr.base.times import ms_to_rfc3339, now_ms
from retention.holds import HoldRecord, HoldRequest, covered_by
from retention.store import CoveredSegment, LegalHoldEntry, RetentionStore
from storage.audit import SYSTEM
from storage.errors import StorageError
from storage.index import SegmentRow
from storage.objectstore import GONE_CODES, ObjectStore

log = logging.getLogger("nvr.retention.holds")

AuditFn = Callable[[str, str, dict[str, Any], tuple[str, str]], Awaitable[Any]]  # action, target, detail, actor


@dataclass(frozen=True)
class LegalHoldSync:
    """What a reconcile did to S3 legal holds."""

    set: int = 0
    cleared: int = 0
    errors: tuple[tuple[str, str], ...] = ()  # (segment id, error)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form in sweep reports and hold responses (the first 20 errors)."""
        return {"set": self.set, "cleared": self.cleared, "errors": [list(e) for e in self.errors[:20]],
                "error_count": len(self.errors)}


@dataclass(frozen=True)
class HoldChange:
    """A hold just placed or released, and what the reconcile that followed did."""

    hold: HoldRecord
    legal_holds: LegalHoldSync


class HoldManager:
    """Places and releases holds; owns the S3 legal holds of covered objects.

    ``gate`` is shared with the sweep: a placement/release/reconcile and a
    sweep's batch of deletes never interleave.
    """

    def __init__(self, *, store: ObjectStore, rstore: RetentionStore, audit: AuditFn, gate: asyncio.Lock):
        self.store = store
        self.rstore = rstore
        self.audit = audit
        self.gate = gate
        self._sem = asyncio.Semaphore(max(1, store.max_connections))

    @property
    def legal_holds_enabled(self) -> bool:
        """Legal holds need object lock on the bucket; without it holds are enforced by the sweep alone."""
        return bool(self.store.object_lock)

    async def holds(self) -> list[HoldRecord]:
        """Every hold ever placed, released ones included, oldest first."""
        return await asyncio.to_thread(self.rstore.holds)

    async def active_holds(self, now: int | None = None) -> list[HoldRecord]:
        """The holds that protect footage at ``now`` (default: the clock)."""
        now = now_ms() if now is None else now
        return [h for h in await asyncio.to_thread(self.rstore.holds, include_released=False) if h.active(now)]

    async def place(self, req: HoldRequest, actor: tuple[str, str]) -> HoldChange:
        """Commit the hold (it protects from here on), audit it, then set legal holds on what it covers."""
        now = now_ms()
        async with self.gate:
            hold = await asyncio.to_thread(
                self.rstore.add_hold, case_id=req.case_id, cameras=req.cameras, start_ms=req.start_ms,
                end_ms=req.end_ms, reason=req.reason, expires_ms=req.expires_ms, actor=actor[0], now_ms=now)
        covered = await asyncio.to_thread(self.rstore.covered_segments, [hold])
        await self.audit("hold.place", hold.id, {
            "case_id": hold.case_id, "cameras": list(hold.cameras or ()), "start": ms_to_rfc3339(hold.start_ms),
            "end": ms_to_rfc3339(hold.end_ms) if hold.end_ms is not None else None, "reason": hold.reason,
            "expires": ms_to_rfc3339(hold.expires_ms) if hold.expires_ms is not None else None,
            "segments": len(covered),
        }, actor)
        sync = await self.reconcile()
        log.info("hold %s placed (case %s): %d segment(s) covered, %d legal hold(s) set", hold.id, hold.case_id,
                 len(covered), sync.set)
        return HoldChange(hold, sync)

    async def release(self, hold_id: str, reason: str, actor: tuple[str, str]) -> HoldChange:
        """Release (raises ``store.HoldNotFound`` / ``HoldAlreadyReleased``), audit, clear legal holds no hold needs."""
        async with self.gate:
            hold = await asyncio.to_thread(self.rstore.release_hold, hold_id, actor=actor[0], reason=reason,
                                           now_ms=now_ms())
        await self.audit("hold.release", hold.id, {"case_id": hold.case_id, "reason": reason}, actor)
        sync = await self.reconcile()
        log.info("hold %s released: %d legal hold(s) cleared", hold.id, sync.cleared)
        return HoldChange(hold, sync)

    async def note_expiries(self) -> int:
        """Audit holds that expired since the last look (once each)."""
        expired = await asyncio.to_thread(self.rstore.expired_unnoted, now_ms())
        for h in expired:
            await self.audit("hold.expire", h.id, {"case_id": h.case_id, "expires": ms_to_rfc3339(h.expires_ms)},
                             SYSTEM)
            await asyncio.to_thread(self.rstore.note_expired, h.id)
        return len(expired)

    async def on_segment_stored(self, row: SegmentRow) -> bool:
        """Ingest hook: put a legal hold on a new segment an active hold covers (open-ended holds). True if set."""
        if not self.legal_holds_enabled:
            return False
        now = now_ms()
        if covered_by(await self.active_holds(now), row.camera, row.start_ms, row.end_ms, now) is None:
            return False
        seg = CoveredSegment(row.id, row.camera, row.object_key, row.version_id, row.state)
        async with self.gate:
            err = await self._set(seg)
        if err:
            log.error("segment %s is under a hold but its legal hold could not be set (retried at the next "
                      "sweep): %s", row.id, err)
            return False
        return True

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self) -> LegalHoldSync:
        """Bring S3 legal holds to exactly what the active holds cover (see module doc)."""
        if not self.legal_holds_enabled:
            return LegalHoldSync()
        async with self.gate:
            holds = await self.active_holds()
            wanted = await asyncio.to_thread(self.rstore.covered_segments, holds)
            have = await asyncio.to_thread(self.rstore.legal_holds)
            to_set = [wanted[s] for s in sorted(wanted.keys() - have.keys())]
            to_clear = [have[s] for s in sorted(have.keys() - wanted.keys())]
            states = await asyncio.to_thread(self.rstore.segment_states, [e.segment_id for e in to_clear])
            errors: list[tuple[str, str]] = []

            async def one(fn, item) -> None:
                async with self._sem:
                    err = await fn(item)
                if err:
                    errors.append((item.segment_id, err))

            await asyncio.gather(*(one(self._set, s) for s in to_set))
            set_errors = len(errors)

            async def clear(e):
                if states.get(e.segment_id, "deleted") == "deleted":  # object gone with its segment
                    await asyncio.to_thread(self.rstore.remove_legal_hold, e.segment_id)
                    return None
                return await self._clear(e)

            await asyncio.gather(*(one(clear, e) for e in to_clear))
        n_set = len(to_set) - set_errors
        n_clear = len(to_clear) - (len(errors) - set_errors)
        for sid, err in errors:
            log.error("legal hold of segment %s could not be changed (retried at the next sweep): %s", sid, err)
        return LegalHoldSync(n_set, n_clear, tuple(errors))

    async def _set(self, seg: CoveredSegment) -> str | None:
        try:
            await self.store.run(self._enable, seg.object_key, seg.version_id)
        except StorageError as e:
            if e.code in GONE_CODES:
                return f"object {seg.object_key} is missing from the bucket: {e}"
            return str(e)
        await asyncio.to_thread(self.rstore.add_legal_hold, seg, now_ms())
        return None

    async def _clear(self, e: LegalHoldEntry) -> str | None:
        try:
            await self.store.run(self._disable, e.object_key, e.version_id)
        except StorageError as err:
            if err.code not in GONE_CODES:
                return str(err)
        await asyncio.to_thread(self.rstore.remove_legal_hold, e.segment_id)
        return None

    def _enable(self, key: str, version_id: str | None) -> None:
        self.store.client.enable_object_legal_hold(self.store.bucket, key, version_id=version_id)

    def _disable(self, key: str, version_id: str | None) -> None:
        self.store.client.disable_object_legal_hold(self.store.bucket, key, version_id=version_id)
