"""Strict parsing of query parameters and JSON bodies: unknown or malformed input is a 400 naming it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from nvr.api.problem import Problem, bad_request
from nvr.base.ids import CAMERA_ID_HINT, is_camera_id, parse_segment_id
from nvr.base.times import parse_time_ms

# Footage can't predate the epoch here, and far-future years are typos.


def query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, refusing unknown and repeated ones."""
    allowed = set(allowed)
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            hint = f"; accepted: {', '.join(sorted(allowed))}" if allowed else "; this route takes none"
            raise bad_request(f"unknown query parameter {key!r}{hint}", parameter=key)
        if key in out:
            raise bad_request(f"query parameter {key!r} given more than once", parameter=key)
        out[key] = value
    return out


def parse_time(value: str, name: str) -> int:
    """Milliseconds from an RFC 3339 time with offset; naive or out-of-range times are refused."""
    try:
        return parse_time_ms(value)
    except ValueError as e:
        raise bad_request(f"{name}: {e}", parameter=name) from None


def time_range(q: dict[str, str], *, required: bool = True) -> tuple[int | None, int | None]:
    start = parse_time(q["start"], "start") if "start" in q else None
    end = parse_time(q["end"], "end") if "end" in q else None
    if required and (start is None or end is None):
        missing = "start" if start is None else "end"
        raise bad_request(f"{missing} is required (RFC 3339, e.g. 2026-11-29T13:00:00Z)", parameter=missing)
    if start is not None and end is not None and end <= start:
        raise bad_request("end must be after start", parameter="end")
    return start, end


def int_param(q: dict[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    if name not in q:
        return default
    raw = q[name]
    if not re.fullmatch(r"\d{1,12}", raw):
        raise bad_request(f"{name} must be a whole number between {minimum} and {maximum}, got {raw!r}", parameter=name)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise bad_request(f"{name} must be between {minimum} and {maximum}, got {value}", parameter=name)
    return value


def camera_id(raw: str) -> str:
    if not is_camera_id(raw):
        raise bad_request(f"{raw!r} is not a camera id ({CAMERA_ID_HINT})", parameter="id")
    return raw


def segment_id(raw: str) -> tuple[str, int]:
    parsed = parse_segment_id(raw)
    if parsed is None:
        raise bad_request(f"{raw!r} is not a segment id (camera:seq, e.g. gate-north:42)", parameter="id")
    return parsed


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (413 when too large, 415/400 when not a JSON object)."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, f"send the body as application/json (got {ctype or 'no content type'})")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    return data
