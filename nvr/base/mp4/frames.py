"""Sample times of a clip (or any fragmented MP4) on its presentation timeline, for tests and verification."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from nvr.base.mp4.boxes import Reader, iter_boxes
from nvr.base.mp4.fragments import parse_segment
from nvr.base.mp4.moov import Track
from nvr.base.mp4.rewrite import ntp_to_ms


@dataclass(frozen=True)
class FrameTime:
    """One sample: its track, its decode and composition (presentation) times in seconds, its sync flag."""

    track_id: int
    handler: str
    decode_s: Fraction
    composition_s: Fraction
    sync: bool


@dataclass(frozen=True)
class ProducerTime:
    """One ``prft``: the wall time (Unix ms) of the sample of ``track_id`` presented at ``media_time``."""

    track_id: int
    wall_ms: int
    media_time: int


def timeline_offset(track: Track, movie_timescale: int) -> Fraction:
    """Seconds to add to a media time / timescale for the presentation time after the track's edit list.

    Only the leading empty edit and the first media edit's start are applied (the shape
    clips have); no edits means the media timeline is the presentation timeline.
    """
    offset = Fraction(0)
    for edit in track.edits:
        if edit.media_time == -1:
            offset += Fraction(edit.duration, movie_timescale)
        else:
            return offset - Fraction(edit.media_time, track.timescale)
    return offset


def frame_times(clip: bytes | memoryview) -> list[FrameTime]:
    """Every sample of the file, in file order, timed on its presentation timeline (edit list applied)."""
    seg = parse_segment(clip)
    out = []
    offsets = {t.track_id: timeline_offset(t, seg.init.movie_timescale) for t in seg.init.tracks}
    for f in seg.fragments:
        for traf in f.trafs:
            track = seg.init.track(traf.track_id)
            t = traf.decode_time
            for s in traf.samples:
                decode = Fraction(t, track.timescale) + offsets[track.track_id]
                out.append(FrameTime(track.track_id, track.handler, decode,
                                     decode + Fraction(s.cto, track.timescale), s.sync))
                t += s.duration
    return out


def producer_times(clip: bytes | memoryview) -> list[ProducerTime]:
    """The ``prft`` boxes of the file, in order."""
    out = []
    for b in iter_boxes(clip, 0, len(clip)):
        if b.type == b"prft":
            r = Reader(clip, b)
            version, _ = r.full_header()
            track_id = r.u32()
            ntp = r.u64()
            out.append(ProducerTime(track_id, ntp_to_ms(ntp), r.uint(bool(version))))
    return out

