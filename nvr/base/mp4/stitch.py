"""A clip stitched from stored segments at the box level: the plan (exact sizes first), then its bytes.

The clip is one init segment built from the first segment's, then the
fragments overlapping the range, from the last keyframe fragment at or before
the start. Each fragment keeps its mdat byte for byte; its decode times are
moved onto the clip's timeline and it gets a ``prft`` with its wall-clock time.

Time. A segment's wall start (from the index) is the wall time of its first
video frame's presentation, so a sample's wall time is ``segment start +
(its presentation time - that first frame's)``. Every track of every segment is
placed by that rule, so a hole between segments stays a hole of its real
length, and audio keeps the offset to video it had in its segment. Decode times
start at 0 for each track; the edit list then says which media time the clip's
t=0 (the requested start) is, so a sample's clip time + the start = its wall time.

Codec changes. A segment joins the clip while its track layout (track ids,
handlers, timescales, codec families; ``hev1``/``hvc1`` are one family) and its
sample entries (ignoring ``btrt`` bitrate statistics) are the first segment's.
At the first segment that differs (H.264 → H.265, audio appearing or vanishing,
a new resolution or new parameter sets) the clip ends, and the plan says where
(``truncated_at_ms``) and why, so the caller can say "clip truncated at T".
Why not one ``stsd`` entry per configuration, with ``tfhd.sample_description_index``
(ISO/IEC 14496-12 8.8.7)? ffmpeg does not switch decoder configuration between
entries inside fragments: a two-resolution clip whose parameter sets are only in
the entries decodes the second resolution with the first's SPS (corrupt frames).
It decodes cleanly only when the stream also carries its parameter sets in-band
(RTSP cameras usually do). ``entry_changes=True`` builds the multi-entry clip for
callers that know their players and streams handle it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from nvr.base.errors import NotFound
from nvr.base.mp4.boxes import Mp4Error
from nvr.base.mp4.fragments import Fragment, Segment, init_of, lead_traf
from nvr.base.mp4.initseg import TrackInit, build_init, hvc1_entry
from nvr.base.mp4.moov import Edit, entry_key
from nvr.base.mp4.rewrite import fragment_size, prft, rewrite_moof
from nvr.base.mp4.skeleton import SkeletonSummary

CHUNK = 256 * 1024


class PlacedSegment(NamedTuple):
    """One stored segment on the wall clock: its index bounds (Unix ms) and its parsed boxes."""

    start_ms: int
    end_ms: int
    segment: Segment


@dataclass(frozen=True)
class Piece:
    """One fragment of the clip: where it sits in the output and how it is rewritten."""

    offset: int  # in the clip's bytes
    size: int
    source: int  # index of its segment in the list given to plan_clip
    fragment: Fragment
    sequence: int
    decode_times: tuple[tuple[int, int], ...]  # (track id, tfdt in the clip)
    indexes: tuple[tuple[int, int], ...]  # (track id, sample description index written into its tfhd)
    trims: tuple[tuple[int, int], ...]  # (track id, units its first sample is shortened by)
    prft_track: int
    prft_wall_ms: Fraction  # capture time of the reference track's first sample
    prft_media_time: int  # its presentation time on the clip's media timeline

    @property
    def head_size(self) -> int:
        """Bytes of the prft and the rewritten moof; the rest of the piece is copied from the segment."""
        return self.size - (self.fragment.end - self.fragment.moof_end)


@dataclass(frozen=True)
class StitchPlan:
    """A clip, fully decided: its init bytes, its fragments with their output offsets, its exact size."""

    start_ms: int  # the requested start: the clip's t=0
    end_ms: int
    duration_ms: Fraction  # from the start to the end of the footage (or the requested end, if earlier)
    first_ms: Fraction  # wall time of the first fragment's keyframe (at or before the start when covered)
    init: bytes
    pieces: tuple[Piece, ...]
    size: int
    truncated_at_ms: int | None  # wall start of the segment the clip stopped before, if it did
    truncated_reason: str
    source_sizes: tuple[tuple[int, int], ...]  # (segment index, its byte length when parsed)

    def needed(self, a: int, b: int) -> tuple[int, ...]:
        """Indexes of the source segments whose bytes the output range ``[a, b)`` is made of."""
        return tuple(dict.fromkeys(p.source for p in self.overlapping(a, b)))

    def overlapping(self, a: int, b: int) -> tuple[Piece, ...]:
        """The pieces with at least one byte in ``[a, b)``, in order."""
        lo = max(0, bisect.bisect_right(self.pieces, a, key=lambda p: p.offset) - 1)
        hi = bisect.bisect_left(self.pieces, b, key=lambda p: p.offset)
        return tuple(p for p in self.pieces[lo:hi] if p.offset + p.size > a)


@dataclass(frozen=True)
class _Placed:
    source: int
    fragment: Fragment
    start: Fraction  # wall ms of the lead track's first presented sample
    end: Fraction
    keyframe: bool


def _round(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def _reference(placed: PlacedSegment) -> Fraction | None:
    """The lead track's media time (seconds) that is the segment's wall start; None without lead samples.

    It is the first presented frame's time ``p0`` for every segment of a run but the first:
    there the segment muxer counts from stream time 0 while B-frame reordering puts the first
    frame at ``p0`` > 0, and the index's span is longer than the frames' by that much. So the
    reference is ``p0`` less the index's excess over the frames' span, kept within ``[0, p0]``:
    exact in both cases, and never off by more than the reorder delay when the index is not.
    """
    lead = placed.segment.init.lead
    first = end = None
    for f in placed.segment.fragments:
        traf = f.traf(lead.track_id)
        if traf is None or not traf.sample_count:
            continue
        samples = traf.samples
        durations = [s.duration for s in samples]
        # Each sample's decode time is the tfdt plus the durations before it; it ends at that + cto + duration.
        decodes = itertools.accumulate(durations, initial=traf.decode_time)
        last = max(map(lambda t, s: t + s.cto + s.duration, decodes, samples))
        first = traf.decode_time + samples[0].cto if first is None else first
        end = last if end is None else max(end, last)
    if first is None or end is None:
        return None
    p0 = Fraction(first, lead.timescale)
    excess = Fraction(placed.end_ms - placed.start_ms, 1000) - (Fraction(end, lead.timescale) - p0)
    return p0 - min(max(excess, Fraction(0)), p0)


def _wall(placed: PlacedSegment, ref: Fraction, media_time: int, timescale: int) -> Fraction:
    """Wall time (Unix ms) of a media time of one of the segment's tracks."""
    return placed.start_ms + (Fraction(media_time, timescale) - ref) * 1000


def _placed(segments: Sequence[PlacedSegment]) -> tuple[list[_Placed], dict[int, Fraction]]:
    """Every fragment on the wall clock, in order, and each placed segment's reference (:func:`_reference`)."""
    out = []
    refs: dict[int, Fraction] = {}
    for i, ps in enumerate(segments):
        ref = _reference(ps)
        if ref is None:
            continue  # no lead-track sample: nothing in it can be placed on the wall clock
        refs[i] = ref
        for f in ps.segment.fragments:
            track, traf = lead_traf(ps.segment, f)
            lead = track.track_id == ps.segment.init.lead.track_id
            start = _wall(ps, ref, traf.decode_time + traf.first_cto, track.timescale)
            end = start + Fraction(traf.duration * 1000, track.timescale)
            out.append(_Placed(i, f, start, end, lead and traf.first_sync))
    return out, refs


def _first(placed: list[_Placed], start_ms: int) -> int | None:
    """Index of the clip's first fragment: the last keyframe one at or before the start, else the next one."""
    covering = next((i for i, p in enumerate(placed) if p.end > start_ms), None)
    if covering is None:
        return None
    if placed[covering].start <= start_ms:
        back = next((i for i in range(covering, -1, -1) if placed[i].keyframe), None)
        if back is not None:
            return back
    return next((i for i in range(covering, len(placed)) if placed[i].keyframe), None)


def plan_clip(segments: Sequence[PlacedSegment], start_ms: int, end_ms: int, *,
              entry_changes: bool = False) -> StitchPlan:
    """The plan of the clip ``[start_ms, end_ms)`` of ``segments`` (in wall-clock order); no footage is NotFound."""
    if end_ms <= start_ms:
        raise NotFound(f"empty range [{start_ms}, {end_ms})")
    order = sorted(range(len(segments)), key=lambda i: segments[i].start_ms)
    if order != list(range(len(segments))):
        raise ValueError("segments must be in wall-clock order")
    placed, refs = _placed(segments)
    first = _first(placed, start_ms)
    if first is None or placed[first].start >= end_ms:
        raise NotFound(f"no recorded keyframe fragment in [{start_ms}, {end_ms})")
    head = segments[placed[first].source].segment
    layout = head.init.layout
    chosen: list[_Placed] = []
    truncated_at, reason = None, ""
    entries: dict[int, list[bytes]] = {t.track_id: [] for t in head.init.tracks}
    keys: dict[int, list[bytes]] = {t.track_id: [] for t in head.init.tracks}
    index_of: dict[tuple[int, int, int], int] = {}  # (source, track, source index) -> clip index
    joined: set[int] = set()
    for p in placed[first:]:
        if p.start >= end_ms:
            break
        if p.source not in joined:
            seg = segments[p.source].segment
            why = _mismatch(layout, seg, keys, entry_changes)
            if why:
                truncated_at, reason = segments[p.source].start_ms, why
                break
            for track in seg.init.tracks:
                for n, raw in enumerate(track.entries, 1):
                    entry = hvc1_entry(raw)
                    key = entry_key(entry, track.handler)
                    if key not in keys[track.track_id]:
                        keys[track.track_id].append(key)
                        entries[track.track_id].append(entry)
                    index_of[p.source, track.track_id, n] = keys[track.track_id].index(key) + 1
            joined.add(p.source)
        chosen.append(p)
    return _assemble(segments, refs, head, chosen, entries, index_of, start_ms, end_ms, truncated_at, reason)


@dataclass(frozen=True)
class ClipPromise:
    """What a clip's first byte needs: its init and its exact size, known before its plan (:func:`promise_clip`)."""

    init: bytes
    size: int
    sources: tuple[int, ...]  # the segments it is made of, as indexes into the list it was promised for
    early: StitchPlan  # the plan of the first and last segments: its pieces of the first are the clip's


class SummarizedSegment(NamedTuple):
    """A stored segment between a clip's first and last, known by its skeleton's summary only."""

    start_ms: int
    end_ms: int
    summary: SkeletonSummary


def promise_clip(first: PlacedSegment, middle: Sequence[SummarizedSegment], last: PlacedSegment,
                 start_ms: int, end_ms: int) -> ClipPromise | None:
    """The init and exact size of :func:`plan_clip` of ``[first, *middle, last]``, or None when not provable here.

    Only the first and the last segment of a clip are cut; one in between joins whole, and
    the bytes it adds are its fragments' rewritten sizes, which follow from its box headers
    (:func:`~nvr.base.mp4.skeleton.summarize`): decode times are always written as 64-bit
    ``tfdt`` and trims patch a field in place, so times never change a size. So the clip of
    ``[first, last]`` alone has the whole clip's init, and its size less the middle's bytes,
    provided the middle changes nothing :func:`plan_clip` decides. Each condition below is one
    such decision; when one does not hold, None, and the caller plans the whole clip:

    * the clip starts in ``first`` (its first fragment, the one covering the start, is there);
    * it reaches ``last`` (no codec change or range end before it) and runs to ``end_ms``
      (so its duration, in the init, is the range's);
    * every middle segment has ``first``'s track layout and only sample entries it has (so no
      truncation and no new entry), is complete, only has tracks ``first``'s
      chosen fragments have (so each track's decode-time shift is set before it), samples in
      the traf that places each fragment, and every fragment starting before ``end_ms`` for any
      reference :func:`_reference` can take (so none is left out).
    """
    try:
        sub = plan_clip((first, last), start_ms, end_ms)
        head, _ = _placed((first,))
    except NotFound:
        return None
    if not sub.pieces or sub.pieces[0].source != 0 or sub.pieces[-1].source != 1 or not head:
        return None
    if max(p.end for p in head) <= start_ms or sub.duration_ms != end_ms - start_ms:
        return None
    init = first.segment.init
    lead = init.lead
    tracks = {t.track_id for p in sub.pieces if p.source == 0 for t in p.fragment.trafs}
    known = {t.track_id: {entry_key(hvc1_entry(e), t.handler) for e in t.entries} for t in init.tracks}
    # A track whose stsd has entries of more than one configuration gets a description index in each tfhd.
    indexed = {track for track, keys in known.items() if len(keys) > 1}
    extra = 0
    for seg in middle:
        sm = seg.summary
        if sm.complete != sm.size or not sm.fragments:
            return None
        # The moov itself may differ (ffmpeg's segment muxer picks each segment's movie timescale):
        # what must not is what plan_clip compares, the track layout and the sample entries.
        other = init_of(sm.ftyp, sm.moov)
        if other.layout != init.layout or any(
                entry_key(hvc1_entry(e), t.handler) not in known[t.track_id] for t in other.tracks for e in t.entries):
            return None
        # Where lead_traf places each fragment: its lead-track traf's first sample, else (audio after
        # the last frame, say) its first traf's; each must have samples. Kept per track, in its units.
        latest: dict[int, int] = {}  # track -> the latest placing time of a fragment it places
        leads: list[int] = []  # lead-track first-sample times, in fragment order
        for f in sm.fragments:
            if not f.tracks <= tracks:
                return None
            placer = lead.track_id if lead.track_id in f.tracks else f.first_track
            at = next((d + c for t, d, c in f.times if t == placer), None)
            if at is None:
                return None
            latest[placer] = max(latest.get(placer, at), at)
            if placer == lead.track_id:
                leads.append(at)
            extra += f.size + 4 * len(f.growable & indexed)
        if not leads:
            return None  # no lead sample: plan_clip leaves the segment out
        # _reference takes p0 = leads[0] less up to the index's excess over the frames' span, which is at
        # most the span less (max(leads) - p0): so a fragment starts by then at the latest.
        p0 = Fraction(leads[0], lead.timescale)
        span = Fraction(seg.end_ms - seg.start_ms, 1000) - (Fraction(max(leads), lead.timescale) - p0)
        last = max(Fraction(t, init.track(track).timescale) for track, t in latest.items())
        if seg.start_ms + (last - p0 + max(Fraction(0), span)) * 1000 >= end_ms:
            return None
    sources = (0, *range(1, len(middle) + 1), len(middle) + 1)
    return ClipPromise(sub.init, sub.size + extra, sources, sub)


def _mismatch(layout: tuple, seg: Segment, keys: dict[int, list[bytes]], entry_changes: bool) -> str:
    if seg.init.layout != layout:
        was = ", ".join(f"{h}:{c}" for _, h, _, c in layout)
        now = ", ".join(f"{h}:{c}" for _, h, _, c in seg.init.layout)
        return f"track layout changed ({was} -> {now})"
    if not entry_changes:
        for t in seg.init.tracks:
            known = keys[t.track_id]
            if known and any(entry_key(hvc1_entry(e), t.handler) not in known for e in t.entries):
                return f"track {t.track_id} ({t.handler}) sample entry changed (resolution or codec parameters)"
    return ""


def _assemble(segments: Sequence[PlacedSegment], refs: dict[int, Fraction], head: Segment, chosen: list[_Placed],
              entries: dict[int, list[bytes]], index_of: dict[tuple[int, int, int], int],
              start_ms: int, end_ms: int, truncated_at: int | None, reason: str) -> StitchPlan:
    ideal: dict[tuple[int, int], int] = {}  # (position in chosen, track) -> decode time on a start-based line
    for n, p in enumerate(chosen):
        for traf in p.fragment.trafs:
            ts = head.init.track(traf.track_id).timescale
            wall = _wall(segments[p.source], refs[p.source], traf.decode_time, ts)
            ideal[n, traf.track_id] = _round((wall - start_ms) * ts / 1000)
    shift: dict[int, int] = {}
    for (_, track_id), value in ideal.items():
        shift.setdefault(track_id, -value)  # dicts keep order: the first fragment of each track sets it
    decodes, trims = _decode_times(chosen, ideal, shift)
    content_end = max(p.end for p in chosen)
    duration_ms = min(Fraction(end_ms), content_end) - start_ms
    movie_ts = head.init.movie_timescale
    movie_duration = max(1, _round(duration_ms * movie_ts / 1000))
    tracks = {}
    for track in head.init.tracks:
        s = shift.get(track.track_id, 0)
        if s >= 0:
            edits = (Edit(movie_duration, s),)
        else:
            hole = _round(Fraction(-s * movie_ts, track.timescale))
            edits = (Edit(hole, -1), Edit(max(1, movie_duration - hole), 0))
        # mdhd: how long the track's media plays in the clip (its media edit), in its own units; ffmpeg
        # takes it as the stream's duration when the fragments don't say more.
        media_duration = _round(Fraction(edits[-1].duration * track.timescale, movie_ts))
        tracks[track.track_id] = TrackInit(tuple(entries[track.track_id]), edits, media_duration)
    init = build_init(head.init, movie_duration, tracks)
    pieces = []
    offset = len(init)
    for n, (p, decode) in enumerate(zip(chosen, decodes, strict=True)):
        indexes = tuple((traf.track_id, index_of[p.source, traf.track_id, traf.description_index])
                        for traf in p.fragment.trafs if len(entries[traf.track_id]) > 1)
        track, traf = lead_traf(segments[p.source].segment, p.fragment)
        size = fragment_size(p.fragment, dict(indexes))
        pieces.append(Piece(offset, size, p.source, p.fragment, n + 1, decode, indexes,
                            tuple(trims[n].items()), track.track_id, p.start,
                            dict(decode)[track.track_id] + traf.first_cto))
        offset += size
    sizes = tuple((i, segments[i].segment.size) for i in dict.fromkeys(p.source for p in chosen))
    return StitchPlan(start_ms, end_ms, duration_ms, chosen[0].start, init, tuple(pieces), offset,
                      truncated_at, reason, sizes)


def _decode_times(chosen: list[_Placed], ideal: dict[tuple[int, int], int], shift: dict[int, int]):
    """Each fragment's tfdt per track, and the first-sample trims that keep decode times increasing.

    At a join the next segment may start a few units before the previous one ends (the
    index's ms, and ffmpeg stretching a segment's first audio sample back to its time 0).
    The fragment then starts where the previous one ended and its first sample is shortened
    by the overlap, so its other samples keep their times (A/V sync holds). Without per-sample
    durations to shorten, or an overlap as long as the sample, the fragment moves instead.
    """
    decodes: list[tuple[tuple[int, int], ...]] = []
    trims: list[dict[int, int]] = []
    ends: dict[int, int] = {}
    for n, p in enumerate(chosen):
        decode, trim = [], {}
        for traf in p.fragment.trafs:
            t = ideal[n, traf.track_id] + shift[traf.track_id]
            end = t + traf.duration
            overlap = ends.get(traf.track_id, t) - t
            if overlap > 0:
                first = traf.runs[0]
                if first.first_duration_at and overlap < first.samples[0].duration:
                    trim[traf.track_id] = overlap
                else:
                    end += overlap
                t += overlap
            ends[traf.track_id] = end
            decode.append((traf.track_id, t))
        decodes.append(tuple(decode))
        trims.append(trim)
    return decodes, trims


def render_head(piece: Piece, data: bytes | memoryview) -> bytes:
    """The rewritten start of a piece (its prft and moof); ``data`` is its segment's bytes."""
    head = prft(piece.prft_track, piece.prft_wall_ms, piece.prft_media_time) + rewrite_moof(
        data, piece.fragment, dict(piece.decode_times), piece.sequence, dict(piece.indexes), dict(piece.trims))
    if len(head) != piece.head_size:
        raise Mp4Error(f"fragment {piece.sequence} head is {len(head)} bytes, {piece.head_size} were planned")
    return head


def check_source(plan: StitchPlan, source: int, data: bytes | memoryview) -> None:
    """An :class:`Mp4Error` unless ``data`` is as long as segment ``source`` was when the plan parsed it."""
    expected = dict(plan.source_sizes)[source]
    if len(data) != expected:
        # Offsets were planned on the parsed bytes: other bytes would yield a corrupt clip.
        raise Mp4Error(f"segment {source} is {len(data)} bytes, {expected} were parsed")


def iter_clip(plan: StitchPlan, read: Callable[[int], bytes | memoryview]) -> Iterator[bytes]:
    """The clip's bytes in chunks; ``read(i)`` gives segment ``i``'s bytes and is called once per segment."""
    return iter_clip_range(plan, 0, plan.size, read)


def iter_clip_range(plan: StitchPlan, a: int, b: int, read: Callable[[int], bytes | memoryview]) -> Iterator[bytes]:
    """Only the bytes ``[a, b)`` of the clip, reading only the segments those bytes come from."""
    a, b = max(0, a), min(plan.size, b)
    if a >= b:
        return
    if a < len(plan.init):
        yield plan.init[a:min(b, len(plan.init))]
    source, data = -1, b""
    for piece in plan.overlapping(a, b):
        if piece.source != source:
            source, data = piece.source, read(piece.source)
            check_source(plan, source, data)
        lo, hi = max(a, piece.offset) - piece.offset, min(b, piece.offset + piece.size) - piece.offset
        if lo < piece.head_size:
            yield render_head(piece, data)[lo:min(hi, piece.head_size)]
        tail = piece.fragment.moof_end - piece.head_size  # segment offset of the piece's byte head_size
        for at in range(max(lo, piece.head_size), hi, CHUNK):
            yield bytes(data[tail + at:tail + min(hi, at + CHUNK)])

