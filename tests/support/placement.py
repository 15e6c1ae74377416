"""Frame-by-frame placement of stored footage: where nvr put each frame against the time the frame shows.

A time-coded camera draws its capture wall time on every frame (``tests.support.timecode``). For a
stored segment, nvr places frame ``i`` at ``segment start + pts_i``; the difference to the time the
picture shows is the placement error. Used by the timing tests and ``python -m bench timing``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nvr.base.timeline import gaps
from storage.index import SegmentRow
from tests.support.timecode import frame_times


@dataclass(frozen=True)
class SegmentPlacement:
    """The placement errors of one stored segment's readable frames, in ms (placed minus shown)."""

    row: SegmentRow
    record: dict
    errors: tuple[int, ...]
    frames: int  # decoded video frames, readable or not

    @property
    def corrected(self) -> bool:
        """The run was re-anchored at this segment (a timestamp fault inside it), so it is marked."""
        return bool(self.record.get("placement_correction_ms"))

    @property
    def worst(self) -> int:
        return max((abs(e) for e in self.errors), default=0)


def placement_of(row: SegmentRow, record: dict, media: bytes, tmp: Path) -> SegmentPlacement:
    """Decode ``media`` (the segment's plaintext) and compare every frame's place with its time code."""
    with tempfile.NamedTemporaryFile(dir=tmp, suffix=".mp4") as f:
        f.write(media)
        f.flush()
        times = frame_times(f.name)
    errors = tuple(round(row.start_ms + pts * 1000) - wall for pts, wall in times if wall is not None)
    return SegmentPlacement(row=row, record=record, errors=errors, frames=len(times))


async def placements(rows: Sequence[SegmentRow], records: Sequence[dict],
                     read: Callable[[SegmentRow], Awaitable[bytes]], tmp: Path) -> list[SegmentPlacement]:
    """:func:`placement_of` every row (``records`` in the same order: the ledger's, by seq)."""
    by_seq = {r["seq"]: r for r in records}
    return [placement_of(row, by_seq[row.seq], await read(row), tmp) for row in rows]


def overlaps(rows: Sequence[SegmentRow]) -> list[tuple[str, str]]:
    """Pairs of consecutive segments of one camera that overlap (must be none)."""
    ordered = sorted(rows, key=lambda r: r.start_ms)
    return [(a.id, b.id) for a, b in zip(ordered, ordered[1:], strict=False) if b.start_ms < a.end_ms]


def timeline_gaps(rows: Sequence[SegmentRow], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The gaps of ``rows`` inside [start, end) by the product's own gap rule."""
    return gaps(((r.start_ms, r.end_ms) for r in rows), start_ms, end_ms)
