"""A clip's init: durations, edit lists, mehd, sample entries; ffmpeg reads it (see test_stitch for playback)."""

from __future__ import annotations

import struct

import pytest

from nvr.base.mp4 import Mp4Error, parse_segment
from nvr.base.mp4.boxes import children, iter_boxes
from nvr.base.mp4.initseg import TrackInit, build_init, hvc1_entry
from nvr.base.mp4.moov import Edit, parse_init
from tests.base.mp4.test_moov import _hvcc_with


def fields(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """(version, duration) of every mvhd, tkhd, mdhd and mehd of an init, read without the library's parser."""
    out: dict[str, list[tuple[int, int]]] = {}
    for kind, v0, v1 in ((b"mvhd", 16, 24), (b"tkhd", 20, 28), (b"mdhd", 16, 24), (b"mehd", 4, 4)):
        at = -1
        while (at := data.find(kind, at + 1)) >= 0:
            body = at + 4
            version = data[body]
            value = struct.unpack_from(">Q" if version else ">I", data, body + (v1 if version else v0))[0]
            out.setdefault(kind.decode(), []).append((version, value))
    return out


def reparse(data: bytes):
    ftyp, moov = iter_boxes(data, 0, len(data))
    return parse_init(data, ftyp, moov)


def test_durations_edits_and_entries(made):
    init = parse_segment(made["av"][0].data).init
    tracks = {
        1: TrackInit(init.tracks[0].entries, (Edit(2564, 4464),), 26255),
        2: TrackInit(init.tracks[1].entries, (Edit(500, -1), Edit(2064, 0)), 33024),
    }
    built = build_init(init, 2564, tracks)
    assert built.startswith(init.ftyp)
    again = reparse(built)
    assert again.layout == init.layout and [t.entries for t in again.tracks] == [t.entries for t in init.tracks]
    assert [t.edits for t in again.tracks] == [tracks[1].edits, tracks[2].edits]
    f = fields(built)
    assert [d for _, d in f["mvhd"]] == [2564] and [d for _, d in f["tkhd"]] == [2564, 2564]
    assert [d for _, d in f["mdhd"]] == [26255, 33024] and f["mehd"] == [(1, 2564)]
    # Everything else is the source's: the same boxes in the same order (plus edts and mehd).
    moov = next(b for b in iter_boxes(built, 0, len(built)) if b.type == b"moov")
    assert [b.type for b in children(built, moov)] == [b"mvhd", b"trak", b"trak", b"mvex", b"udta"]


def test_long_durations_widen_to_version_1(made):
    init = parse_segment(made["h264"][0].data).init
    long = 1 << 33
    built = build_init(init, long, {1: TrackInit(init.tracks[0].entries, (Edit(long, 0),), long)})
    f = fields(built)
    assert f["mvhd"] == [(1, long)] and f["tkhd"] == [(1, long)] and f["mdhd"] == [(1, long)]
    again = reparse(built)
    assert again.movie_timescale == init.movie_timescale and again.tracks[0].timescale == 10240
    assert again.tracks[0].track_id == 1 and again.tracks[0].width == 160


def test_every_track_needs_a_declaration(made):
    init = parse_segment(made["av"][0].data).init
    with pytest.raises(Mp4Error, match=r"no clip declaration for tracks \[2\]"):
        build_init(init, 1, {1: TrackInit(init.tracks[0].entries, (Edit(1, 0),), 1)})


def test_hvc1_retag_rule(made):
    hev1 = parse_segment(made["hevc"][0].data).init.tracks[0].entries[0]
    assert hev1[4:8] == b"hev1"
    hvc1 = hvc1_entry(hev1)
    assert hvc1[4:8] == b"hvc1" and hvc1[:4] + hvc1[8:] == hev1[:4] + hev1[8:]
    assert hvc1_entry(hvc1) == hvc1
    in_band_only = _hvcc_with(hev1, 33, 39)  # the hvcC lacks an SPS: the decoder needs the in-band ones
    assert hvc1_entry(in_band_only) == in_band_only
    avc1 = parse_segment(made["h264"][0].data).init.tracks[0].entries[0]
    assert hvc1_entry(avc1) == avc1
