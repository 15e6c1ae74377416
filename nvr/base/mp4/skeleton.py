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

from nvr.base.mp4.boxes import Mp4Error, iter_boxes
from nvr.base.mp4.fragments import Segment, parse_segment

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
