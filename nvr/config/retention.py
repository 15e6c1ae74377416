"""The retention rule model: limits, their checks, their JSON/TOML form and the deployment's floor.

The config (``[retention]``), the rules API and the retention stage all use
this one model; what a sweep deletes under it is ``retention.policy.plan``.

* A :class:`RuleSet` has a default :class:`Rule`, per-camera overrides and a
  bucket quota with high and low watermarks. An override changes a default
  limit field by field, it cannot remove one (``None`` means "inherit"): give
  a camera a very large ``max_age`` to keep it longer.
* ``min_age`` is at least one minute (:data:`MIN_AGE_FLOOR`) and falls back to
  24 h (:data:`DEFAULT_MIN_AGE`) when nothing sets it; ``max_age`` is at least
  the camera's resolved ``min_age``, so there is no separate one-hour floor
  (one-minute ``max_age`` with one-minute ``min_age`` is allowed; tests and
  demos use it). ``0`` limits, negative and non-finite values are refused.
* :class:`ResolvedRule` rounds ``min_age`` and ``max_age`` *up* to whole
  milliseconds, so rounding never deletes earlier.
* The JSON/TOML form always writes units (``"30d"``, ``"500GiB"``) and refuses
  bare numbers, ``null`` and unknown keys; every refusal is a
  :class:`RetentionRuleError` naming the field.

The deployment's floor (the config's ``retention.min_age``, :func:`with_floor`):

* footage younger than that is never deleted whatever a rule says, and with
  object lock it is also the GOVERNANCE retention ingest writes. A rule set
  whose ``min_age`` (default or any camera) is below it is refused, naming the
  field, so every accepted rule deletes only after S3 allows it.
* A rule set that gives no default ``min_age`` gets the floor (not the 24 h
  fallback): ``{"default": {"max_age": "1m"}}`` with a one-minute floor is a
  valid one-minute retention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from nvr.base.errors import FieldError
from nvr.base.ids import CAMERA_ID_HINT, is_camera_id
from nvr.base.units import format_duration, format_size_exact, parse_duration, parse_size

DEFAULT_MIN_AGE = 86400.0  # seconds: min_age when nothing sets it; also the config's retention.min_age default
MIN_AGE_FLOOR = 60.0  # seconds: below a minute, "never delete young footage" means nothing


class RetentionRuleError(FieldError, ValueError):
    """Retention rules are invalid; ``field`` names the offending one, e.g. ``cameras.gate.max_bytes``."""


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
        """The camera's override field by field over the default; ``min_age`` falls back to :data:`DEFAULT_MIN_AGE`."""
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
        raise RetentionRuleError(f"{prefix}.min_age", f"must be at least {format_duration(MIN_AGE_FLOOR)} "
                                 f"({MIN_AGE_FLOOR:g} s), got {rule.min_age:g} s")
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
        if not isinstance(cam, str) or not is_camera_id(cam):
            raise RetentionRuleError(f"cameras.{cam}", f"not a camera id ({CAMERA_ID_HINT})")
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
        if not isinstance(cam, str) or not is_camera_id(cam):
            raise RetentionRuleError(f"cameras.{cam}", f"not a camera id ({CAMERA_ID_HINT})")
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


def _rule_to_dict(rule: Rule) -> dict[str, str]:
    out: dict[str, str] = {}
    if rule.max_age is not None:
        out["max_age"] = format_duration(rule.max_age)
    if rule.max_bytes is not None:
        out["max_bytes"] = format_size_exact(rule.max_bytes)
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
        out["quota_bytes"] = format_size_exact(rules.quota_bytes)
    out["high_watermark"] = rules.high_watermark
    out["low_watermark"] = rules.low_watermark
    return out


# ---------------------------------------------------------- the deployment's floor


def with_floor(rules: RuleSet, floor: float) -> RuleSet:
    """``rules`` with the default ``min_age`` set to ``floor`` when unset; refuses any ``min_age`` below it."""
    if rules.default.min_age is None:
        rules = replace(rules, default=replace(rules.default, min_age=floor))
    validate_rules(rules)
    scopes = [("default", rules.default), *((f"cameras.{c}", r) for c, r in sorted(rules.cameras.items()))]
    for scope, rule in scopes:
        if rule.min_age is not None and rule.min_age < floor:
            raise RetentionRuleError(
                f"{scope}.min_age",
                f"{format_duration(rule.min_age)} is below retention.min_age ({format_duration(floor)}) of the config: "
                "footage younger than that is never deleted (and stays object-locked where enabled)")
    return rules


def parse_rules(data: Mapping[str, Any], floor: float) -> RuleSet:
    """A rule set from its JSON/TOML form, the default ``min_age`` being ``floor`` unless given."""
    if isinstance(data, Mapping) and isinstance(data.get("default", {}), Mapping):
        default = dict(data.get("default", {}))
        default.setdefault("min_age", format_duration(floor))
        data = {**data, "default": default}
    return with_floor(rules_from_dict(data), floor)
