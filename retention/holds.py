"""Holds: placing and releasing them, and keeping S3 legal holds on the objects they cover.

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

Choices where the issue is silent:

* ``cameras`` is a required, non-empty list of camera ids (registered, or
  deleted but with footage); a hold on "every camera" is expressed by listing
  them, so a camera added later is not silently held.
* ``end`` may be omitted (or null): an open-ended hold, covering footage
  recorded later until released. ``start`` may be in the future.
* ``expires`` is an RFC 3339 time in the future; at that instant the hold stops
  protecting (``Hold.active``) and its legal holds are cleared at the next
  reconcile.
* ``case_id`` is 1-128 printable characters, ``reason`` 1-1000.
* Releasing needs a reason (1-1000 characters); releasing twice is a conflict.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.errors import InvalidInput
from nvr.base.ids import is_camera_id
from nvr.base.times import ms_to_rfc3339, now_ms, parse_time_ms
from retention.policy import held_by
from retention.store import CoveredSegment, HoldRecord, RetentionStore
from storage.errors import StorageError
from storage.index import SegmentRow
from storage.objectstore import GONE_CODES, ObjectStore

log = logging.getLogger("nvr.retention.holds")

AuditFn = Callable[[str, str, dict[str, Any], tuple[str, str]], Awaitable[Any]]  # action, target, detail, actor
SYSTEM = ("system", "system")

HOLD_KEYS = ("case_id", "cameras", "start", "end", "reason", "expires")


class HoldInputError(InvalidInput, ValueError):
    """A hold request is invalid; ``field`` names the offending key."""

    def __init__(self, field: str, message: str):
        self.message = message
        super().__init__(f"{field}: {message}", field=field)


@dataclass(frozen=True)
class HoldRequest:
    case_id: str
    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int | None
    reason: str
    expires_ms: int | None


def _text(data: Mapping[str, Any], name: str, limit: int) -> str:
    if name not in data or data[name] is None:
        raise HoldInputError(name, "is required")
    v = data[name]
    if not isinstance(v, str) or not v.strip():
        raise HoldInputError(name, f"must be a non-empty string, got {v!r}")
    if len(v) > limit:
        raise HoldInputError(name, f"must be at most {limit} characters, got {len(v)}")
    if any(ord(c) < 32 for c in v):
        raise HoldInputError(name, "must not contain control characters")
    return v.strip()


def _time(data: Mapping[str, Any], name: str) -> int | None:
    v = data.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise HoldInputError(name, f"must be an RFC 3339 time such as 2026-11-29T13:00:00Z, got {v!r}")
    try:
        return parse_time_ms(v)
    except ValueError as e:
        raise HoldInputError(name, str(e)) from None


def parse_hold_request(data: Mapping[str, Any], now: int) -> HoldRequest:
    """Validate a hold body (``case_id, cameras, start, end?, reason, expires?``); camera existence is the caller's."""
    unknown = sorted(str(k) for k in data if k not in HOLD_KEYS)
    if unknown:
        raise HoldInputError(unknown[0], f"unknown key; expected {', '.join(HOLD_KEYS)}")
    case_id = _text(data, "case_id", 128)
    cams = data.get("cameras")
    if cams is None:
        raise HoldInputError("cameras", "is required: a list of camera ids")
    if not isinstance(cams, list) or not cams:
        raise HoldInputError("cameras", f"must be a non-empty list of camera ids, got {cams!r}")
    for c in cams:
        if not isinstance(c, str) or not is_camera_id(c):
            raise HoldInputError("cameras", f"{c!r} is not a camera id (1-63 of a-z, 0-9, '_', '-')")
    start = _time(data, "start")
    if start is None:
        raise HoldInputError("start", "is required (RFC 3339, e.g. 2026-11-29T13:00:00Z)")
    end = _time(data, "end")
    if end is not None and end <= start:
        raise HoldInputError("end", "must be after start (omit it for an open-ended hold)")
    reason = _text(data, "reason", 1000)
    expires = _time(data, "expires")
    if expires is not None and expires <= now:
        raise HoldInputError("expires", f"must be in the future (now is {ms_to_rfc3339(now)})")
    return HoldRequest(case_id, tuple(sorted(set(cams))), start, end, reason, expires)


def parse_release_reason(reason: Any) -> str:
    if reason is None:
        raise HoldInputError("reason", "is required to release a hold")
    return _text({"reason": reason}, "reason", 1000)


def hold_json(h: HoldRecord, now: int) -> dict[str, Any]:
    t = ms_to_rfc3339
    return {
        "id": h.id, "case_id": h.case_id, "cameras": list(h.cameras) if h.cameras is not None else None,
        "start": t(h.start_ms), "end": t(h.end_ms) if h.end_ms is not None else None, "reason": h.reason,
        "expires": t(h.expires_ms) if h.expires_ms is not None else None, "created": t(h.created_ms),
        "created_by": h.created_by, "state": h.state(now),
        "released": t(h.released_ms) if h.released_ms is not None else None, "released_by": h.released_by,
        "release_reason": h.release_reason,
    }


@dataclass(frozen=True)
class LegalHoldSync:
    """What a reconcile did to S3 legal holds."""

    set: int = 0
    cleared: int = 0
    errors: tuple[tuple[str, str], ...] = ()  # (segment id, error)

    def as_dict(self) -> dict[str, Any]:
        return {"set": self.set, "cleared": self.cleared, "errors": [list(e) for e in self.errors[:20]],
                "error_count": len(self.errors)}


@dataclass(frozen=True)
class HoldChange:
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
        return bool(self.store.object_lock)

    async def holds(self) -> list[HoldRecord]:
        return await asyncio.to_thread(self.rstore.holds)

    async def active_holds(self, now: int | None = None) -> list[HoldRecord]:
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
        """Release (raises store.HoldNotFound / HoldAlreadyReleased), audit, clear legal holds no hold needs."""
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

    async def _clear(self, e: Any) -> str | None:
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


def covered_by(holds: Iterable[HoldRecord], camera: str, start_ms: int, end_ms: int, now: int) -> HoldRecord | None:
    """The active hold (smallest id) covering this footage, or None: the retention policy's own rule."""
    by_id = {h.id: h for h in holds}
    hit = held_by([h.policy() for h in by_id.values()], camera, start_ms, end_ms, now)
    return None if hit is None else by_id[hit.id]


__all__ = [
    "HOLD_KEYS", "HoldChange", "HoldInputError", "HoldManager", "HoldRequest", "LegalHoldSync",
    "covered_by", "hold_json", "parse_hold_request", "parse_release_reason",
]
