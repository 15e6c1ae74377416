"""A segment's skeleton: its bytes without the media, so a clip can be planned before any footage is read.

The planner (:func:`~nvr.base.mp4.stitch.plan_clip`) needs a segment's parsed
boxes, not its samples; the samples are read only when their turn comes to be
streamed. The skeleton is kept in the index at ingest, a few KB beside a segment
of megabytes, so planning a clip reads the index and nothing else.

What it holds: the segment's total length, how much of it is complete (a partial
segment's unfinished tail is not), and the byte regions a parse reads: the ``ftyp``,
the ``moov``, each ``moof``, and the header of every other top-level box (each
``mdat``'s, above all). Everything else is media payload, which no parse looks at.
:func:`parse_skeleton` puts the regions back at their offsets and parses that, so
its :class:`Segment` is, field for field, the one :func:`parse_segment` gives for
the real bytes: the same parser decides both, and there is no second one to drift.

Layout of version 1 (big-endian)::

    magic "NVSK", version u8, then zlib of:
      size u64, complete u64, region count u32,
      count x (offset u64, length u32), then the regions' bytes, in offset order.

A blob is only accepted in its canonical form: the regions must be exactly those
:func:`skeleton` would write for the bytes they rebuild, so a blob that drops,
moves or adds a region is an :class:`Mp4Error`, never a quietly different plan.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass, replace

from nvr.base.mp4.boxes import Mp4Error, fourcc, iter_boxes
from nvr.base.mp4.fragments import (
    TFHD_BASE_DATA_OFFSET,
    TFHD_DESCRIPTION_INDEX,
    TRUN_CTO,
    TRUN_DATA_OFFSET,
    TRUN_DURATION,
    TRUN_FIRST_FLAGS,
    TRUN_FLAGS,
    TRUN_SIZE,
    Segment,
    parse_segment,
)
from nvr.base.mp4.rewrite import MFHD_SIZE, PRFT_SIZE, TFDT_V1_SIZE

MAGIC = b"NVSK"
VERSION = 1
# Boxes kept whole: the ones a parse reads inside (the init, and each fragment's sample tables).
_WHOLE = (b"ftyp", b"moov", b"moof")
# A 10 s segment of a 50 Mbit/s 4K camera is about 60 MB: a larger length is a corrupt blob, refused
# before anything is mapped for it.
MAX_SEGMENT = 1 << 32
# A skeleton lists ~16 bytes per sample: 64 MiB is hours of 60 fps video with audio in one segment, and a
# zlib bomb stops there instead of inflating to gigabytes.
MAX_BODY = 1 << 26
_PREFIX = struct.Struct(">4sB")
_HEAD = struct.Struct(">QQI")
_REGION = struct.Struct(">QI")
_WHERE = "skeleton"
_U32, _I32, _U64 = struct.Struct(">I"), struct.Struct(">i"), struct.Struct(">Q")
# The trun fields before a first sample's composition offset, when present.
_BEFORE_CTO = (TRUN_DATA_OFFSET, TRUN_FIRST_FLAGS, TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS)


@dataclass(frozen=True)
class Region:
    """Bytes of the segment kept in its skeleton, and where they start in it."""

    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


def _regions(data: bytes | memoryview | mmap.mmap, complete: int) -> tuple[Region, ...]:
    """The skeleton's regions of ``data[:complete]``: whole init and moof boxes, every other box's header.

    Adjacent regions are merged (a moof and the mdat header after it are one), so the form is
    canonical: one set of bytes has exactly one list of regions.
    """
    spans: list[list[int]] = []
    for b in iter_boxes(data, 0, complete):
        end = b.end if b.type in _WHOLE else b.body
        if spans and spans[-1][1] == b.start:
            spans[-1][1] = end
        else:
            spans.append([b.start, end])
    return tuple(Region(a, bytes(data[a:z])) for a, z in spans)


def skeleton(data: bytes | memoryview | mmap.mmap, *, partial: bool = False) -> bytes:
    """The skeleton of a stored segment: everything :func:`parse_skeleton` needs to give its :class:`Segment`.

    ``data`` is parsed first (``partial`` as for :func:`parse_segment`), so a segment that
    would not parse has no skeleton: an :class:`Mp4Error` here, at ingest, not at playback.
    """
    seg = parse_segment(data, partial=partial)
    complete = seg.size - seg.dropped_tail
    regions = _regions(data, complete)
    table = b"".join(_REGION.pack(r.offset, len(r.data)) for r in regions)
    body = b"".join((_HEAD.pack(seg.size, complete, len(regions)), table, *(r.data for r in regions)))
    return _PREFIX.pack(MAGIC, VERSION) + zlib.compress(body, 9)


def _decode(blob: bytes | memoryview) -> tuple[int, int, tuple[Region, ...]]:
    """(size, complete, regions) of a version 1 blob, each checked on its own (not yet against a parse)."""
    if len(blob) < _PREFIX.size:
        raise Mp4Error(f"{len(blob)} bytes are too few for a skeleton", where=_WHERE)
    magic, version = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise Mp4Error(f"not a segment skeleton (magic {magic!r})", where=_WHERE)
    if version != VERSION:
        raise Mp4Error(f"unknown skeleton version {version} (this build reads {VERSION})", where=_WHERE)
    unzip = zlib.decompressobj()
    try:
        body = unzip.decompress(bytes(blob[_PREFIX.size:]), MAX_BODY)
    except zlib.error as err:
        raise Mp4Error(f"corrupt compressed body ({err})", where=_WHERE) from None
    if unzip.unconsumed_tail:
        raise Mp4Error(f"compressed body inflates past {MAX_BODY} bytes", where=_WHERE)
    if not unzip.eof or unzip.unused_data:
        raise Mp4Error("compressed body cut off or followed by stray bytes", where=_WHERE)
    if len(body) < _HEAD.size:
        raise Mp4Error("header cut off", where=_WHERE)
    size, complete, count = _HEAD.unpack_from(body)
    if not 0 < complete <= size <= MAX_SEGMENT:
        raise Mp4Error(f"complete length {complete} and length {size} are not 0 < complete <= length "
                       f"<= {MAX_SEGMENT}", where=_WHERE)
    table_end = _HEAD.size + count * _REGION.size
    if table_end > len(body):
        raise Mp4Error(f"table of {count} regions cut off", where=_WHERE)
    regions: list[Region] = []
    at = table_end
    for i in range(count):
        offset, length = _REGION.unpack_from(body, _HEAD.size + i * _REGION.size)
        if length == 0:
            raise Mp4Error(f"region {i} is empty", where=_WHERE, offset=offset)
        if regions and offset < regions[-1].end:
            raise Mp4Error(f"region {i} starts before region {i - 1} ends ({regions[-1].end})", where=_WHERE,
                           offset=offset)
        if offset + length > complete:
            raise Mp4Error(f"region {i} of {length} bytes runs past the complete length {complete}",
                           where=_WHERE, offset=offset)
        if at + length > len(body):
            raise Mp4Error(f"region {i}'s bytes cut off", where=_WHERE, offset=offset)
        regions.append(Region(offset, body[at:at + length]))
        at += length
    if at != len(body):
        raise Mp4Error(f"{len(body) - at} stray bytes after the regions", where=_WHERE)
    return size, complete, tuple(regions)


def parse_skeleton(blob: bytes | memoryview) -> Segment:
    """The :class:`Segment` of the segment a skeleton was made from, equal to its :func:`parse_segment`'s.

    Strict: a blob that is cut off, of an unknown version, not in canonical form or whose
    boxes do not parse is an :class:`Mp4Error`. Its ``size`` is the real segment's length,
    which the clip writer checks the fetched bytes against.
    """
    size, complete, regions = _decode(blob)
    # An anonymous mapping is zero pages the kernel backs only where written: the regions' few
    # pages, not the megabytes of media between them (which no parse reads).
    with mmap.mmap(-1, complete) as buf:
        for r in regions:
            buf[r.offset:r.end] = r.data
        seg = parse_segment(buf)
        if _regions(buf, complete) != regions:
            raise Mp4Error("regions are not the skeleton of the boxes they hold", where=_WHERE)
    return replace(seg, size=size, dropped_tail=size - complete)


# ---------------------------------------------------------------------- summary


@dataclass(frozen=True)
class FragmentSummary:
    """What a clip needs to know of a fragment it takes whole: its bytes in the clip, its tracks, its time."""

    size: int  # bytes in a clip (prft + rewritten moof + the rest) when no tfhd gains a description index
    growable: frozenset[int]  # tracks whose tfhd grows by 4 bytes when the clip sets a description index
    tracks: frozenset[int]
    first_track: int  # of its first traf
    times: tuple[tuple[int, int, int], ...]  # (track id, tfdt, first sample's composition offset), samples only


@dataclass(frozen=True)
class SkeletonSummary:
    """A segment's skeleton read only as deep as a clip that takes all of it needs (:func:`summarize`)."""

    size: int
    complete: int
    ftyp: bytes
    moov: bytes
    fragments: tuple[FragmentSummary, ...]


def summarize(blob: bytes | memoryview) -> SkeletonSummary:
    """The :class:`SkeletonSummary` of a skeleton, without parsing its sample tables.

    A fraction of :func:`parse_skeleton`'s cost: each moof's child box headers, each trun's
    header and first sample. It checks much less, so it only ever sizes a fragment the full parse
    also reads (the clip writer plans from :func:`parse_skeleton` and holds the sizes to this);
    anything it does not expect is an :class:`Mp4Error`, and the caller plans the full way.
    """
    size, complete, regions = _decode(blob)
    boxes = _top_boxes(regions, complete)
    if len(boxes) < 2 or boxes[0][0] != b"ftyp" or boxes[1][0] != b"moov":
        raise Mp4Error("does not start with ftyp and moov", where=_WHERE)
    fragments = []
    pending: tuple[int, bytes] | None = None
    for kind, start, end, raw in boxes[2:]:
        if kind == b"moof":
            if pending is not None:
                raise Mp4Error("moof without an mdat", where=_WHERE, offset=start)
            pending = (end, raw)
        elif kind == b"mdat":
            if pending is None:
                raise Mp4Error("mdat outside any fragment", where=_WHERE, offset=start)
            fragments.append(_summary(pending[1], end - pending[0]))
            pending = None
        elif kind in (b"ftyp", b"moov") or (pending is not None and kind not in (b"free", b"skip")):
            raise Mp4Error(f"unexpected {fourcc(kind)}", where=_WHERE, offset=start)
    if pending is not None:
        raise Mp4Error("moof without an mdat", where=_WHERE)
    return SkeletonSummary(size, complete, boxes[0][3], boxes[1][3], tuple(fragments))


def _top_boxes(regions: tuple[Region, ...], complete: int) -> list[tuple[bytes, int, int, bytes]]:
    """(type, start, end, bytes) of the top-level boxes of ``[0, complete)``; bytes only of those kept whole."""
    out: list[tuple[bytes, int, int, bytes]] = []
    pos = 0
    for r in regions:
        if r.offset != pos:
            raise Mp4Error(f"a region starts at {r.offset}, a box at {pos}", where=_WHERE, offset=r.offset)
        data, at, n = r.data, 0, len(r.data)
        while at < n:
            size = _U32.unpack_from(data, at)[0] if n - at >= 8 else 0
            kind = data[at + 4:at + 8]
            # 64-bit, to-the-end and uuid headers are legal, and the full parse reads them; not this one.
            if size < 8 or kind == b"uuid":
                raise Mp4Error("a box header this summary does not read", where=_WHERE, offset=r.offset + at)
            pos = r.offset + at + size
            # A box kept whole lies in its region; of any other, only the header is there, and the region
            # ends with it unless the box is nothing but that header.
            if kind in _WHOLE:
                if at + size > n:
                    raise Mp4Error(f"{fourcc(kind)} runs past its region", where=_WHERE, offset=r.offset + at)
                out.append((kind, r.offset + at, pos, data[at:at + size]))
                at += size
            else:
                if pos > complete or (size > 8 and at + 8 != n):
                    raise Mp4Error(f"{fourcc(kind)} runs past its region", where=_WHERE, offset=r.offset + at)
                out.append((kind, r.offset + at, pos, b""))
                at += 8
    if pos != complete:
        raise Mp4Error(f"boxes end at {pos}, the complete length is {complete}", where=_WHERE)
    return out


def _children(raw: bytes, a: int, b: int) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of the plain boxes laid end to end in ``raw[a:b]``; any other header is an error."""
    out = []
    while a < b:
        size = _U32.unpack_from(raw, a)[0] if b - a >= 8 else 0
        if size < 8 or a + size > b or raw[a + 4:a + 8] == b"uuid":
            raise Mp4Error("a box header this summary does not read", where=_WHERE, offset=a)
        out.append((raw[a + 4:a + 8], a, a + size))
        a += size
    return out


def _summary(raw: bytes, after: int) -> FragmentSummary:
    """One fragment's summary from its moof's bytes and the count of bytes after the moof, to the mdat's end."""
    # The sizes follow nvr.base.mp4.rewrite.fragment_size, box for box; tests hold the two equal.
    size = PRFT_SIZE + 8 + MFHD_SIZE + after
    growable, tracks, times, first = set(), set(), [], None
    for kind, start, stop in _children(raw, 8, len(raw)):
        if kind == b"mfhd":
            continue
        if kind != b"traf":
            size += stop - start
            continue
        size += 8 + TFDT_V1_SIZE
        track = decode = cto = None
        samples = 0
        for k, at, z in _children(raw, start + 8, stop):
            body = at + 8
            if k == b"tfhd":
                flags = _U32.unpack_from(raw, body)[0] & 0xFFFFFF
                if flags & TFHD_BASE_DATA_OFFSET or z - at < 16:
                    raise Mp4Error("tfhd this summary does not read", where=_WHERE, offset=0)
                track = _U32.unpack_from(raw, body + 4)[0]
                size += z - at
                if not flags & TFHD_DESCRIPTION_INDEX:
                    growable.add(track)
            elif k == b"tfdt":
                decode = _U64.unpack_from(raw, body + 4)[0] if raw[body] == 1 else _U32.unpack_from(raw, body + 4)[0]
            else:
                size += z - at
                if k == b"trun":
                    version_flags, count = _U32.unpack_from(raw, body)[0], _U32.unpack_from(raw, body + 4)[0]
                    flags = version_flags & 0xFFFFFF
                    if count and not samples:
                        cto = 0
                        if flags & TRUN_CTO:
                            skip = sum(bool(flags & f) for f in _BEFORE_CTO)
                            cto = (_I32 if version_flags >> 24 else _U32).unpack_from(raw, body + 8 + 4 * skip)[0]
                    samples += count
        if track is None or decode is None or track in tracks:
            raise Mp4Error("traf without tfhd or tfdt, or two of one track", where=_WHERE, offset=0)
        tracks.add(track)
        first = track if first is None else first
        if samples:
            times.append((track, decode, cto))
    if first is None:
        raise Mp4Error("no traf", where=_WHERE)
    return FragmentSummary(size, frozenset(growable), frozenset(tracks), first, tuple(times))
