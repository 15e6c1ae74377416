"""A clip's init segment (``ftyp`` + ``moov``), rebuilt from the first segment's: durations, edit lists, entries.

Everything not named here is copied from the source moov, box for box.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nvr.base.mp4.boxes import Box, Mp4Error, box, children, full_box, i64, iter_boxes, u32, u64
from nvr.base.mp4.moov import Edit, Init, parameter_sets_in_hvcc

_RATE_1 = b"\x00\x01\x00\x00"  # media_rate 1.0: integer 1, fraction 0


@dataclass(frozen=True)
class TrackInit:
    """How one track is declared in a clip's moov."""

    entries: tuple[bytes, ...]  # the stsd sample entries, in index order
    edits: tuple[Edit, ...]  # durations in the movie timescale, media times in the track's
    media_duration: int  # track timescale


def hvc1_entry(entry: bytes) -> bytes:
    """An HEVC sample entry retagged ``hev1`` → ``hvc1`` when that is valid; any other entry unchanged.

    Apple's players (Safari, AVFoundation, iOS, QuickTime) refuse HEVC in MP4 and HLS fMP4
    unless the sample entry is ``hvc1``. The two differ in one promise (ISO/IEC 14496-15 8.4.1):
    ``hvc1`` says the decoder gets its parameter sets from the ``hvcC``; ``hev1`` allows them to
    come only in-band. So the retag is valid when the hvcC holds a VPS, an SPS and a PPS; a stream
    that also repeats them in-band (cameras do, at each IDR) still decodes, as those copies are the
    same sets. When the hvcC lacks any of the three, the entry stays ``hev1``: retagging it would
    hand the decoder an init it cannot start from (Apple cannot play such a stream either way).
    The payload is never changed, only the four bytes of the type.
    """
    if entry[4:8] == b"hev1" and parameter_sets_in_hvcc(entry):
        return entry[:4] + b"hvc1" + entry[8:]
    return entry


def build_init(init: Init, duration: int, tracks: Mapping[int, TrackInit]) -> bytes:
    """The clip's ftyp + moov: ``duration`` in the movie timescale, ``tracks`` by track id (all of them)."""
    missing = {t.track_id for t in init.tracks} - set(tracks)
    if missing:
        raise Mp4Error(f"no clip declaration for tracks {sorted(missing)}")
    moov = init.moov
    top = next(iter_boxes(moov, 0, len(moov)))
    parts = []
    for child in children(moov, top):
        raw = moov[child.start:child.end]
        if child.type == b"mvhd":
            parts.append(_with_duration(b"mvhd", moov[child.body:child.end], 4, duration))
        elif child.type == b"trak":
            parts.append(_trak(moov, child, duration, tracks))
        elif child.type == b"mvex":
            # mehd: the whole duration of the fragments, which a player can't know from an empty moov.
            kept = [moov[b.start:b.end] for b in children(moov, child) if b.type != b"mehd"]
            parts.append(box(b"mvex", full_box(b"mehd", 1, 0, u64(duration)), *kept))
        else:
            parts.append(raw)
    return init.ftyp + box(b"moov", *parts)


def _trak(moov: bytes, trak: Box, duration: int, tracks: Mapping[int, TrackInit]) -> bytes:
    kids = children(moov, trak)
    tkhd = next(b for b in kids if b.type == b"tkhd")
    body = moov[tkhd.body:tkhd.end]
    at = 20 if body[0] == 1 else 12  # track_ID after version, flags, creation and modification times
    if len(body) < at + 4:
        raise Mp4Error("tkhd cut off", where=tkhd.path)
    plan = tracks[int.from_bytes(body[at:at + 4], "big")]
    parts = []
    for child in kids:
        if child.type == b"tkhd":
            parts.append(_with_duration(b"tkhd", body, 8, duration))
            parts.append(box(b"edts", _elst(plan.edits)))
        elif child.type == b"edts":
            continue  # the source's edits describe the source's timeline, not the clip's
        elif child.type == b"mdia":
            parts.append(_mdia(moov, child, plan))
        else:
            parts.append(moov[child.start:child.end])
    return box(b"trak", *parts)


def _mdia(moov: bytes, mdia: Box, plan: TrackInit) -> bytes:
    parts = []
    for child in children(moov, mdia):
        if child.type == b"mdhd":
            parts.append(_with_duration(b"mdhd", moov[child.body:child.end], 4, plan.media_duration))
        elif child.type == b"minf":
            stsd = _stsd(plan)

            def stbl(container: Box, stsd: bytes = stsd) -> bytes:
                return _rebuild(moov, container, {b"stsd": lambda _: stsd})

            parts.append(_rebuild(moov, child, {b"stbl": stbl}))
        else:
            parts.append(moov[child.start:child.end])
    return box(b"mdia", *parts)


def _rebuild(moov: bytes, container: Box, replace: Mapping[bytes, Callable[[Box], bytes]]) -> bytes:
    """A container with the children named in ``replace`` rebuilt, every other one copied."""
    parts = [replace[c.type](c) if c.type in replace else moov[c.start:c.end] for c in children(moov, container)]
    return box(container.type, *parts)


def _stsd(plan: TrackInit) -> bytes:
    return full_box(b"stsd", 0, 0, u32(len(plan.entries)), *plan.entries)


def _elst(edits: tuple[Edit, ...]) -> bytes:
    rows = [u64(e.duration) + i64(e.media_time) + _RATE_1 for e in edits]
    return full_box(b"elst", 1, 0, u32(len(rows)), *rows)


def _with_duration(kind: bytes, body: bytes, middle: int, duration: int) -> bytes:
    """An mvhd/tkhd/mdhd body with its duration replaced, widened to version 1 if 32 bits don't hold it.

    The three share a layout: version and flags, creation and modification times (32 or
    64 bits), ``middle`` bytes (timescale, or track_ID and a reserved word), then the duration.
    """
    wide = body[0] == 1
    times = 16 if wide else 8
    width = 8 if wide else 4
    if len(body) < 4 + times + middle + width:
        raise Mp4Error(f"{len(body)} bytes are too few for its fields", where=kind.decode())
    created, modified = body[4:4 + times // 2], body[4 + times // 2:4 + times]
    mid = body[4 + times:4 + times + middle]
    rest = body[4 + times + middle + width:]
    if wide or duration > 0xFFFFFFFF:
        return box(kind, b"\x01", body[1:4], created.rjust(8, b"\0"), modified.rjust(8, b"\0"), mid,
                   u64(duration), rest)
    return box(kind, body[:4], created, modified, mid, u32(duration), rest)
