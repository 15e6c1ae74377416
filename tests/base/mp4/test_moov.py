"""The init part: tracks, sample entries and what makes two of them one configuration."""

from __future__ import annotations

import struct

import pytest

from nvr.base.mp4 import Mp4Error, parse_segment
from nvr.base.mp4.boxes import box, full_box, iter_boxes
from nvr.base.mp4.moov import entry_key, parameter_sets_in_hvcc, parse_elst


def entry(made, name: str, track: int = 0) -> bytes:
    return parse_segment(made[name][0].data).init.tracks[track].entries[0]


def test_init_of_a_segment(made):
    init = parse_segment(made["av"][0].data).init
    assert init.layout == ((1, "vide", 10240, "avc1"), (2, "soun", 16000, "mp4a"))
    assert init.movie_timescale > 0 and init.ftyp[4:8] == b"ftyp" and init.moov[4:8] == b"moov"
    assert all(t.edits == () and t.trex.sample_description_index == 1 for t in init.tracks)
    assert parse_segment(made["hevc"][0].data).init.tracks[0].codec == "hevc"
    with pytest.raises(Mp4Error, match="track 3 is not in the moov"):
        init.track(3)


def test_entry_key_ignores_bitrate_statistics(made):
    audio = entry(made, "av", 1)
    kids = [b.type for b in iter_boxes(audio, 36, len(audio))]
    assert b"btrt" in kids
    at = audio.index(b"btrt")
    other = audio[:at + 4] + b"\x00\x00\x99\x99" + audio[at + 8:]  # another buffer size in the btrt
    assert other != audio and entry_key(other, "soun") == entry_key(audio, "soun")
    video = entry(made, "av")
    changed = video[:-1] + bytes([video[-1] ^ 1])
    assert entry_key(changed, "vide") != entry_key(video, "vide")
    assert entry_key(b"\0\0\0\x10abcd12345678", "text") == b"\0\0\0\x10abcd12345678"
    assert entry_key(video[:40], "vide") == video[:40]  # too short for its fields: compared whole


def _hvcc_with(e: bytes, old_type: int, new_type: int, cut: bool = False) -> bytes:
    at = e.index(b"hvcC") - 4
    size = struct.unpack_from(">I", e, at)[0]
    payload = bytearray(e[at + 8:at + size])
    pos = 23
    for _ in range(payload[22]):
        if payload[pos] & 0x3F == old_type:
            payload[pos] = (payload[pos] & 0xC0) | new_type
        count = struct.unpack_from(">H", payload, pos + 1)[0]
        pos += 3
        for _ in range(count):
            pos += 2 + struct.unpack_from(">H", payload, pos)[0]
    if cut:
        payload = payload[:30]
    new = e[:at] + box(b"hvcC", bytes(payload)) + e[at + size:]
    return struct.pack(">I", len(new)) + new[4:]


def test_parameter_sets_in_hvcc(made):
    hevc = entry(made, "hevc")
    assert parameter_sets_in_hvcc(hevc)
    assert not parameter_sets_in_hvcc(_hvcc_with(hevc, 33, 39))  # no SPS left (39 is SEI)
    assert not parameter_sets_in_hvcc(_hvcc_with(hevc, 34, 39))  # no PPS
    assert not parameter_sets_in_hvcc(_hvcc_with(hevc, 0, 0, cut=True))  # truncated arrays
    assert not parameter_sets_in_hvcc(entry(made, "av"))  # avc1: no hvcC at all
    assert not parameter_sets_in_hvcc(b"short")


def test_parse_elst():
    rows = struct.pack(">QqI", 5000, -1, 0x10000) + struct.pack(">QqI", 7000, 4464, 0x10000)
    data = full_box(b"elst", 1, 0, struct.pack(">I", 2), rows)
    (b,) = iter_boxes(data, 0, len(data))
    assert [(e.duration, e.media_time) for e in parse_elst(data, b)] == [(5000, -1), (7000, 4464)]
    v0 = full_box(b"elst", 0, 0, struct.pack(">IIiI", 1, 5000, -1, 0x10000))
    (b,) = iter_boxes(v0, 0, len(v0))
    assert [(e.duration, e.media_time) for e in parse_elst(v0, b)] == [(5000, -1)]
    bad = full_box(b"elst", 1, 0, struct.pack(">I", 3), rows)
    (b,) = iter_boxes(bad, 0, len(bad))
    with pytest.raises(Mp4Error, match="3 entries do not fill 40 bytes"):
        parse_elst(bad, b)
