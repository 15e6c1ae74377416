"""The pure retention plan: which stored segments a sweep deletes, and why.

No I/O, no clock, no asyncio: :func:`plan` takes the segments the index knows,
the rules (``nvr.config.retention``), the holds and ``now_ms`` and returns a
:class:`Plan`. The same input (in any order) always gives the same plan, so a
preview shown to an operator is exactly what the sweep will do at that instant.

Order of the rules, each seeing what the previous ones already took:

1. ``max_age`` per camera: a segment whose *end* is older than ``now - max_age``.
2. ``max_bytes`` per camera: the camera's oldest deletable segments until its
   bytes are at or below ``max_bytes``.
3. the global quota: above ``high_watermark * quota_bytes``, the globally
   oldest deletable segments (across cameras) until below
   ``low_watermark * quota_bytes``.

"Oldest" is by ``start_ms``, ties broken by segment id so the order is total;
``Plan.deletions`` comes in that order too.

"Deletable" always means: state ``"stored"``, ended at least ``min_age`` ago,
and overlapping no active hold that covers its camera. Nothing else is ever
selected, whatever the rules or the quota say.

Choices where the retention issue is silent:

* Usage counts every segment whose state is not ``"deleted"`` (``"stored"``,
  ``"pending_delete"`` and any other state: its object may still be in the
  bucket). Only ``"stored"`` segments can be selected.
* A ``"pending_delete"`` segment is already committed to deletion (the sweep
  finishes it), so its bytes are counted as *gone* when deciding how much more
  to delete: otherwise a sweep whose object deletes failed would delete further
  footage next time for bytes that are already on their way out. It still
  counts in ``usage_before`` and in the quota *trigger* (the bucket really holds
  it), and ``usage_after`` is the projected usage once this plan and the
  pending deletions are done.
* Times: a segment is young while ``now - end < min_age`` and too old when
  ``now - end > max_age`` (exactly ``max_age`` old is kept). A hold expires at
  ``expires_ms`` (active while ``now < expires_ms``), and footage that only
  touches a hold's start or end is not held.
* "Kept only because of holds" (the preview's ``held_*``) = held segments that
  the same rules select when the plan is computed again without any hold.
* Sizes are the bytes in the bucket: the *object* size (encrypted), which is
  what :meth:`SegmentInfo.from_row` takes from an index row.
* Storage full: :func:`emergency_rules` turns a shortfall of free space into
  a quota, so the storage-full sweep is this same plan (holds and ``min_age``
  still apply), not a second decision.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import compress, count, islice
from operator import attrgetter, eq
from types import MappingProxyType
from typing import Any, Literal

from nvr.config.retention import ResolvedRule, RuleSet, validate_rules

STORED = "stored"
PENDING_DELETE = "pending_delete"
DELETED = "deleted"

RuleName = Literal["max_age", "max_bytes", "quota"]


# ---------------------------------------------------------------- segments, holds


@dataclass(frozen=True, slots=True)  # slots: 200k of these, smaller and faster to read
class SegmentInfo:
    """What the decision needs of an indexed segment; ``size`` is its bytes in the bucket."""

    id: str
    camera: str
    start_ms: int
    end_ms: int
    size: int
    state: str = STORED

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"segment {self.id}: ends ({self.end_ms}) before it starts ({self.start_ms})")
        if self.size < 0:
            raise ValueError(f"segment {self.id}: negative size {self.size}")

    @classmethod
    def from_row(cls, row: Any) -> SegmentInfo:
        """From a ``storage.index.SegmentRow`` (or anything with its fields), sized by ``object_size``."""
        return cls(row.id, row.camera, row.start_ms, row.end_ms, row.object_size, row.state)


@dataclass(frozen=True)
class Hold:
    """Footage under a hold is never deleted: ``cameras=None`` covers every camera, ``end_ms=None`` is open-ended."""

    id: str
    cameras: frozenset[str] | None
    start_ms: int
    end_ms: int | None = None
    expires_ms: int | None = None
    released: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.cameras, str):
            # frozenset("gate") would be {"g", "a", "t", "e"}: a hold that silently protects nothing.
            raise ValueError(f"hold {self.id}: cameras must be a set of camera ids, not the string {self.cameras!r}")
        if self.cameras is not None:
            cams = frozenset(self.cameras)  # accept any iterable, store the immutable set
            if not cams:
                raise ValueError(f"hold {self.id}: an empty camera set holds nothing; use None for every camera")
            object.__setattr__(self, "cameras", cams)
        if self.end_ms is not None and self.end_ms < self.start_ms:
            raise ValueError(f"hold {self.id}: ends ({self.end_ms}) before it starts ({self.start_ms})")

    def active(self, now_ms: int) -> bool:
        """Not released and not expired (a hold expires *at* ``expires_ms``)."""
        return not self.released and (self.expires_ms is None or now_ms < self.expires_ms)

    def covers(self, camera: str) -> bool:
        """Whether the hold applies to ``camera``'s footage at all."""
        return self.cameras is None or camera in self.cameras

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        """Strict overlap: footage that only touches the hold's start or end is not held."""
        return start_ms < (math.inf if self.end_ms is None else self.end_ms) and end_ms > self.start_ms


def is_held(seg: SegmentInfo, holds: Iterable[Hold], now_ms: int) -> Hold | None:
    """The active hold that protects ``seg`` (the one with the smallest id, so the answer is stable), or None."""
    return held_by(holds, seg.camera, seg.start_ms, seg.end_ms, now_ms)


def held_by(holds: Iterable[Hold], camera: str, start_ms: int, end_ms: int, now_ms: int) -> Hold | None:
    """:func:`is_held` for a camera's span of footage [start_ms, end_ms)."""
    best: Hold | None = None
    for h in holds:
        if h.active(now_ms) and h.covers(camera) and h.overlaps(start_ms, end_ms) and (best is None or h.id < best.id):
            best = h
    return best


class _HoldIndex:
    """Active holds per camera, sorted by start with a running maximum of ends.

    The holds that can overlap a segment are those starting before its end (a
    prefix, found by bisection); one of them overlaps iff the largest end in
    that prefix is after the segment's start. O(log holds) per segment.
    """

    def __init__(self, holds: Iterable[Hold], now_ms: int):
        self._active = [h for h in holds if h.active(now_ms)]
        self._per_camera: dict[str, tuple[list[int], list[float]]] = {}

    def spans(self, camera: str) -> tuple[list[int], list[float]]:
        """Starts of the holds covering ``camera``, sorted, and the running maximum of their ends."""
        idx = self._per_camera.get(camera)
        if idx is None:
            spans = sorted((h.start_ms, math.inf if h.end_ms is None else h.end_ms)
                           for h in self._active if h.covers(camera))
            starts = [s for s, _ in spans]
            max_ends: list[float] = []
            m = -math.inf
            for _, e in spans:
                m = max(m, e)
                max_ends.append(m)
            idx = self._per_camera[camera] = (starts, max_ends)
        return idx


# ---------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Deletion:
    """A segment the sweep deletes and the rule that selected it (for the ledger tombstone)."""

    segment: SegmentInfo
    rule: RuleName


@dataclass(frozen=True)
class CameraPreview:
    """One camera in a plan: what goes, what holds alone keep, its usage before and after.

    ``held_count``/``held_bytes`` count segments kept *only* because of a hold:
    the same rules would have deleted them if no hold existed.
    """

    camera: str
    delete_count: int
    delete_bytes: int
    oldest_start_ms: int | None
    newest_start_ms: int | None
    held_count: int
    held_bytes: int
    usage_before: int
    usage_after: int


@dataclass(frozen=True)
class Plan:
    """What a sweep at ``now_ms`` deletes, oldest first, and its effect on usage.

    ``usage_before`` counts every segment not ``"deleted"``; ``pending_bytes``
    the ``"pending_delete"`` ones among them; ``usage_after`` is
    ``usage_before - pending_bytes - bytes deleted``. ``quota_unmet`` is True
    when usage was above the high watermark and the deletable footage was not
    enough to get below the low watermark.
    """

    deletions: tuple[Deletion, ...]
    per_camera: Mapping[str, CameraPreview]
    usage_before: int
    usage_after: int
    pending_bytes: int
    quota_unmet: bool

    @property
    def delete_bytes(self) -> int:
        """Object bytes of the segments this plan deletes (pending ones not included)."""
        return sum(d.segment.size for d in self.deletions)

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of :attr:`deletions`, oldest first."""
        return tuple(d.segment.id for d in self.deletions)


_START = attrgetter("start_ms")
_ID = attrgetter("id")


def _order(s: SegmentInfo) -> tuple[int, str]:
    # Oldest first by start; the id (unique) makes the order total, so the plan is deterministic.
    return (s.start_ms, s.id)


def _sorted(segs: list[SegmentInfo]) -> list[SegmentInfo]:
    """``segs`` in :func:`_order`, sorting on the bare int start (tuple keys cost twice as much at 200k)."""
    out = sorted(segs, key=_START)
    starts = list(map(_START, out))
    # Equal starts are rare (cameras cut at the same millisecond): order each such run by id.
    # compress/map find them in C; i is where a run begins the first time its value is seen.
    last = None
    for i in compress(count(), map(eq, starts, islice(starts, 1, None))):
        v = starts[i]
        if v != last:
            j = bisect_right(starts, v, i)
            out[i:j] = sorted(out[i:j], key=_order)
            last = v
    return out


def _select(
    eligible: list[SegmentInfo],
    by_camera: Mapping[str, list[SegmentInfo]],
    held: set[str],
    rules: RuleSet,
    resolved: Mapping[str, ResolvedRule],
    cam_projected: Mapping[str, int],
    usage_before: int,
    projected: int,
    now_ms: int,
) -> tuple[dict[str, RuleName], bool]:
    """The three rules over ``eligible`` (stored, old enough, sorted oldest first), skipping ``held``.

    ``cam_projected``/``projected`` are bytes with pending deletions already
    subtracted. Returns id -> rule and whether the quota stayed unmet.
    """
    chosen: dict[str, RuleName] = {}
    freed: dict[str, int] = dict.fromkeys(by_camera, 0)

    for cam in sorted(by_camera):
        max_age_ms = resolved[cam].max_age_ms
        if max_age_ms is None:
            continue
        cutoff = now_ms - max_age_ms
        n = 0
        for s in by_camera[cam]:
            if s.end_ms < cutoff and s.id not in held:
                chosen[s.id] = "max_age"
                n += s.size
        freed[cam] = n

    for cam in sorted(by_camera):
        limit = resolved[cam].max_bytes
        if limit is None:
            continue
        remaining = cam_projected[cam] - freed[cam]
        if remaining <= limit:
            continue
        for s in by_camera[cam]:
            if remaining <= limit:
                break
            if s.id in held or s.id in chosen:
                continue
            chosen[s.id] = "max_bytes"
            freed[cam] += s.size
            remaining -= s.size

    unmet = False
    q = rules.quota_bytes
    # Trigger on what the bucket holds now (pending included); aim at what it will hold.
    if q is not None and usage_before > rules.high_watermark * q:
        target = rules.low_watermark * q
        left = projected - sum(freed.values())
        for s in eligible:
            if left < target:
                break
            if s.id in held or s.id in chosen:
                continue
            chosen[s.id] = "quota"
            left -= s.size
        unmet = left >= target
    return chosen, unmet


def plan(segments: Iterable[SegmentInfo], rules: RuleSet, holds: Iterable[Hold], now_ms: int) -> Plan:
    """Decide which stored segments a sweep at ``now_ms`` deletes under ``rules`` and ``holds``.

    ``segments`` are all the index knows (any state); ``holds`` may include
    released and expired ones (ignored). Deterministic: the result does not
    depend on the order of the inputs. Raises :class:`RetentionRuleError` for
    invalid rules and ``ValueError`` for duplicate segment ids.
    O(n log n) for n segments: sorting is done in C on int keys, a hold check is O(log holds).
    """
    validate_rules(rules)
    everything = list(segments)
    # map/attrgetter and defaultdict keep the per-segment work in C where they can.
    ids = set(map(_ID, everything))
    if len(ids) != len(everything):
        seen: set[str] = set()
        for s in everything:
            if s.id in seen:
                raise ValueError(f"segment {s.id} appears twice")
            seen.add(s.id)
    per_cam: defaultdict[str, list[SegmentInfo]] = defaultdict(list)
    for s in everything:
        per_cam[s.camera].append(s)
    index = _HoldIndex(holds, now_ms)

    cameras = sorted(per_cam)
    resolved = {cam: rules.for_camera(cam) for cam in cameras}
    cam_usage = dict.fromkeys(cameras, 0)
    cam_pending = dict.fromkeys(cameras, 0)
    by_camera: dict[str, list[SegmentInfo]] = {}
    held_segs: list[SegmentInfo] = []
    for cam in cameras:
        young_from = now_ms - resolved[cam].min_age_ms
        usage = pending_c = 0
        mine: list[SegmentInfo] = []
        for s in per_cam[cam]:
            state = s.state
            if state == STORED:
                usage += s.size
                if s.end_ms <= young_from:
                    mine.append(s)
            elif state != DELETED:
                usage += s.size
                if state == PENDING_DELETE:
                    pending_c += s.size
        cam_usage[cam], cam_pending[cam] = usage, pending_c
        # Only old-enough stored segments need the hold check: nothing else can be selected.
        starts, max_ends = index.spans(cam)
        if starts:
            for s in mine:
                i = bisect_left(starts, s.end_ms)
                if i and max_ends[i - 1] > s.start_ms:
                    held_segs.append(s)
        by_camera[cam] = _sorted(mine)
    # Concatenated sorted runs: timsort merges them instead of sorting from scratch.
    eligible = _sorted([s for cam in cameras for s in by_camera[cam]])
    held = set(map(_ID, held_segs))
    usage_before = sum(cam_usage.values())
    pending = sum(cam_pending.values())
    cam_projected = {cam: cam_usage[cam] - cam_pending[cam] for cam in cameras}
    args = (eligible, by_camera)
    rest = (rules, resolved, cam_projected, usage_before, usage_before - pending, now_ms)

    chosen, unmet = _select(*args, held, *rest)
    # "Kept only because of holds": held segments the same rules pick when no hold exists.
    would = _select(*args, set(), *rest)[0] if held else {}

    deletions = tuple(Deletion(s, chosen[s.id]) for s in eligible if s.id in chosen)
    gone_by_cam: dict[str, list[SegmentInfo]] = {cam: [] for cam in cameras}
    for d in deletions:
        gone_by_cam[d.segment.camera].append(d.segment)  # stays oldest first
    held_by_cam: dict[str, list[SegmentInfo]] = {cam: [] for cam in cameras}
    for s in held_segs:
        held_by_cam[s.camera].append(s)
    per_camera: dict[str, CameraPreview] = {}
    for cam in cameras:
        gone = gone_by_cam[cam]
        kept = [s for s in held_by_cam[cam] if s.id in would]
        gone_bytes = sum(s.size for s in gone)
        per_camera[cam] = CameraPreview(
            camera=cam,
            delete_count=len(gone),
            delete_bytes=gone_bytes,
            oldest_start_ms=gone[0].start_ms if gone else None,
            newest_start_ms=gone[-1].start_ms if gone else None,
            held_count=len(kept),
            held_bytes=sum(s.size for s in kept),
            usage_before=cam_usage[cam],
            usage_after=cam_projected[cam] - gone_bytes,
        )
    return Plan(
        deletions=deletions,
        per_camera=MappingProxyType(per_camera),
        usage_before=usage_before,
        usage_after=usage_before - pending - sum(d.segment.size for d in deletions),
        pending_bytes=pending,
        quota_unmet=unmet,
    )


def emergency_rules(rules: RuleSet, usage: int, need: int) -> RuleSet:
    """``rules`` with a quota that frees at least ``need`` of ``usage`` bytes, oldest first across cameras.

    The storage-full sweep: the same plan (holds, ``min_age`` and every rule
    still apply), with a quota triggered now whose low watermark is
    ``usage - need`` (or the configured quota's, if that asks for more).
    """
    if need <= 1 or usage < 2:
        return rules
    target = float(usage - need)
    q = rules.quota_bytes
    if q is not None and usage > rules.high_watermark * q:
        target = min(target, rules.low_watermark * q)
    quota = usage - 1  # high watermark 1.0: usage is above it, so the quota triggers
    low = max(target, 0.0) / quota
    if low >= 1.0:
        return rules
    return replace(rules, quota_bytes=quota, high_watermark=1.0, low_watermark=max(low, 1e-12))
