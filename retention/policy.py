"""The pure retention decision: which stored segments a sweep deletes, and why.

No I/O, no clock, no asyncio: :func:`plan` takes the segments the index knows,
the rules, the holds and ``now_ms`` and returns a :class:`Plan`. The same input
(in any order) always gives the same plan, so a preview shown to an operator is
exactly what the sweep will do at that instant.

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
* Times: ``min_age`` and ``max_age`` are rounded *up* to whole milliseconds, so
  rounding never deletes earlier. A segment is young while
  ``now - end < min_age`` and too old when ``now - end > max_age`` (exactly
  ``max_age`` old is kept). A hold expires at ``expires_ms`` (active while
  ``now < expires_ms``).
* Floors: ``min_age`` must be at least one minute (the config's floor too);
  ``max_age`` must be at least the camera's resolved ``min_age``, so there is
  no separate one-hour floor: one-minute ``max_age`` with one-minute
  ``min_age`` is allowed (tests and demos use it).
* An override cannot remove a default limit, only change it (``None`` means
  "inherit"); give a camera a very large ``max_age`` to keep it longer.
* "Kept only because of holds" (the preview's ``held_*``) = held segments that
  the same rules select when the plan is computed again without any hold.
* Sizes are the bytes in the bucket: the *object* size (encrypted), which is
  what :meth:`SegmentInfo.from_row` takes from an index row.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import compress, count, islice
from operator import attrgetter, eq
from types import MappingProxyType
from typing import Any, Literal

from nvr.config import CAMERA_ID_RE
from nvr.errors import NvrError
from nvr.units import parse_duration, parse_size

__all__ = [
    "DEFAULT_MIN_AGE",
    "MIN_AGE_FLOOR",
    "CameraPreview",
    "Deletion",
    "Hold",
    "Plan",
    "ResolvedRule",
    "RetentionRuleError",
    "Rule",
    "RuleName",
    "RuleSet",
    "SegmentInfo",
    "is_held",
    "plan",
    "rules_from_dict",
    "rules_to_dict",
    "validate_rules",
]

DEFAULT_MIN_AGE = 86400.0  # seconds: the default, same as the config's retention.min_age
MIN_AGE_FLOOR = 60.0  # seconds: below a minute, "never delete young footage" means nothing

STORED = "stored"
PENDING_DELETE = "pending_delete"
DELETED = "deleted"

RuleName = Literal["max_age", "max_bytes", "quota"]


class RetentionRuleError(NvrError, ValueError):
    """Retention rules are invalid; ``field`` names the offending one, e.g. ``cameras.gate.max_bytes``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# ---------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """Limits for the default or for one camera; ``None`` means "not set" (inherit, or no limit).

    ``max_age`` and ``min_age`` are seconds, ``max_bytes`` is bytes.
    """

    max_age: float | None = None
    max_bytes: int | None = None
    min_age: float | None = None


@dataclass(frozen=True)
class ResolvedRule:
    """A camera's effective limits: its override over the default, ``min_age`` always set."""

    max_age: float | None
    max_bytes: int | None
    min_age: float

    @property
    def min_age_ms(self) -> int:
        return math.ceil(self.min_age * 1000)

    @property
    def max_age_ms(self) -> int | None:
        return None if self.max_age is None else math.ceil(self.max_age * 1000)


@dataclass(frozen=True)
class RuleSet:
    """The default rule, per-camera overrides and the bucket quota with its watermarks."""

    default: Rule = field(default_factory=Rule)
    cameras: Mapping[str, Rule] = field(default_factory=dict)
    quota_bytes: int | None = None
    high_watermark: float = 0.9
    low_watermark: float = 0.8

    def __post_init__(self) -> None:
        # A read-only copy, so a RuleSet really is immutable and compares by content.
        if isinstance(self.cameras, Mapping):
            object.__setattr__(self, "cameras", MappingProxyType(dict(self.cameras)))

    def __hash__(self) -> int:
        return hash((self.default, tuple(sorted(self.cameras.items())), self.quota_bytes,
                     self.high_watermark, self.low_watermark))

    def for_camera(self, camera: str) -> ResolvedRule:
        """The camera's override field by field over the default; ``min_age`` falls back to 24 h."""
        return _resolve(self.default, self.cameras.get(camera) or Rule())


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _resolve(default: Rule, override: Rule) -> ResolvedRule:
    return ResolvedRule(
        max_age=_first(override.max_age, default.max_age),
        max_bytes=_first(override.max_bytes, default.max_bytes),
        min_age=float(_first(override.min_age, default.min_age, DEFAULT_MIN_AGE)),
    )


def _is_number(v: Any) -> bool:
    # bool is an int in Python; a rule of True seconds is a mistake, not a number.
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_rule(rule: Any, prefix: str) -> None:
    if not isinstance(rule, Rule):
        raise RetentionRuleError(prefix, f"must be a Rule, got {type(rule).__name__}")
    for name in ("max_age", "min_age"):
        v = getattr(rule, name)
        if v is None:
            continue
        f = f"{prefix}.{name}"
        if not _is_number(v) or not math.isfinite(v):
            raise RetentionRuleError(f, f"must be a finite number of seconds, got {v!r}")
        if v < 0:
            raise RetentionRuleError(f, f"can't be negative, got {v:g} s")
    if rule.max_age is not None and rule.max_age == 0:
        raise RetentionRuleError(f"{prefix}.max_age", "0 would delete everything; omit max_age for no age limit")
    if rule.min_age is not None and rule.min_age < MIN_AGE_FLOOR:
        raise RetentionRuleError(f"{prefix}.min_age", f"must be at least 1m (60 s), got {rule.min_age:g} s")
    if rule.max_bytes is not None:
        f = f"{prefix}.max_bytes"
        if not isinstance(rule.max_bytes, int) or isinstance(rule.max_bytes, bool):
            raise RetentionRuleError(f, f"must be a whole number of bytes, got {rule.max_bytes!r}")
        if rule.max_bytes < 0:
            raise RetentionRuleError(f, f"can't be negative, got {rule.max_bytes}")
        if rule.max_bytes == 0:
            raise RetentionRuleError(f, "0 would delete everything; omit max_bytes for no size limit")


def _check_ages(resolved: ResolvedRule, rule: Rule, prefix: str) -> None:
    if resolved.max_age is None or resolved.max_age >= resolved.min_age:
        return
    # Blame the field this scope sets: its own max_age, else the min_age that overtook an inherited max_age.
    name = "max_age" if rule.max_age is not None else "min_age"
    raise RetentionRuleError(
        f"{prefix}.{name}",
        f"max_age ({resolved.max_age:g} s) is below min_age ({resolved.min_age:g} s): a rule that would "
        "delete everything as soon as min_age allows is refused; raise max_age or lower min_age",
    )


def validate_rules(rules: RuleSet) -> None:
    """Raise :class:`RetentionRuleError` naming the first invalid field of ``rules``; return if valid.

    Checks, in a fixed order (default, cameras by name, quota, watermarks):
    no negative or non-finite values; ``max_age`` not 0 and not below the
    resolved ``min_age``; ``min_age`` at least one minute; ``max_bytes`` not 0;
    ``quota_bytes`` above 0; ``0 < low_watermark < high_watermark <= 1``;
    camera names that are valid camera ids.
    """
    if not isinstance(rules, RuleSet):
        raise RetentionRuleError("rules", f"must be a RuleSet, got {type(rules).__name__}")
    _check_rule(rules.default, "default")
    _check_ages(_resolve(rules.default, Rule()), rules.default, "default")
    if not isinstance(rules.cameras, Mapping):
        raise RetentionRuleError("cameras", f"must be a mapping of camera id to Rule, got {type(rules.cameras).__name__}")
    for cam in sorted(rules.cameras, key=str):
        if not isinstance(cam, str) or not CAMERA_ID_RE.match(cam):
            raise RetentionRuleError(f"cameras.{cam}", "not a camera id (1-63 of a-z, 0-9, '_', '-')")
        _check_rule(rules.cameras[cam], f"cameras.{cam}")
        _check_ages(rules.for_camera(cam), rules.cameras[cam], f"cameras.{cam}")
    q = rules.quota_bytes
    if q is not None:
        if not isinstance(q, int) or isinstance(q, bool):
            raise RetentionRuleError("quota_bytes", f"must be a whole number of bytes, got {q!r}")
        if q <= 0:
            raise RetentionRuleError("quota_bytes", f"must be above 0, got {q}; omit it for no quota")
    hi, lo = rules.high_watermark, rules.low_watermark
    for name, v in (("high_watermark", hi), ("low_watermark", lo)):
        if not _is_number(v) or not math.isfinite(v):
            raise RetentionRuleError(name, f"must be a fraction such as 0.9, got {v!r}")
    if not 0 < hi <= 1:
        raise RetentionRuleError("high_watermark", f"must be above 0 and at most 1, got {hi:g}")
    if not 0 < lo:
        raise RetentionRuleError("low_watermark", f"must be above 0, got {lo:g}")
    if not lo < hi:
        raise RetentionRuleError("low_watermark", f"must be below high_watermark ({hi:g}), got {lo:g}")


# ------------------------------------------------------------- JSON / TOML form

_TOP_KEYS = ("default", "cameras", "quota_bytes", "high_watermark", "low_watermark")
_RULE_KEYS = ("max_age", "max_bytes", "min_age")
_DURATION_FIELDS = frozenset({"max_age", "min_age"})


def _refuse_unknown(data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise RetentionRuleError(f"{prefix}{unknown[0]}", f"unknown key; expected one of {', '.join(allowed)}")


def _parse_units(value: Any, f: str, parse: Callable[[str], float | int], example: str) -> Any:
    if value is None:
        raise RetentionRuleError(f, "null is not a value; omit the key to leave it unset")
    if not isinstance(value, str):
        # parse_duration/parse_size accept bare numbers; this API does not: units are explicit.
        raise RetentionRuleError(f, f"units are explicit: write a string such as {example!r}, got {value!r}")
    try:
        return parse(value)
    except ValueError as e:
        raise RetentionRuleError(f, str(e)) from None


def _rule_from_dict(data: Any, prefix: str) -> Rule:
    if not isinstance(data, Mapping):
        raise RetentionRuleError(prefix, f"must be a table/object, got {type(data).__name__}")
    _refuse_unknown(data, _RULE_KEYS, f"{prefix}.")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        f = f"{prefix}.{key}"
        if key in _DURATION_FIELDS:
            values[key] = _parse_units(raw, f, parse_duration, "30d")
        else:
            values[key] = _parse_units(raw, f, parse_size, "500GiB")
    return Rule(**values)


def rules_from_dict(data: Mapping[str, Any]) -> RuleSet:
    """A validated :class:`RuleSet` from its JSON/TOML form.

    ``{"default": {"max_age": "30d", "max_bytes": "500GiB", "min_age": "24h"},
    "cameras": {"gate": {"max_age": "7d"}}, "quota_bytes": "2TiB",
    "high_watermark": 0.9, "low_watermark": 0.8}``; every key is optional.
    Durations and sizes must be strings with a unit (bare numbers are refused),
    watermarks are plain fractions, ``null`` and unknown keys are refused.
    Raises :class:`RetentionRuleError` naming the field.
    """
    if not isinstance(data, Mapping):
        raise RetentionRuleError("rules", f"must be a table/object, got {type(data).__name__}")
    _refuse_unknown(data, _TOP_KEYS, "")
    default = _rule_from_dict(data["default"], "default") if "default" in data else Rule()
    cams_raw = data.get("cameras", {})
    if not isinstance(cams_raw, Mapping):
        raise RetentionRuleError("cameras", f"must be a table/object of camera id to rule, got {type(cams_raw).__name__}")
    cameras: dict[str, Rule] = {}
    for cam in sorted(cams_raw, key=str):
        if not isinstance(cam, str) or not CAMERA_ID_RE.match(cam):
            raise RetentionRuleError(f"cameras.{cam}", "not a camera id (1-63 of a-z, 0-9, '_', '-')")
        cameras[cam] = _rule_from_dict(cams_raw[cam], f"cameras.{cam}")
    quota = _parse_units(data["quota_bytes"], "quota_bytes", parse_size, "2TiB") if "quota_bytes" in data else None
    marks: dict[str, float] = {}
    for name in ("high_watermark", "low_watermark"):
        if name in data:
            v = data[name]
            if not _is_number(v):
                raise RetentionRuleError(name, f"must be a fraction such as 0.9, got {v!r}")
            marks[name] = float(v)
    rules = RuleSet(default=default, cameras=cameras, quota_bytes=quota, **marks)
    validate_rules(rules)
    return rules


_DURATION_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SIZE_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
               ("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def format_duration(seconds: float) -> str:
    """Seconds in the explicit-unit form the rules use (``"1h"``, ``"90s"``); parse_duration reads it back."""
    for unit, n in _DURATION_UNITS:
        q = seconds / n
        if q == int(q) and int(q) * n == seconds:
            return f"{int(q)}{unit}"
    # Decimal of the shortest repr: no exponent, and parse_duration gives back the same float.
    return f"{format(Decimal(repr(float(seconds))), 'f')}s"


def _format_size(n: int) -> str:
    best = f"{n}B"
    best_q = n
    for unit, size in _SIZE_UNITS:
        if n % size == 0 and n // size < best_q:
            best, best_q = f"{n // size}{unit}", n // size
    return best


def _rule_to_dict(rule: Rule) -> dict[str, str]:
    out: dict[str, str] = {}
    if rule.max_age is not None:
        out["max_age"] = format_duration(rule.max_age)
    if rule.max_bytes is not None:
        out["max_bytes"] = _format_size(rule.max_bytes)
    if rule.min_age is not None:
        out["min_age"] = format_duration(rule.min_age)
    return out


def rules_to_dict(rules: RuleSet) -> dict[str, Any]:
    """The JSON/TOML form of ``rules``, with explicit units; :func:`rules_from_dict` reads it back equal.

    Unset fields are omitted (TOML has no null); ``default``, ``cameras`` and
    the watermarks are always present so the shape is stable for the API.
    """
    out: dict[str, Any] = {
        "default": _rule_to_dict(rules.default),
        "cameras": {cam: _rule_to_dict(rules.cameras[cam]) for cam in sorted(rules.cameras)},
    }
    if rules.quota_bytes is not None:
        out["quota_bytes"] = _format_size(rules.quota_bytes)
    out["high_watermark"] = rules.high_watermark
    out["low_watermark"] = rules.low_watermark
    return out


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
        return sum(d.segment.size for d in self.deletions)

    @property
    def ids(self) -> tuple[str, ...]:
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
