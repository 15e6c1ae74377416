"""Wall-clock times as integer milliseconds since the epoch, and their RFC 3339 UTC form."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def _minute(minute: int) -> str:
    """``2026-11-29T13:01:`` of a minute since the epoch."""
    return (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")


def ms_to_rfc3339(ms: int) -> str:
    """``2026-11-29T13:01:00.123Z``: always UTC, always milliseconds, so strings sort as times do.

    The date and time to the minute come from a cache: a day's HLS playlist formats 8,640 of
    these, and strftime for each was a quarter of its time.
    """
    minute, rest = divmod(ms, 60_000)
    secs, milli = divmod(rest, 1000)
    return f"{_minute(minute)}{secs:02d}.{milli:03d}Z"


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# RFC 3339 section 5.6 exactly: ASCII digits, "T", fractional seconds, "Z" or a numeric offset.
# Nothing before or after (no spaces, no NUL): what is refused is never silently truncated.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?P<frac>\.[0-9]{1,9})?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:[0-9]{2})", re.ASCII)


def parse_rfc3339(text: str) -> int:
    """Milliseconds from an RFC 3339 time with an offset or ``Z``; naive or other forms are refused."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        if isinstance(text, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9:.]+", text, re.ASCII):
            raise ValueError(f"{text!r} has no UTC offset; add 'Z' or an offset such as +01:00")
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-29T13:00:00Z")
    tz = m["tz"].upper()
    frac = (m["frac"] or "")[:7]  # datetime takes at most microseconds; ms are kept
    try:
        dt = datetime.fromisoformat(f"{m['date']}T{m['time']}{frac}{'+00:00' if tz == 'Z' else tz}")
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid time: {e}") from None
    # Integer arithmetic: int(dt.timestamp() * 1000) lost a millisecond to float rounding (1987-05-10T10:40:21.915Z).
    return (dt - _EPOCH) // timedelta(milliseconds=1)


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
