"""Parsing stored segments: checked sample by sample against ffmpeg's demuxer, and malformed files refused."""

from __future__ import annotations

import random
import struct

import pytest

from nvr.base.mp4 import Mp4Error, parse_segment
from nvr.base.mp4.fragments import TFHD_BASE_DATA_OFFSET
from tests.base.mp4 import media


@pytest.mark.parametrize(("name", "tracks"), [
    ("av", [(1, "vide", "avc1", 160, 120), (2, "soun", "mp4a", 0, 0)]),
    ("h264", [(1, "vide", "avc1", 160, 120)]),
    ("hevc", [(1, "vide", "hev1", 160, 120)]),
    ("mjpeg", [(1, "vide", "mp4v", 160, 120)]),
    ("h264_big", [(1, "vide", "avc1", 192, 144)]),
])
def test_tracks(made, name, tracks):
    seg = parse_segment(made[name][0].data)
    assert [(t.track_id, t.handler, t.fourcc, t.width, t.height) for t in seg.init.tracks] == tracks
    assert seg.init.lead.handler == "vide"
    assert {t.handler: t.timescale for t in seg.init.tracks}.get("soun", 16000) == 16000


@pytest.mark.parametrize("name", ["av", "hevc", "mjpeg"])
def test_samples_match_ffmpeg(made, name):
    for m in made[name]:
        seg = parse_segment(m.data)
        ours: dict[int, list[tuple[int, int, int, int, bool]]] = {}
        starts = {}
        for f in seg.fragments:
            assert f.start < f.moof_end < f.end <= seg.size
            for traf in f.trafs:
                # Each fragment's decode time continues the previous one's of the same track.
                assert traf.decode_time == starts.get(traf.track_id, traf.decode_time)
                t = traf.decode_time
                for s in traf.samples:
                    ours.setdefault(traf.track_id, []).append((t, t + s.cto, s.duration, s.size, s.sync))
                    t += s.duration
                starts[traf.track_id] = t
            video = f.traf(seg.init.lead.track_id)
            if video is not None:
                assert video.first_sync  # frag_keyframe: every fragment starts at a keyframe
        theirs: dict[int, list[tuple[int, int, int, int, bool]]] = {}
        for p in media.packets(m.path):
            theirs.setdefault(p.stream + 1, []).append((p.dts, p.pts, p.duration, p.size, p.key))
        assert ours.keys() == theirs.keys()
        for track_id, rows in ours.items():
            # ffmpeg may shift a whole stream (negative dts): compare times relative to the first sample's.
            assert _relative(rows) == _relative(theirs[track_id]), track_id


def _relative(rows):
    d0 = rows[0][0]
    return [(d - d0, p - d0, duration, size, key) for d, p, duration, size, key in rows]


def _at(data: bytes, kind: bytes, nth: int = 0) -> int:
    """Offset of the nth box of type ``kind`` (found by its type bytes: the test does not trust the parser)."""
    at = -1
    for _ in range(nth + 1):
        at = data.index(kind, at + 1)
    return at - 4


def _set(data: bytes, at: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def _rename(data: bytes, kind: bytes, new: bytes) -> bytes:
    at = _at(data, kind)
    return data[:at + 4] + new + data[at + 8:]


def _mutations(d: bytes) -> list[tuple[str, bytes, str]]:
    moov, moof, trun, tfhd = _at(d, b"moov"), _at(d, b"moof"), _at(d, b"trun"), _at(d, b"tfhd")
    mdat = _at(d, b"mdat")
    init = d[:moof]
    moof_box = d[moof:mdat]
    return [
        ("empty", b"", "does not start with ftyp"),
        ("cut in the last box", d[:-10], "runs .* past its container"),
        ("cut in an mdat", d[:mdat + 100], "runs .* past its container"),
        ("no moov", d[:moov] + d[moof:], "no moov"),
        ("not fragmented", _rename(d, b"mvex", b"free"), "moov: no mvex box"),
        ("two moovs", init + d[moov:moof] + d[moof:], "a second moov"),
        ("moof first", d[:moov] + moof_box + d[moov:], "a moof comes before the moov"),
        ("mdat outside a fragment", init + d[mdat:], "mdat outside any fragment"),
        ("moof without mdat", init + moof_box, "moof without an mdat"),
        ("two moofs in a row", init + moof_box + d[moof:], "moof without an mdat"),
        ("sample count lies", _set(d, trun + 12, ">I", struct.unpack_from(">I", d, trun + 12)[0] + 1),
         "samples of .* do not fill"),
        ("explicit base_data_offset", _set(d, tfhd + 8, ">I", struct.unpack_from(">I", d, tfhd + 8)[0]
                                           | TFHD_BASE_DATA_OFFSET), "explicit base_data_offset"),
        ("unknown track", _set(d, tfhd + 12, ">I", 9), "track 9 is not in the moov"),
        ("tfdt version 2", _set(d, _at(d, b"tfdt") + 8, ">B", 2), "version 2 is not one of"),
        ("no tfdt", _rename(d, b"tfdt", b"free"), "no tfdt box"),
        ("encrypted", _rename(d, b"tfdt", b"senc"), "encrypted"),
        ("data outside the mdat", _set(d, trun + 16, ">i", 1 << 24), "not inside the mdat"),
        ("description index", _set(d, _at(d, b"trex") + 16, ">I", 5), "sample_description_index 5 outside"),
        ("stsd count", _set(d, _at(d, b"stsd") + 12, ">I", 2), "declares 2 sample entries and holds 1"),
        ("timescale 0", _set(d, _at(d, b"mdhd") + 20, ">I", 0), "timescale 0"),
        ("no trak", _rename(d, b"trak", b"free").replace(b"trak", b"free"), "no trak"),
        ("no traf", _rename(d, b"traf", b"free").replace(b"traf", b"free"), "no traf"),
        ("mfhd version", _set(d, _at(d, b"mfhd") + 8, ">B", 1), "version 1 is not one of"),
        ("box between moof and mdat", init + moof_box + struct.pack(">I4s", 8, b"sidx") + d[mdat:],
         "sidx between a moof and its mdat"),
    ]


@pytest.mark.parametrize("case", range(24))
def test_malformed_segments(made, case):
    name, data, message = _mutations(made["av"][0].data)[case]
    with pytest.raises(Mp4Error, match=message):
        parse_segment(data)


def test_fuzzed_segments_raise_only_mp4error(made):
    """Random damage to the boxes (not the media bytes) parses or is an Mp4Error, nothing else."""
    d = made["av"][0].data
    rng = random.Random(20240611)
    heads = [(0, _at(d, b"mdat"))]  # ftyp, moov and the first moof: where every structure is
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(400):
        b = bytearray(d)
        lo, hi = heads[0]
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(lo, hi)] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[:rng.randrange(len(b))]
        try:
            parse_segment(bytes(b))
            outcomes["parsed"] += 1
        except Mp4Error:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50 and outcomes["parsed"] > 10


def test_memoryview_input(made):
    d = made["mjpeg"][0].data
    assert parse_segment(memoryview(d)) == parse_segment(d)


def test_partial_segment_drops_only_its_unfinished_tail(made):
    """A killed ffmpeg leaves a file complete up to its last fragment: partial=True reads up to there."""
    d = made["av"][0].data
    whole = parse_segment(d)
    last = whole.fragments[-1]
    for cut in (last.start + 3, last.start + 40, last.moof_end + 4, last.end - 1):
        with pytest.raises(Mp4Error):
            parse_segment(d[:cut])
        seg = parse_segment(d[:cut], partial=True)
        assert seg.fragments == whole.fragments[:-1] and seg.dropped_tail == cut - last.start
    assert parse_segment(d, partial=True).dropped_tail == 0
    with pytest.raises(Mp4Error, match="no moov"):
        parse_segment(d[:_at(d, b"moov") + 100], partial=True)  # an unfinished init is not forgiven
    bad = _mutations(d)[10][1]  # a lying trun count is damage, not a cut-off tail
    with pytest.raises(Mp4Error, match="do not fill"):
        parse_segment(bad, partial=True)
