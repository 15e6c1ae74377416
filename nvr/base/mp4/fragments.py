"""One stored segment parsed: its init part and its fragments (``moof`` + ``mdat``), with per-track times.

Pure: bytes in, frozen dataclasses out. Positions are offsets in the segment's
bytes, so a writer can later copy or patch exactly those bytes without parsing again.
"""

from __future__ import annotations

import functools
import itertools
import struct
from dataclasses import dataclass
from typing import NamedTuple

from nvr.base.mp4.boxes import Box, Mp4Error, Reader, children, fourcc, iter_boxes, only
from nvr.base.mp4.moov import Init, Track, parse_init

# tfhd flags (ISO/IEC 14496-12 8.8.7)
TFHD_BASE_DATA_OFFSET = 0x000001
TFHD_DESCRIPTION_INDEX = 0x000002
TFHD_DURATION = 0x000008
TFHD_SIZE = 0x000010
TFHD_FLAGS = 0x000020
TFHD_BASE_IS_MOOF = 0x020000
# trun flags (8.8.8)
TRUN_DATA_OFFSET = 0x000001
TRUN_FIRST_FLAGS = 0x000004
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200
TRUN_FLAGS = 0x000400
TRUN_CTO = 0x000800
NON_SYNC = 0x00010000  # sample_is_non_sync_sample in the sample flags word



class Sample(NamedTuple):
    """One sample of a track fragment: decode duration, byte size, sample flags, composition offset.

    A named tuple, not a dataclass: a segment has hundreds, and a tuple is made several times faster.
    """

    duration: int
    size: int
    flags: int
    cto: int

    @property
    def sync(self) -> bool:
        return not self.flags & NON_SYNC


@dataclass(frozen=True)
class Run:
    """One ``trun``: where its data_offset field sits (0 if it has none) and its data's place in the file."""

    box_start: int
    data_offset_at: int  # file offset of the data_offset field, 0 when absent
    first_duration_at: int  # file offset of the first sample's duration field, 0 when durations are defaults
    data_start: int  # absolute file offset of the run's first sample byte
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Traf:
    """One track fragment: its track, decode time, samples, and where its header boxes sit."""

    track_id: int
    box: Box
    tfhd: Box
    tfhd_flags: int
    description_index: int  # 1-based index into the track's stsd, effective (tfhd, else trex)
    tfdt: Box
    decode_time: int  # tfdt baseMediaDecodeTime, track timescale
    runs: tuple[Run, ...]
    moof_relative: bool  # data offsets count from the moof start: they move when the moof grows
    kept: int  # bytes of its children other than tfhd and tfdt (copied as they are into a clip)

    # Cached: the planner asks for them again and again (a frozen dataclass still has a __dict__ for this).
    @functools.cached_property
    def samples(self) -> tuple[Sample, ...]:
        return tuple(s for run in self.runs for s in run.samples)

    @functools.cached_property
    def sample_count(self) -> int:
        return sum(len(run.samples) for run in self.runs)

    @functools.cached_property
    def duration(self) -> int:
        """Sum of sample durations, track timescale."""
        return sum(s.duration for run in self.runs for s in run.samples)

    @property
    def first_sync(self) -> bool:
        """Whether the fragment's first sample of this track is a sync sample (decodable on its own)."""
        return next((s.sync for run in self.runs for s in run.samples), False)

    @property
    def first_cto(self) -> int:
        """Composition offset of the first sample: its presentation time minus its decode time."""
        return next((s.cto for run in self.runs for s in run.samples), 0)


@dataclass(frozen=True)
class Fragment:
    """One ``moof`` and its ``mdat``: the byte range ``[start, end)`` and each track fragment."""

    start: int  # the moof's first byte
    moof_body: int  # the first byte after the moof's header
    moof_end: int
    end: int  # one past the mdat's last byte
    sequence: int
    trafs: tuple[Traf, ...]
    kept: int  # bytes of the moof's children other than mfhd and the trafs

    def traf(self, track_id: int) -> Traf | None:
        """This fragment's traf of ``track_id``, None if the track has no samples here."""
        return next((t for t in self.trafs if t.track_id == track_id), None)


@dataclass(frozen=True)
class Segment:
    """A parsed segment: its init part, its fragments in file order, and its total size."""

    init: Init
    fragments: tuple[Fragment, ...]
    size: int
    dropped_tail: int = 0  # bytes of an unfinished last fragment left out (partial segments only)


def _top_level(data: bytes | memoryview, partial: bool) -> tuple[list[Box], int]:
    """The file's top-level boxes, and where the complete ones end."""
    top: list[Box] = []
    try:
        for b in iter_boxes(data, 0, len(data)):
            top.append(b)
    except Mp4Error as err:
        # A partial segment is the file of a killed ffmpeg: complete up to its last fragment, then
        # whatever part of the next one reached the disk. Only that cut-off tail is forgiven.
        if not partial or err.context.get("offset") is None:
            raise
        return top, err.context["offset"]
    return top, len(data)


def parse_segment(data: bytes | memoryview, *, partial: bool = False) -> Segment:
    """Parse one stored fragmented MP4; anything malformed or unsupported is an :class:`Mp4Error`.

    ``partial`` (a crash-recovered segment) leaves out an unfinished last fragment instead
    of refusing the file; everything before it is held to the same rules.
    """
    top, complete = _top_level(data, partial)
    if not top or top[0].type != b"ftyp":
        raise Mp4Error("does not start with ftyp", where="file")
    moov_at = next((i for i, b in enumerate(top) if b.type == b"moov"), None)
    if moov_at is None:
        raise Mp4Error("no moov", where="file")
    if any(b.type == b"moof" for b in top[:moov_at]):
        raise Mp4Error("a moof comes before the moov", where="file")
    init = _init(data, top[0], top[moov_at])
    fragments: list[Fragment] = []
    pending: Box | None = None
    for b in top[moov_at + 1:]:
        if b.type == b"moof":
            if pending is not None:
                raise Mp4Error("moof without an mdat", where=pending.path, offset=pending.start)
            pending = b
        elif b.type == b"mdat":
            if pending is None:
                raise Mp4Error("mdat outside any fragment", where=b.path, offset=b.start)
            fragments.append(_fragment(data, init, pending, b))
            pending = None
        elif b.type in (b"ftyp", b"moov"):
            raise Mp4Error(f"a second {fourcc(b.type)}", where=b.path, offset=b.start)
        elif pending is not None and b.type not in (b"free", b"skip"):
            raise Mp4Error(f"{fourcc(b.type)} between a moof and its mdat", where=b.path, offset=b.start)
        # Any other top-level box (sidx, mfra, styp, a source prft, free…) is left out of a clip: its
        # offsets or times would be wrong there, and no sample lives in it.
    if pending is not None:
        if not partial:
            raise Mp4Error("moof without an mdat (truncated file?)", where=pending.path, offset=pending.start)
        complete = pending.start
    return Segment(init, tuple(fragments), len(data), len(data) - complete)


_INITS: dict[tuple[bytes, bytes], Init] = {}
_INITS_MAX = 256


def _init(data: bytes | memoryview, ftyp: Box, moov: Box) -> Init:
    """:func:`parse_init`, once per distinct ftyp + moov: every segment of a camera's run has the same ones."""
    key = (bytes(data[ftyp.start:ftyp.end]), bytes(data[moov.start:moov.end]))
    init = _INITS.get(key)
    if init is None:
        init = parse_init(data, ftyp, moov)  # an Init depends on these bytes only; errors are not kept
        if len(_INITS) >= _INITS_MAX:
            _INITS.clear()
        _INITS[key] = init
    return init


def init_of(ftyp: bytes, moov: bytes) -> Init:
    """The :class:`Init` of a segment from its ftyp and moov boxes' bytes alone (once per distinct pair)."""
    data = ftyp + moov
    boxes = list(iter_boxes(data, 0, len(data)))
    if [b.type for b in boxes] != [b"ftyp", b"moov"]:
        raise Mp4Error("not one ftyp and one moov", where="file")
    return _init(data, *boxes)


def parse_fragment(data: bytes | memoryview, init: Init) -> Fragment:
    """One ``moof`` + ``mdat`` on their own (a live fragment as it reached the spool), read against ``init``."""
    top = list(iter_boxes(data, 0, len(data)))
    kinds = [b.type for b in top if b.type not in (b"free", b"skip", b"prft")]
    if kinds != [b"moof", b"mdat"]:
        raise Mp4Error(f"a fragment is one moof and its mdat, not {[fourcc(k) for k in kinds]}", where="fragment")
    moof = next(b for b in top if b.type == b"moof")
    mdat = next(b for b in top if b.type == b"mdat")
    return _fragment(data, init, moof, mdat)


def _fragment(data: bytes | memoryview, init: Init, moof: Box, mdat: Box) -> Fragment:
    kids = children(data, moof)
    mfhd = only(kids, b"mfhd", moof.path)
    r = Reader(data, mfhd)
    r.full_header((0,))
    sequence = r.u32()
    trafs: list[Traf] = []
    data_end = moof.start  # where the previous traf's data ended: the base of a traf without base-is-moof
    for b in kids:
        if b.type == b"traf":
            traf = _traf(data, init, moof, b, data_end, first_in_moof=not trafs)
            trafs.append(traf)
            last = traf.runs[-1]
            data_end = last.data_start + sum(s.size for s in last.samples)
    if not trafs:
        raise Mp4Error("no traf", where=moof.path, offset=moof.start)
    ids = [t.track_id for t in trafs]
    if len(set(ids)) != len(ids):
        raise Mp4Error(f"two trafs of one track: {ids}", where=moof.path, offset=moof.start)
    # Every sample's bytes must be in this fragment's mdat: a clip copies the mdat and nothing else.
    lo, hi = mdat.body, mdat.end
    for traf in trafs:
        for run in traf.runs:
            size = sum(s.size for s in run.samples)
            if run.samples and not (lo <= run.data_start and run.data_start + size <= hi):
                raise Mp4Error(f"track {traf.track_id}'s samples [{run.data_start}, {run.data_start + size}) "
                               f"are not inside the mdat [{lo}, {hi})", where=f"{moof.path}/traf/trun",
                               offset=run.box_start)
    kept = sum(b.size for b in kids if b.type not in (b"mfhd", b"traf"))
    return Fragment(moof.start, moof.body, moof.end, mdat.end, sequence, tuple(trafs), kept)


def _traf(data: bytes | memoryview, init: Init, moof: Box, traf: Box, data_end: int, *,
          first_in_moof: bool) -> Traf:
    kids = children(data, traf)
    for b in kids:
        if b.type in (b"saio", b"saiz", b"senc"):
            raise Mp4Error("encrypted or auxiliary-info fragments are not supported", where=b.path, offset=b.start)
    tfhd = only(kids, b"tfhd", traf.path)
    r = Reader(data, tfhd)
    _, flags = r.full_header((0,))
    track_id = r.u32()
    track = init.track(track_id)
    if flags & TFHD_BASE_DATA_OFFSET:
        # An absolute file offset: it would have to be recomputed for every clip position.
        raise Mp4Error("explicit base_data_offset is not supported (write with default_base_moof)",
                       where=tfhd.path, offset=tfhd.start)
    index = r.u32() if flags & TFHD_DESCRIPTION_INDEX else track.trex.sample_description_index
    duration = r.u32() if flags & TFHD_DURATION else track.trex.sample_duration
    size = r.u32() if flags & TFHD_SIZE else track.trex.sample_size
    sample_flags = r.u32() if flags & TFHD_FLAGS else track.trex.sample_flags
    if r.remaining():
        raise Mp4Error(f"{r.remaining()} bytes after the fields its flags declare", where=tfhd.path,
                       offset=tfhd.start)
    if not 1 <= index <= len(track.entries):
        raise Mp4Error(f"sample_description_index {index} outside the stsd's {len(track.entries)} entries",
                       where=tfhd.path, offset=tfhd.start)
    tfdt = only(kids, b"tfdt", traf.path)
    r = Reader(data, tfdt)
    version, _ = r.full_header()
    decode_time = r.uint(bool(version))
    if r.remaining():
        raise Mp4Error(f"{r.remaining()} trailing bytes", where=tfdt.path, offset=tfdt.start)
    # Without default-base-is-moof only the first traf counts from the moof; later ones continue after
    # the previous traf's data, which moves with the mdat, so their offsets must not be patched.
    moof_relative = bool(flags & TFHD_BASE_IS_MOOF) or first_in_moof
    base = moof.start if moof_relative else data_end
    runs: list[Run] = []
    for b in kids:
        if b.type != b"trun":
            continue
        cursor = runs[-1].data_start + sum(s.size for s in runs[-1].samples) if runs else None
        runs.append(_trun(data, b, (duration, size, sample_flags), base, cursor))
    if not runs:
        raise Mp4Error("no trun", where=traf.path, offset=traf.start)
    kept = sum(b.size for b in kids if b.type not in (b"tfhd", b"tfdt"))
    return Traf(track_id, traf, tfhd, flags, index, tfdt, decode_time, tuple(runs), moof_relative, kept)


def _trun(data: bytes | memoryview, trun: Box, defaults: tuple[int, int, int], base: int,
          cursor: int | None) -> Run:
    r = Reader(data, trun)
    version, flags = r.full_header()
    count = r.u32()
    data_offset_at = 0
    if flags & TRUN_DATA_OFFSET:
        data_offset_at = r.pos
        data_start = base + r.i32()
    elif cursor is not None:
        data_start = cursor
    else:
        raise Mp4Error("no data_offset and nothing to continue from", where=trun.path, offset=trun.start)
    first_flags = r.u32() if flags & TRUN_FIRST_FLAGS else None
    per = 4 * sum(bool(flags & f) for f in (TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO))
    if count * per != r.remaining():
        raise Mp4Error(f"{count} samples of {per} bytes do not fill its {r.remaining()} bytes",
                       where=trun.path, offset=trun.start)
    d_duration, d_size, d_flags = defaults
    first_duration_at = r.pos if flags & TRUN_DURATION and count else 0
    # The whole sample table in one unpack (a parse of a 10 s segment meets hundreds of samples): each
    # present field is a column; an absent one takes the default. Version 1 composition offsets are
    # signed (B-frames with negative_cts_offsets); version 0 ones are not.
    step = per // 4
    table = struct.unpack_from(f">{count * step}{'i' if version else 'I'}", data, r.pos) if step else ()
    r.skip(count * per)
    columns = iter(range(step))
    fields = []
    for flag, default in ((TRUN_DURATION, d_duration), (TRUN_SIZE, d_size), (TRUN_FLAGS, d_flags)):
        if flags & flag:
            column = table[next(columns)::step]
            fields.append(column if not version else [v & 0xFFFFFFFF for v in column])
        else:
            fields.append(itertools.repeat(default, count))
    ctos = table[next(columns)::step] if flags & TRUN_CTO else itertools.repeat(0, count)
    samples = tuple(map(Sample._make, zip(*fields, ctos, strict=True)))
    if first_flags is not None and samples:
        first = samples[0]
        samples = (Sample(first.duration, first.size, first_flags, first.cto), *samples[1:])
    return Run(trun.start, data_offset_at, first_duration_at, data_start, samples)


def lead_traf(segment: Segment, fragment: Fragment) -> tuple[Track, Traf]:
    """The track and traf that place a fragment in time: the lead (video) track's, else its first traf's."""
    lead = segment.init.lead
    traf = fragment.traf(lead.track_id) or fragment.trafs[0]
    return segment.init.track(traf.track_id), traf
