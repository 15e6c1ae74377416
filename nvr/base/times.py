"""Wall-clock times as integer milliseconds since the epoch, and their RFC 3339 UTC form."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_rfc3339(ms: int) -> str:
    """``2026-11-29T13:01:00.123Z``: always UTC, always milliseconds, so strings sort as times do."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def parse_rfc3339(text: str) -> int:
    """Milliseconds from an RFC 3339 time with an offset or ``Z``; naive times are refused."""
    s = text.strip()
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-29T13:00:00Z") from None
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add 'Z' or an offset such as +01:00")
    return int(dt.timestamp() * 1000)


MIN_MS = 0
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


def parse_time_ms(value: str) -> int:
    """Milliseconds from an RFC 3339 time with offset; ValueError for a naive, malformed or out-of-range one."""
    try:
        ms = parse_rfc3339(value)
    except (ValueError, OverflowError, OSError) as e:
        raise ValueError(str(e)) from None
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError(f"{value!r} is outside 1970-01-01 .. 9999-12-31")
    return ms
