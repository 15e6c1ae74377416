"""One fragment rewritten for a clip: new decode times, sequence number and sample entry, and its ``prft``.

Only ``mfhd``, ``tfhd`` (when a sample description index is set), ``tfdt``,
the ``trun`` data offsets and, when a join overlaps, one first-sample duration
change; every other byte of the fragment, the whole ``mdat`` included, is copied. The new size follows from the parsed fragment
alone (:func:`moof_size`), so a clip's length is known before any byte is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from nvr.base.mp4.boxes import Mp4Error, box, full_box, i32, iter_boxes, u32, u64
from nvr.base.mp4.fragments import TFHD_DESCRIPTION_INDEX, Fragment, Traf

TFDT_V1_SIZE = 20  # header 8, version and flags 4, 64-bit decode time 8
MFHD_SIZE = 16
PRFT_SIZE = 32  # version 1: header 8, version and flags 4, track 4, NTP 8, media time 8
# prft flags 24 (ISO/IEC 14496-12:2022 8.16.5): "the UTC time has a consistent, small (ideally zero)
# offset from the real-time of the experience depicted in the media at media_time". The recorder places
# segments by arrival on the wall clock, which is capture time plus a small steady transport delay.
PRFT_FLAGS = 24
NTP_EPOCH_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01


def _tfhd_growth(traf: Traf, indexes: Mapping[int, int]) -> int:
    return 4 if traf.track_id in indexes and not traf.tfhd_flags & TFHD_DESCRIPTION_INDEX else 0


def _traf_size(traf: Traf, indexes: Mapping[int, int]) -> int:
    tfhd = traf.tfhd.size - traf.tfhd.header + 8 + _tfhd_growth(traf, indexes)
    return 8 + tfhd + TFDT_V1_SIZE + traf.kept


def moof_size(fragment: Fragment, indexes: Mapping[int, int]) -> int:
    """The size of the fragment's moof once rewritten (``indexes``: track → sample description index to set)."""
    return 8 + MFHD_SIZE + sum(_traf_size(t, indexes) for t in fragment.trafs) + fragment.kept


def fragment_size(fragment: Fragment, indexes: Mapping[int, int]) -> int:
    """Bytes a rewritten fragment takes in a clip: its prft, its new moof, and the rest copied as is."""
    return PRFT_SIZE + moof_size(fragment, indexes) + (fragment.end - fragment.moof_end)


def rewrite_moof(data: bytes | memoryview, fragment: Fragment, decode_times: Mapping[int, int], sequence: int,
                 indexes: Mapping[int, int], trims: Mapping[int, int] | None = None) -> bytes:
    """The fragment's moof with ``decode_times`` (track → tfdt), ``sequence`` and ``indexes`` written in.

    ``data`` is the segment's bytes. Data offsets counted from the moof start grow by
    as many bytes as the moof does, so they still point at the same samples of the mdat.
    ``trims`` (track → units) shortens a track's first sample by that much: a fragment whose
    start was moved later to clear the previous one keeps its other samples where they were.
    """
    growth = moof_size(fragment, indexes) - (fragment.moof_end - fragment.start)
    trafs = {t.box.start: t for t in fragment.trafs}
    out = [full_box(b"mfhd", 0, 0, u32(sequence))]
    for child in iter_boxes(data, fragment.moof_body, fragment.moof_end, "moof"):
        if child.type == b"mfhd":
            continue
        if child.type == b"traf":
            traf = trafs[child.start]
            if traf.track_id not in decode_times:
                raise Mp4Error(f"no decode time given for track {traf.track_id}", where="moof/traf")
            trim = (trims or {}).get(traf.track_id, 0)
            out.append(_traf(data, traf, decode_times[traf.track_id], indexes, growth, trim))
        else:
            out.append(bytes(data[child.start:child.end]))
    new = box(b"moof", *out)
    if len(new) != growth + fragment.moof_end - fragment.start:
        raise Mp4Error(f"rewritten moof is {len(new)} bytes, {growth + fragment.moof_end - fragment.start} "
                       "were planned", where="moof", offset=fragment.start)
    return new


def _traf(data: bytes | memoryview, traf: Traf, decode_time: int, indexes: Mapping[int, int], growth: int,
          trim: int) -> bytes:
    patches: dict[int, dict[int, bytes]] = {}  # trun start -> {field offset: new bytes}
    for run in traf.runs:
        if traf.moof_relative and run.data_offset_at:
            old = int.from_bytes(data[run.data_offset_at:run.data_offset_at + 4], "big", signed=True)
            patches.setdefault(run.box_start, {})[run.data_offset_at] = i32(old + growth)
    if trim:
        first = traf.runs[0]
        if not first.first_duration_at or not 0 < trim < first.samples[0].duration:
            raise Mp4Error(f"cannot shorten track {traf.track_id}'s first sample by {trim}", where="moof/traf")
        patches.setdefault(first.box_start, {})[first.first_duration_at] = u32(first.samples[0].duration - trim)
    parts = []
    for child in iter_boxes(data, traf.box.body, traf.box.end, traf.box.path):
        if child.type == b"tfhd":
            parts.append(_tfhd(data, traf, indexes.get(traf.track_id)))
        elif child.type == b"tfdt":
            parts.append(full_box(b"tfdt", 1, 0, u64(decode_time)))
        elif child.start in patches:
            raw = bytearray(data[child.start:child.end])
            for at, value in patches[child.start].items():
                raw[at - child.start:at - child.start + 4] = value
            parts.append(bytes(raw))
        else:
            parts.append(bytes(data[child.start:child.end]))
    return box(b"traf", *parts)


def _tfhd(data: bytes | memoryview, traf: Traf, index: int | None) -> bytes:
    body = bytes(data[traf.tfhd.body:traf.tfhd.end])
    if index is None:
        return box(b"tfhd", body)
    # The index field follows track_ID (a base_data_offset before it is refused when parsing).
    if traf.tfhd_flags & TFHD_DESCRIPTION_INDEX:
        return box(b"tfhd", body[:8], u32(index), body[12:])
    flags = traf.tfhd_flags | TFHD_DESCRIPTION_INDEX
    return box(b"tfhd", body[:1], flags.to_bytes(3, "big"), body[4:8], u32(index), body[8:])


def ntp_time(wall_ms: int | Fraction) -> int:
    """A Unix time in milliseconds as a 64-bit NTP timestamp (seconds since 1900, 32-bit fraction)."""
    seconds = Fraction(wall_ms) / 1000
    whole = math.floor(seconds)
    return ((whole + NTP_EPOCH_OFFSET_S) << 32) | math.floor((seconds - whole) * (1 << 32))


def ntp_to_ms(ntp: int) -> int:
    """A 64-bit NTP timestamp as Unix milliseconds (rounded to the nearest)."""
    seconds, fraction = ntp >> 32, ntp & 0xFFFFFFFF
    return (seconds - NTP_EPOCH_OFFSET_S) * 1000 + ((fraction * 1000 + (1 << 31)) >> 32)


def prft(track_id: int, wall_ms: int | Fraction, media_time: int) -> bytes:
    """A ProducerReferenceTimeBox: the sample of ``track_id`` presented at ``media_time`` was captured at ``wall_ms``."""
    return full_box(b"prft", 1, PRFT_FLAGS, u32(track_id), u64(ntp_time(wall_ms)), u64(media_time))
