"""What a live feed hands its viewers, and how a feed's source units become them (pure, no I/O).

A feed's timeline is continuous across the source's files: each spool segment
starts its decode times again near 0 (``reset_timestamps``) and a new ffmpeg run
starts again at 0 after an outage, so every new file is shifted to begin where
the previous one's lead track ended. The wall clock of each fragment is kept
beside it (``wall_ms``), never squeezed into the media times: a live picture is
"now", and the clock says when "now" was captured.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from nvr.base.mp4 import Fragment, Init, parse_segment
from nvr.base.mp4.codecs import mime_type
from nvr.base.mp4.fragments import NON_SYNC, parse_fragment
from nvr.playback.hls import config_key, init_segment


@dataclass(frozen=True)
class LiveInit:
    """One codec configuration of a feed: the init segment served (HLS's EXT-X-MAP rule) and its MIME type."""

    generation: int  # 1, 2, …: a new one each time the camera's configuration changes
    data: bytes
    init: Init  # the source's, which its fragments are read against
    mime: str  # video/mp4; codecs="avc1.42c01e,mp4a.40.2"
    key: Hashable


@dataclass(frozen=True)
class LiveFragment:
    """One moof + mdat as the source wrote it, placed on the feed's timeline and the wall clock."""

    init: LiveInit
    data: bytes
    fragment: Fragment
    starts_s: Mapping[int, Fraction]  # each track's first decode time on the feed's timeline, seconds
    lead: int  # the track whose times place the fragment: video, or the track it has (audio at a file's end)
    duration_s: Fraction  # of the lead track
    has_video: bool  # it has the init's lead (video) track: it moves the timeline's end
    keyframe: bool  # it has video starting with a sync sample (a viewer may start here)
    wall_ms: int  # capture time of the lead track's first sample
    wall_source: str  # "recorder": placed by the recorder's clock; "arrival": when it reached the spool
    seq: int  # 1, 2, … in the feed


class FeedTimeline:
    """Turns a source's units (file by file) into :class:`LiveFragment`\\ s on one continuous timeline."""

    def __init__(self) -> None:
        self.init: LiveInit | None = None
        self._file_init: Init | None = None
        self._pending_init: bytes | None = None
        self._shift: Fraction | None = None  # seconds added to the current file's decode times
        self._end_s = Fraction(0)  # where the last fragment's lead track ended
        self._seq = 0
        self._generation = 0

    def new_file(self, init_bytes: bytes) -> None:
        """A new file (or pipe) starts: its ftyp + moov; the next fragment decides its shift and init."""
        self._pending_init = init_bytes
        self._shift = None

    def fragment(self, data: bytes, *, wall_start_ms: int | None, arrived_ms: int) -> LiveFragment:
        """Place one fragment of the current file. ``wall_start_ms``: the recorder's wall time of the file's
        media time 0, when known; else the fragment is placed by ``arrived_ms`` (it is complete when the next
        keyframe arrives, so its first frame was captured one fragment earlier)."""
        if self._pending_init is not None:
            self._start_file(data)
        assert self._file_init is not None and self.init is not None and self._shift is not None
        frag = parse_fragment(data, self._file_init)
        init = self._file_init
        lead_track = init.lead
        lead = frag.traf(lead_track.track_id) or frag.trafs[0]
        ts = {t.track_id: init.track(t.track_id).timescale for t in frag.trafs}
        starts = {t.track_id: Fraction(t.decode_time, ts[t.track_id]) + self._shift for t in frag.trafs}
        duration = Fraction(lead.duration, ts[lead.track_id])
        first = lead.samples[0] if lead.samples else None
        has_video = lead.track_id == lead_track.track_id
        keyframe = has_video and first is not None and not first.flags & NON_SYNC
        media_s = Fraction(lead.decode_time, ts[lead.track_id])
        if wall_start_ms is not None:
            wall, source = wall_start_ms + round(media_s * 1000), "recorder"
        else:
            wall, source = arrived_ms - round(duration * 1000), "arrival"
        if has_video:
            self._end_s = starts[lead.track_id] + duration
        self._seq += 1
        return LiveFragment(self.init, data, frag, starts, lead.track_id, duration, has_video, keyframe, wall,
                            source, self._seq)

    def _start_file(self, first_fragment: bytes) -> None:
        raw, self._pending_init = self._pending_init, None
        assert raw is not None
        seg = parse_segment(raw + first_fragment)
        self._file_init = seg.init
        key = config_key(seg.init)
        if self.init is None or self.init.key != key:
            self._generation += 1
            served = init_segment(seg, 0, 1)
            self.init = LiveInit(self._generation, served, seg.init, mime_type(seg.init), key)
        elif self.init.init != seg.init:
            self.init = LiveInit(self.init.generation, self.init.data, seg.init, self.init.mime, key)
        frag = seg.fragments[0]
        lead = frag.traf(seg.init.lead.track_id) or frag.trafs[0]
        first_s = Fraction(lead.decode_time, seg.init.track(lead.track_id).timescale)
        self._shift = self._end_s - first_s
