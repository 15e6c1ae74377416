"""HLS over the stored segments: a VOD playlist of a range, and the init and media segments it names (pure).

The playlist (:func:`plan_playlist`, :func:`render_playlist`) lists every
stored segment overlapping the range, each as one media segment, with its
wall start (``EXT-X-PROGRAM-DATE-TIME``) and length (``EXTINF``, from the
index). A hole between two segments (the gap rule, ``nvr.base.timeline``) is
an ``EXT-X-DISCONTINUITY``: HLS has no way to show the hole itself, so the
playlist's timeline skips it and the date-time tags say where each segment
really is. A codec change (the clip's rule: another track layout or another
sample entry, ``btrt`` ignored, ``hev1``/``hvc1`` alike) is a new ``EXT-X-MAP``
and, as RFC 8216 4.3.2.3 requires, a discontinuity.

The playlist's timeline: inside a discontinuity sequence a segment starts
where the wall clock puts it after the sequence's first one; a sequence starts
where the one before ends (plus some room, ``ROOM_MS``). So time runs on
without a jump inside a sequence and never steps back across them (players that keep one decoder timeline,
ffmpeg's among them, see no step back either). A media segment
(:func:`plan_media`) is the stored segment's fragments, rewritten by the clip
library: its part of the clip plan of itself and the segment before it in its
sequence (whose boxes only are needed), so two segments meet exactly as in a
clip; every decode time is moved onto the playlist's timeline, plus
:data:`LEAD_S` (room for samples decoded before their segment's wall start,
such as audio ahead of the first video frame). Fragments keep their ``prft``
wall times and their mdat bytes. The init (:func:`init_segment`) is the
``ftyp`` + ``moov`` of the first segment of a configuration, without edit
lists: every segment places itself by its decode times, so one init serves
them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import NamedTuple

from nvr.base import timeline
from nvr.base.mp4 import (
    Init,
    Mp4Error,
    Piece,
    PlacedSegment,
    Segment,
    parse_segment,
    plan_clip,
    render_head,
)
from nvr.base.mp4.frames import timeline_offset
from nvr.base.mp4.initseg import TrackInit, build_init, hvc1_entry
from nvr.base.mp4.moov import entry_key
from nvr.base.times import ms_to_rfc3339
from storage.index import SegmentRow

VERSION = 7
# Media time of the playlist's t=0 on every track, seconds. A segment's audio may start a little before
# its first video frame (its wall start); without this room its decode time would be negative.
LEAD_S = 10
# Media time left free after a discontinuity's last segment, at most: that segment's footage may run a
# little past its index end (a run's last segment is placed by prediction), and a player that keeps one
# decoder timeline across discontinuities (ffmpeg) must not see time step back. Up to the real hole, and
# under the 10 s beyond which ffmpeg calls a step forward a timestamp discontinuity.
ROOM_MS = 5000
# The run in an object key (``<camera>/.../<stamp>_<run>-<n>.seg``): segments of one ffmpeg run share
# their init, so only a run's first segment says what the codec configuration is.
_RUN_RE = re.compile(r"_(r\d{13})-\d{6}\.seg$")


# ---------------------------------------------------------------------- the playlist


class MediaSegment(NamedTuple):
    """One entry of the playlist: a stored segment and where it sits on the playlist's timeline.

    A named tuple: a camera-day's playlist has 8,640 of them, built in a quarter of a frozen
    dataclass's time."""

    row: SegmentRow
    at_ms: int  # where its media time starts (less LEAD_S): the wall clock's inside a sequence
    duration_ms: int  # its EXTINF: up to the next one's start inside a discontinuity sequence, else its own length
    discontinuity: bool  # a gap (or a codec change) before it
    init: SegmentRow | None  # a new EXT-X-MAP before it names this segment's init; None: the last one holds
    after: SegmentRow | None  # the segment before it in its discontinuity sequence, which its times continue


@dataclass(frozen=True)
class Playlist:
    """A VOD playlist of ``camera`` over ``[start_ms, end_ms)``, decided (render it with :func:`render_playlist`)."""

    camera: str
    start_ms: int
    end_ms: int
    segments: tuple[MediaSegment, ...]
    gaps: tuple[timeline.Span, ...]  # the holes of the range, by the gap rule

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: whole seconds no EXTINF exceeds once rounded (RFC 8216 4.3.3.1)."""
        return max(1, max((math.ceil(s.duration_ms / 1000) for s in self.segments), default=1))

    @property
    def duration_ms(self) -> int:
        """The playlist's length: its EXTINFs added up (the footage, without the holes)."""
        return sum(s.duration_ms for s in self.segments)


def in_range(rows: Sequence[SegmentRow], start_ms: int, end_ms: int) -> list[SegmentRow]:
    """The rows with footage overlapping ``[start_ms, end_ms)``, in wall-clock order (the clip's rule)."""
    return sorted((r for r in rows if r.end_ms > start_ms and r.start_ms < end_ms and r.end_ms > r.start_ms),
                  key=lambda r: (r.start_ms, r.seq))


def run_of(row: SegmentRow) -> str | None:
    """The recorder run a segment came from, read from its object key (None for a key of another form)."""
    m = _RUN_RE.search(row.object_key)
    return m.group(1) if m else None


def probes(rows: Sequence[SegmentRow]) -> list[int]:
    """Indexes of the rows (in wall-clock order) whose codec configuration must be read for a playlist.

    A configuration changes only where ffmpeg started again: at a run's first segment. A segment
    after a gap, or one whose run can't be read from its key, is read too, to be safe.
    """
    out = []
    runs = [run_of(row) for row in rows]
    for i, row in enumerate(rows):
        if not i or runs[i] is None or runs[i] != runs[i - 1] or timeline.is_gap(rows[i - 1].end_ms, row.start_ms):
            out.append(i)
    return out


def plan_playlist(camera: str, rows: Sequence[SegmentRow], start_ms: int, end_ms: int,
                  configs: Mapping[int, Hashable]) -> Playlist:
    """The playlist of ``rows`` (already :func:`in_range`) over the range.

    ``configs`` holds the codec configuration (:func:`config_key`) of at least every row :func:`probes`
    names, by index; a row without one keeps the configuration of the row before it. Inside a
    discontinuity sequence a segment sits where the wall clock puts it after the sequence's first
    (a hole under the gap threshold stays, as in a clip); a new sequence starts where the last
    segment of the one before ends, plus the hole up to :data:`ROOM_MS`. EXTINFs add up to the
    footage's length: the room is in media time only, which players re-base at a discontinuity.
    """
    gaps = timeline.gaps(((r.start_ms, r.end_ms) for r in rows), start_ms, end_ms)
    placed: list[tuple[SegmentRow, int, bool, bool]] = []  # row, at, discontinuity, new init
    config = None
    for i, row in enumerate(rows):
        new_config = configs.get(i, config)
        if not placed:
            placed.append((row, 0, False, True))
        else:
            prev, prev_at = placed[-1][0], placed[-1][1]
            changed = new_config != config
            if changed or timeline.is_gap(prev.end_ms, row.start_ms):
                room = min(max(row.start_ms - prev.end_ms, 0), ROOM_MS)
                placed.append((row, prev_at + prev.end_ms - prev.start_ms + room, True, changed))
            else:
                placed.append((row, prev_at + row.start_ms - prev.start_ms, False, False))
        config = new_config
    out = []
    for i, (row, at, cut, new_init) in enumerate(placed):
        joined = i + 1 < len(placed) and not placed[i + 1][2]  # in one sequence: up to the next one
        duration = placed[i + 1][1] - at if joined else row.end_ms - row.start_ms
        out.append(MediaSegment(row, at, duration, cut, row if new_init else None,
                                placed[i - 1][0] if i and not cut else None))
    return Playlist(camera, start_ms, end_ms, tuple(out), tuple(gaps))


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def render_playlist(playlist: Playlist, media_uri: Callable[[MediaSegment], str],
                    init_uri: Callable[[SegmentRow], str]) -> str:
    """The playlist's text (RFC 8216, version 7); the callers' URIs name each media segment and init."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-PLAYLIST-TYPE:VOD",
             f"#EXT-X-TARGETDURATION:{playlist.target_duration}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-DISCONTINUITY-SEQUENCE:0",
             # Every stored segment starts with a keyframe: ffmpeg's segment muxer cuts only there.
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    if playlist.segments and playlist.start_ms > playlist.segments[0].row.start_ms:
        # The first segment starts before the range: a player starts at the requested instant.
        offset = playlist.start_ms - playlist.segments[0].row.start_ms
        lines.append(f"#EXT-X-START:TIME-OFFSET={_seconds(offset)},PRECISE=YES")
    for s in playlist.segments:
        if s.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if s.init is not None:
            lines.append(f'#EXT-X-MAP:URI="{init_uri(s.init)}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{ms_to_rfc3339(s.row.start_ms)}")
        lines.append(f"#EXTINF:{_seconds(s.duration_ms)},")
        lines.append(media_uri(s))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- codec configuration, init, media


def config_key(init: Init) -> Hashable:
    """What must be equal for segments to share one init: the clip's codec-change rule.

    The track layout (ids, handlers, timescales, codec families) and each track's sample
    entries as the clip library compares them (``btrt`` ignored, ``hev1`` as ``hvc1``).
    """
    return init.layout, tuple(
        (t.track_id, tuple(entry_key(hvc1_entry(e), t.handler) for e in t.entries)) for t in init.tracks)


def init_segment(segment: Segment, start_ms: int, end_ms: int) -> bytes:
    """The EXT-X-MAP of a configuration: the ``ftyp`` + ``moov`` of its first segment, without edit lists.

    Built from the clip plan's own init, so its sample entries are the ones the media segments'
    fragments point at; durations are 0 (unknown), as in any fragmented init.
    """
    own = plan_clip([PlacedSegment(start_ms, end_ms, segment)], start_ms, end_ms)
    init = parse_segment(own.init).init
    return build_init(init, 0, {t.track_id: TrackInit(t.entries, (), 0) for t in init.tracks})


@dataclass(frozen=True)
class MediaPlan:
    """A media segment, decided: the rewritten pieces of the stored segment, and their total size."""

    pieces: tuple[Piece, ...]
    size: int


def plan_media(this: PlacedSegment, at_ms: int, after: PlacedSegment | None = None) -> MediaPlan:
    """The media segment of a stored segment that starts at ``at_ms`` on the playlist's timeline.

    It is the segment's part of the clip library's plan of ``after`` (the segment before it in
    its discontinuity sequence, if any: its boxes only, none of its bytes are served) and this
    one, over their wall range: so where two segments meet, times are decided exactly as in a
    clip (an overlap shortens the first sample, a small hole stays). The clip plan times each
    track from 0 and says in its edit lists where that 0 is; here that place is written into the
    decode times instead, on the playlist's timeline.
    """
    segments = [after, this] if after is not None else [this]
    origin_ms = at_ms - (this.start_ms - segments[0].start_ms)  # where the plan's t=0 is on the playlist
    if origin_ms < 0:
        raise ValueError(f"a segment at {at_ms} ms can't follow one {this.start_ms - segments[0].start_ms} ms "
                         "before it")
    plan = plan_clip(segments, segments[0].start_ms, this.end_ms)
    init = parse_segment(plan.init).init
    base = {}
    for t in init.tracks:
        seconds = Fraction(origin_ms, 1000) + LEAD_S + timeline_offset(t, init.movie_timescale)
        base[t.track_id] = math.floor(seconds * t.timescale + Fraction(1, 2))
    source = len(segments) - 1
    pieces = tuple(replace(p, decode_times=tuple((tid, t + base[tid]) for tid, t in p.decode_times),
                           prft_media_time=p.prft_media_time + base[p.prft_track])
                   for p in plan.pieces if p.source == source)
    if not pieces:
        raise Mp4Error(f"no fragment of the segment at {this.start_ms} joins the one before it "
                       f"({plan.truncated_reason or 'nothing in its range'})")
    return MediaPlan(pieces, sum(p.size for p in pieces))


def media_bytes(plan: MediaPlan, data: bytes | bytearray | memoryview) -> bytearray:
    """The media segment's bytes; ``data`` is the stored segment the plan was made from."""
    out = bytearray()
    view = memoryview(data)  # the mdats copied once, into the answer (a slice would copy them twice)
    for p in plan.pieces:
        out += render_head(p, view)
        out += view[p.fragment.moof_end:p.fragment.end]
    if len(out) != plan.size:
        raise Mp4Error(f"media segment is {len(out)} bytes, {plan.size} were planned")
    return out
