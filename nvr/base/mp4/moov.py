"""The init part of a fragmented MP4 (``ftyp`` + ``moov``): its tracks, their timescales and sample entries."""

from __future__ import annotations

from dataclasses import dataclass

from nvr.base.mp4.boxes import Box, Mp4Error, Reader, children, fourcc, iter_boxes, only

HEVC = (b"hev1", b"hvc1")
# Sample entries that start with the VisualSampleEntry fields (width and height at a fixed place).
_VISUAL_FIELDS = 78


@dataclass(frozen=True)
class Trex:
    """A track's fragment defaults (``mvex/trex``)."""

    sample_description_index: int
    sample_duration: int
    sample_size: int
    sample_flags: int


@dataclass(frozen=True)
class Edit:
    """One edit list entry: ``media_time`` -1 is an empty edit (a hole of ``duration``)."""

    duration: int  # movie timescale
    media_time: int  # media timescale, -1 for an empty edit


@dataclass(frozen=True)
class Track:
    """One ``trak`` as far as stitching needs it."""

    track_id: int
    handler: str  # "vide", "soun", ...
    timescale: int  # mdhd: units per second of this track's sample times
    entries: tuple[bytes, ...]  # the stsd sample entry boxes, whole (header included), in index order
    width: int  # video sample entry's, 0 for other tracks
    height: int
    trex: Trex
    edits: tuple[Edit, ...]

    @property
    def fourcc(self) -> str:
        """The codec four-character code of the first sample entry (avc1, hev1, mp4a…)."""
        return fourcc(self.entries[0][4:8])

    @property
    def codec(self) -> str:
        """The codec family: hev1 and hvc1 carry the same HEVC bitstream, so they are one codec here."""
        return "hevc" if self.entries[0][4:8] in HEVC else self.fourcc


@dataclass(frozen=True)
class Init:
    """A segment's ``ftyp`` and ``moov``: the raw bytes (a clip's init is rebuilt from them) and their tracks."""

    ftyp: bytes
    moov: bytes
    movie_timescale: int
    tracks: tuple[Track, ...]

    def track(self, track_id: int) -> Track:
        """The track with this id; an unknown id is an :class:`Mp4Error` (a traf naming no trak)."""
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise Mp4Error(f"track {track_id} is not in the moov")

    @property
    def layout(self) -> tuple[tuple[int, str, int, str], ...]:
        """What must match for fragments of two segments to share one init: ids, handlers, timescales, codecs."""
        return tuple((t.track_id, t.handler, t.timescale, t.codec) for t in self.tracks)

    @property
    def lead(self) -> Track:
        """The track whose times place a fragment: the first video track, else the first track."""
        return next((t for t in self.tracks if t.handler == "vide"), self.tracks[0])


def _timescale(buf: bytes | memoryview, header: Box) -> int:
    """The timescale of an ``mvhd`` or ``mdhd`` (same layout up to it: times of 4 or 8 bytes by version)."""
    r = Reader(buf, header)
    version, _ = r.full_header()
    r.skip(16 if version else 8)
    timescale = r.u32()
    if timescale == 0:
        raise Mp4Error("timescale 0", where=header.path)
    return timescale


def parse_init(buf: bytes | memoryview, ftyp: Box, moov: Box) -> Init:
    """The tracks of a fragmented MP4's moov; a moov without ``mvex`` (not fragmented) is an error."""
    kids = children(buf, moov)
    movie_timescale = _timescale(buf, only(kids, b"mvhd", moov.path))
    mvex = only(kids, b"mvex", moov.path)
    trexes = {}
    for b in children(buf, mvex):
        if b.type == b"trex":
            r = Reader(buf, b)
            r.full_header((0,))
            track_id = r.u32()
            trexes[track_id] = Trex(r.u32(), r.u32(), r.u32(), r.u32())
    tracks = []
    for trak in (b for b in kids if b.type == b"trak"):
        tracks.append(_track(buf, trak, trexes))
    if not tracks:
        raise Mp4Error("no trak", where=moov.path)
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise Mp4Error(f"track ids repeat: {ids}", where=moov.path)
    return Init(bytes(buf[ftyp.start:ftyp.end]), bytes(buf[moov.start:moov.end]), movie_timescale, tuple(tracks))


def _track(buf: bytes | memoryview, trak: Box, trexes: dict[int, Trex]) -> Track:
    kids = children(buf, trak)
    tkhd = only(kids, b"tkhd", trak.path)
    r = Reader(buf, tkhd)
    version, _ = r.full_header()
    r.skip(16 if version else 8)
    track_id = r.u32()
    if track_id not in trexes:
        raise Mp4Error(f"track {track_id} has no trex", where=trak.path)
    edits: tuple[Edit, ...] = ()
    edts = only(kids, b"edts", trak.path, required=False)
    if edts is not None:
        elst = only(children(buf, edts), b"elst", edts.path, required=False)
        if elst is not None:
            edits = parse_elst(buf, elst)
    mdia = only(kids, b"mdia", trak.path)
    mkids = children(buf, mdia)
    timescale = _timescale(buf, only(mkids, b"mdhd", mdia.path))
    hdlr = only(mkids, b"hdlr", mdia.path)
    r = Reader(buf, hdlr)
    r.full_header((0,))
    r.skip(4)
    handler = fourcc(r.raw(4))
    minf = only(mkids, b"minf", mdia.path)
    stbl = only(children(buf, minf), b"stbl", minf.path)
    stsd = only(children(buf, stbl), b"stsd", stbl.path)
    r = Reader(buf, stsd)
    r.full_header((0, 1))
    count = r.u32()
    boxes = children(buf, stsd, 8)
    if count == 0 or count != len(boxes):
        raise Mp4Error(f"declares {count} sample entries and holds {len(boxes)}", where=stsd.path)
    entries = tuple(bytes(buf[b.start:b.end]) for b in boxes)
    width = height = 0
    if handler == "vide":
        first = boxes[0]
        if first.size < first.header + _VISUAL_FIELDS:
            raise Mp4Error("video sample entry shorter than its fixed fields", where=first.path)
        r = Reader(buf, first, first.body + 24)
        width, height = r.u16(), r.u16()
    trex = trexes[track_id]
    return Track(track_id, handler, timescale, entries, width, height, trex, edits)


def parse_elst(buf: bytes | memoryview, elst: Box) -> tuple[Edit, ...]:
    """The entries of an ``elst`` box (rates are not kept: every edit here plays at rate 1)."""
    r = Reader(buf, elst)
    version, _ = r.full_header()
    count = r.u32()
    if count * (20 if version else 12) != r.remaining():
        raise Mp4Error(f"{count} entries do not fill {r.remaining()} bytes", where=elst.path)
    out = []
    for _ in range(count):
        duration = r.uint(bool(version))
        media_time = r.i64() if version else r.i32()
        r.skip(4)  # media_rate integer and fraction
        out.append(Edit(duration, media_time))
    return tuple(out)


def entry_key(entry: bytes, handler: str) -> bytes:
    """What makes two sample entries the same decoder configuration: all their bytes but ``btrt`` boxes.

    ``btrt`` (bitrate) is a statistic, not configuration: an ffmpeg restart may write other
    values for the same stream, and that must not split a clip.
    """
    fixed = {"vide": _VISUAL_FIELDS, "soun": 28}.get(handler)
    if fixed is None or len(entry) < 8 + fixed or (handler == "soun" and entry[16:18] != b"\0\0"):
        return entry  # a layout not known here (or an audio entry of version 1/2): compare whole
    try:
        kids = list(iter_boxes(entry, 8 + fixed, len(entry), fourcc(entry[4:8])))
    except Mp4Error:
        return entry
    return entry[:8 + fixed] + b"".join(entry[b.start:b.end] for b in kids if b.type != b"btrt")


def parameter_sets_in_hvcc(entry: bytes) -> bool:
    """Whether an HEVC sample entry's ``hvcC`` holds a VPS, an SPS and a PPS (NAL types 32, 33, 34)."""
    if len(entry) < 8 + _VISUAL_FIELDS:
        return False
    try:
        for child in iter_boxes(entry, 8 + _VISUAL_FIELDS, len(entry), fourcc(entry[4:8])):
            if child.type != b"hvcC":
                continue
            r = Reader(entry, child)
            r.skip(22)
            found = set()
            for _ in range(r.u8()):
                nal_type = r.u8() & 0x3F
                count = r.u16()
                for _ in range(count):
                    r.skip(r.u16())
                if count:
                    found.add(nal_type)
            return {32, 33, 34} <= found
    except Mp4Error:
        return False
    return False
