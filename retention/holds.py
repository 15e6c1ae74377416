"""Holds as a request, a record and their JSON form, and the one rule for what a hold covers.

A hold keeps footage from being deleted: ``retention.legalholds.HoldManager``
places and releases them, ``retention.store`` keeps them (never deleted, a
release is recorded on the row), ``retention.policy`` and the sweep honour
them through :func:`covered_by`, which is the policy's own ``held_by``.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nvr.base.errors import FieldError
from nvr.base.ids import CAMERA_ID_HINT, is_camera_id
from nvr.base.times import ms_to_rfc3339, parse_time_ms
from retention.policy import Hold, held_by

HOLD_KEYS = ("case_id", "cameras", "start", "end", "reason", "expires")


class HoldInputError(FieldError, ValueError):
    """A hold request is invalid; ``field`` names the offending key."""


@dataclass(frozen=True)
class HoldRequest:
    """A validated request to place a hold (:func:`parse_hold_request`)."""

    case_id: str
    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int | None
    reason: str
    expires_ms: int | None


@dataclass(frozen=True)
class HoldRecord:
    """A hold as stored; :meth:`policy` gives what the decision needs."""

    id: str
    case_id: str
    cameras: tuple[str, ...] | None  # None: every camera
    start_ms: int
    end_ms: int | None
    reason: str
    expires_ms: int | None
    created_ms: int
    created_by: str
    released_ms: int | None = None
    released_by: str | None = None
    release_reason: str | None = None

    def policy(self) -> Hold:
        """The hold as :func:`retention.policy.plan` sees it."""
        return Hold(self.id, None if self.cameras is None else frozenset(self.cameras), self.start_ms,
                    self.end_ms, self.expires_ms, self.released_ms is not None)

    def state(self, now_ms: int) -> str:
        """``"active"``, ``"expired"`` (at ``expires_ms``) or ``"released"``."""
        if self.released_ms is not None:
            return "released"
        return "active" if self.policy().active(now_ms) else "expired"

    def active(self, now_ms: int) -> bool:
        """Protects footage at ``now_ms``: neither released nor expired."""
        return self.state(now_ms) == "active"


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
            raise HoldInputError("cameras", f"{c!r} is not a camera id ({CAMERA_ID_HINT})")
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
    """The reason a release must give (1-1000 characters), stripped."""
    if reason is None:
        raise HoldInputError("reason", "is required to release a hold")
    return _text({"reason": reason}, "reason", 1000)


def hold_json(h: HoldRecord, now: int) -> dict[str, Any]:
    """The API's form of a hold, with its state at ``now``."""
    t = ms_to_rfc3339
    return {
        "id": h.id, "case_id": h.case_id, "cameras": list(h.cameras) if h.cameras is not None else None,
        "start": t(h.start_ms), "end": t(h.end_ms) if h.end_ms is not None else None, "reason": h.reason,
        "expires": t(h.expires_ms) if h.expires_ms is not None else None, "created": t(h.created_ms),
        "created_by": h.created_by, "state": h.state(now),
        "released": t(h.released_ms) if h.released_ms is not None else None, "released_by": h.released_by,
        "release_reason": h.release_reason,
    }


def covered_by(holds: Iterable[HoldRecord], camera: str, start_ms: int, end_ms: int, now: int) -> HoldRecord | None:
    """The active hold (smallest id) covering this footage, or None: the retention policy's own rule."""
    by_id = {h.id: h for h in holds}
    hit = held_by([h.policy() for h in by_id.values()], camera, start_ms, end_ms, now)
    return None if hit is None else by_id[hit.id]
