"""Placing one ffmpeg run's segments on the wall clock (pure logic, no I/O).

The rule (docs/timing.md states it with its bounds):

1. ffmpeg reports each closed segment's bounds in stream seconds, and nvr notes the wall clock when the
   line arrives: that is when the keyframe starting the next segment reached ffmpeg, i.e. the wall time
   of the segment's end plus the link's latency.
2. A run is anchored by its first segments: ``anchor = wall - stream end``. A line may come late while
   ffmpeg still catches up with what it buffered while probing the stream (2.4 s for MPEG-TS over UDP),
   so the recorder holds the run's first segments until two consecutive observations agree within
   ``bound``; the anchor is the earlier of those two (latency only ever delays), and every held segment
   is placed from it (their stream times are right, only their observations were late). The anchor is
   never before the run was spawned nor before the camera's previous segment ended (runs never overlap;
   the hole between two runs is a gap). The first segment starts where its media starts: ffmpeg counts
   it from stream time 0, which may be before its first frame.
3. Every later segment is checked: its predicted end ``anchor + stream end`` against the wall clock.
   Within ``bound`` the prediction stands (clamped so that no segment ends in the future); beyond it the
   run is re-anchored at this segment, whose end becomes the wall time, and the correction (wall minus
   prediction) is reported so that the segment is marked, audited and counted. The last segment of a
   run (closed because the stream ended, not by a next keyframe) says nothing about the clock: its
   line comes when ffmpeg gave up, so it is placed by the prediction.
4. Segments of one run are contiguous: each starts where the previous one ended, so a re-anchoring never
   opens a hole (ffmpeg received frames all along) and never overlaps (the end is at least the start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_BOUND_MS = 500
MAX_HELD = 6  # segments held for the anchor at most; then the earliest observation so far is taken


@dataclass(frozen=True)
class Placed:
    start_ms: int
    end_ms: int
    correction_ms: int  # 0, or by how much the run was re-anchored here: >0 the stream fell behind the wall clock


class RunClock:
    """Wall-clock placement of one run's segments."""

    def __init__(self, *, spawned_ms: int, floor_ms: int | None, bound_ms: int = DEFAULT_BOUND_MS):
        self.spawned_ms = spawned_ms
        self.floor_ms = floor_ms or 0
        self.bound_ms = bound_ms
        self.anchor_ms: int | None = None
        self.last_end_ms: int | None = None

    def settle(self, observations: Sequence[tuple[float, int]], *, final: bool = False) -> bool:
        """Anchor the run from its first segments' (stream end, wall at close); False: hold them for another.

        ``final``: no more will come (the run ended), anchor from what there is.
        """
        offsets = [wall - round(end * 1000) for end, wall in observations]
        if not offsets:
            return False
        if len(offsets) >= 2 and abs(offsets[-1] - offsets[-2]) <= self.bound_ms:
            anchor = min(offsets[-2:])
        elif final or len(offsets) >= MAX_HELD:
            anchor = min(offsets)
        else:
            return False
        self.anchor_ms = max(anchor, self.spawned_ms, self.floor_ms)
        return True

    def offset_ms(self, stream_end: float, wall_ms: int) -> int:
        """How far the wall clock is from where the anchor puts a segment end (0 before anchoring)."""
        return 0 if self.anchor_ms is None else wall_ms - (self.anchor_ms + round(stream_end * 1000))

    def place(self, stream_start: float, stream_end: float, wall_ms: int, *, media_s: float | None = None,
              check: bool = True) -> Placed:
        """Wall-clock bounds of a segment that closed at ``wall_ms`` (the run anchored by :meth:`settle`).

        ``media_s``: the first segment's media duration, when known. ``check=False``: ``wall_ms`` says
        nothing about the clock (a segment held for the anchor, or the run's last one), place by prediction.
        """
        if stream_end < stream_start:
            raise ValueError(f"segment ends ({stream_end}) before it starts ({stream_start})")
        if self.anchor_ms is None:
            self.settle([(stream_end, wall_ms)], final=True)
        assert self.anchor_ms is not None
        end_s, start_s = round(stream_end * 1000), round(stream_start * 1000)
        correction = 0
        if self.last_end_ms is None:
            if media_s is not None and 0 <= media_s * 1000 < end_s - start_s:
                start_s = end_s - round(media_s * 1000)
            start = max(self.anchor_ms + start_s, self.floor_ms, self.spawned_ms)
        else:
            start = self.last_end_ms
            offset = self.offset_ms(stream_end, wall_ms)
            if abs(offset) > self.bound_ms and check:
                self.anchor_ms += offset
                correction = offset
        end = min(self.anchor_ms + end_s, wall_ms)  # never in the future
        end = max(end, start)
        self.last_end_ms = end
        return Placed(start, end, correction)
