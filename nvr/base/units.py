"""Explicit units for durations and sizes, as written in the config and the API."""

from __future__ import annotations

import math
import re
from decimal import Decimal

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"30d"``, ``"12h"``, ``"10s"``, ``"250ms"`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '10s', '12h' or '30d', got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number of seconds, got {value}")
        if value < 0:
            raise ValueError(f"a duration can't be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '10s', '12h' or '30d', got {type(value).__name__}")
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(
            f"{value!r} is not a duration; write a number and a unit (ms, s, m, h, d, w), e.g. '30d'"
        )
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: str | int) -> int:
    """Bytes from ``"500GiB"``, ``"20GB"``, ``"512MiB"`` or a bare integer number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '500GiB', got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size can't be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as '500GiB' or a number of bytes, got {type(value).__name__}")
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(
            f"{value!r} is not a size; write a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '500GiB'"
        )
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_size(n: int) -> str:
    """Human-readable binary size for log lines."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_DURATION_FORMS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SIZE_FORMS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
               ("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def format_duration(seconds: float) -> str:
    """Seconds in the explicit-unit form the rules use (``"1h"``, ``"90s"``); parse_duration reads it back."""
    for unit, n in _DURATION_FORMS:
        q = seconds / n
        if q == int(q) and int(q) * n == seconds:
            return f"{int(q)}{unit}"
    # Decimal of the shortest repr: no exponent, and parse_duration gives back the same float.
    return f"{format(Decimal(repr(float(seconds))), 'f')}s"


def format_size_exact(n: int) -> str:
    """Bytes in the largest exact unit (``"500GiB"``, ``"1500B"``); parse_size reads it back equal."""
    best = f"{n}B"
    best_q = n
    for unit, size in _SIZE_FORMS:
        if n % size == 0 and n // size < best_q:
            best, best_q = f"{n // size}{unit}", n // size
    return best
