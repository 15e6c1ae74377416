"""Placing one ffmpeg run's segments on the wall clock (pure logic, no I/O).

ffmpeg reports segment bounds in stream seconds. A run is anchored once, when
its first segment closes: ``anchor = wall-clock now - stream end``, but never
before the run was spawned nor before the camera's previous segment ended, so
runs never overlap and the hole between two runs is a gap. All segments of a
run are then ``anchor + stream time``: contiguous by construction. If the
stream drifts from the wall clock by more than a bound (a camera replaying a
buffer, a stalled clock), the run must end and a new one starts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placed:
    start_ms: int
    end_ms: int
    drift_ms: int  # wall clock minus the placed end: >0 the stream lags, <0 it runs ahead


class RunClock:
    """Wall-clock placement of one run's segments."""

    def __init__(self, *, spawned_ms: int, floor_ms: int | None, max_drift_ms: int):
        self.spawned_ms = spawned_ms
        self.floor_ms = floor_ms or 0
        self.max_drift_ms = max_drift_ms
        self.anchor_ms: int | None = None
        self.last_end_ms: int | None = None

    def place(self, stream_start: float, stream_end: float, wall_ms: int) -> Placed:
        """Wall-clock bounds of a segment that closed at ``wall_ms``."""
        if stream_end < stream_start:
            raise ValueError(f"segment ends ({stream_end}) before it starts ({stream_start})")
        if self.anchor_ms is None:
            self.anchor_ms = max(wall_ms - round(stream_end * 1000), self.spawned_ms, self.floor_ms)
            # The first segment starts where the stream started, which the anchor already is.
            start = self.anchor_ms + round(stream_start * 1000)
            start = max(start, self.floor_ms)
        else:
            start = self.anchor_ms + round(stream_start * 1000)
        end = self.anchor_ms + round(stream_end * 1000)
        if self.last_end_ms is not None:
            # Segments of one run are contiguous: close rounding holes, never overlap.
            start = self.last_end_ms
        end = max(end, start)
        self.last_end_ms = end
        return Placed(start, end, wall_ms - end)

    def drifted(self, placed: Placed) -> bool:
        return abs(placed.drift_ms) > self.max_drift_ms
