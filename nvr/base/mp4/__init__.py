"""nvr's fragmented-MP4 box library: parse stored segments, stitch clips at the box level (pure, no I/O).

Modules, lowest first: ``boxes`` (box headers, strict field reads, writing boxes),
``moov`` (tracks of an init part), ``fragments`` (a segment's moof/mdat pairs),
``rewrite`` (one fragment's new decode times, sequence, sample entry and prft),
``initseg`` (a clip's ftyp + moov), ``stitch`` (the clip plan and its bytes),
``frames`` (sample times of a clip, for verification), ``skeleton`` (a segment's boxes
without its media, kept in the index so a clip is planned before any footage is read).
"""

from nvr.base.mp4.boxes import Mp4Error
from nvr.base.mp4.fragments import Fragment, Sample, Segment, Traf, parse_segment
from nvr.base.mp4.frames import FrameTime, ProducerTime, frame_times, producer_times
from nvr.base.mp4.moov import Init, Track
from nvr.base.mp4.skeleton import parse_skeleton, skeleton
from nvr.base.mp4.stitch import (
    Piece,
    PlacedSegment,
    StitchPlan,
    iter_clip,
    iter_clip_range,
    plan_clip,
    render_head,
)

__all__ = [
    "Fragment", "FrameTime", "Init", "Mp4Error", "Piece", "PlacedSegment", "ProducerTime", "Sample", "Segment",
    "StitchPlan", "Track", "Traf", "frame_times", "iter_clip", "iter_clip_range", "parse_segment", "parse_skeleton",
    "plan_clip", "producer_times", "render_head", "skeleton",
]
