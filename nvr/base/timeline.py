"""The gap rule: where recorded time has a hole, the same for the timeline, clips, verification and ingest."""

from __future__ import annotations

from collections.abc import Iterable

# Segments of one run abut exactly; rounding of stream times leaves a few ms. More than this is a hole.
GAP_THRESHOLD_MS = 100

Span = tuple[int, int]


def is_gap(prev_end_ms: int, next_start_ms: int) -> bool:
    """True when the time between two recorded spans is a gap, not rounding."""
    return next_start_ms - prev_end_ms > GAP_THRESHOLD_MS


def recorded_ranges(spans: Iterable[Span], start_ms: int, end_ms: int) -> list[Span]:
    """The spans clipped to [start, end), those closer than the gap threshold merged (pure)."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        s, e = max(a, start_ms), min(b, end_ms)
        if e <= s:
            continue
        if out and not is_gap(out[-1][1], s):
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def gaps(spans: Iterable[Span], start_ms: int, end_ms: int) -> list[Span]:
    """The holes in [start, end) that ``spans`` leave, each longer than the gap threshold (pure)."""
    out: list[Span] = []
    cursor = start_ms
    for s, e in sorted(spans):
        if e <= start_ms or s >= end_ms:
            continue
        if is_gap(cursor, s):
            out.append((cursor, min(s, end_ms)))
        cursor = max(cursor, e)
    if is_gap(cursor, end_ms):
        out.append((cursor, end_ms))
    return out


def merge_ranges(spans: Iterable[Span], start_ms: int, end_ms: int) -> tuple[list[Span], list[Span]]:
    """Recorded ranges and gaps of a window, by the one rule above (pure)."""
    spans = list(spans)
    return recorded_ranges(spans, start_ms, end_ms), gaps(spans, start_ms, end_ms)
