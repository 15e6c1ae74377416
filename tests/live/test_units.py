"""The live stage's pure parts on real encodes: units out of pieces, the feed's timeline, viewers, framing."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from nvr.base.mp4 import Mp4Error, parse_segment
from nvr.live import framing
from nvr.live.boxstream import UnitParser
from nvr.live.units import FeedTimeline
from nvr.live.viewer import Retimer, Viewer


def _units(data: bytes, seed: int = 1):
    """The units of ``data`` fed in random pieces (1 byte to 4 KiB), as a growing file is read."""
    rng, parser, out, at = random.Random(seed), UnitParser(), [], 0
    while at < len(data):
        step = rng.randint(1, 4096)
        out += parser.feed(data[at:at + step])
        at += step
    return out


def test_units_come_whole_whatever_the_pieces(made):
    data = made["av"][0].data
    seg = parse_segment(data)
    units = _units(data)
    assert [u.kind for u in units] == ["init"] + ["fragment"] * len(seg.fragments)
    assert units[0].data == seg.init.ftyp + seg.init.moov
    assert [u.data for u in units[1:]] == [data[f.start:f.end] for f in seg.fragments]


def test_a_malformed_box_is_refused_not_waited_for():
    with pytest.raises(Mp4Error, match="top-level box of 3 bytes"):
        UnitParser().feed(b"\x00\x00\x00\x03moov" + b"\x00" * 8)
    with pytest.raises(Mp4Error, match="without an ftyp"):
        UnitParser().feed(b"\x00\x00\x00\x08moov")


def _feed(files, walls=None):
    """Every fragment of ``files`` (a camera's successive segment files) through one feed timeline."""
    timeline, out = FeedTimeline(), []
    for i, made in enumerate(files):
        for unit in _units(made.data):
            if unit.kind == "init":
                timeline.new_file(unit.data)
            else:
                wall = None if walls is None else walls[i]
                out.append(timeline.fragment(unit.data, wall_start_ms=wall, arrived_ms=10_000_000))
    return timeline, out


def test_the_feed_timeline_is_continuous_across_files_and_keeps_the_wall_clock(made):
    files = made["av"]
    _, frags = _feed(files, walls=[1_000_000, 1_002_000, 1_004_000])
    assert [f.seq for f in frags] == list(range(1, len(frags) + 1))
    # A file's last fragment holds only audio: not a place to start watching.
    video = [f for f in frags if f.has_video]
    assert all(f.keyframe for f in video) and not any(f.keyframe for f in frags if not f.has_video)
    # Each video fragment starts where the previous one ended, file boundaries included.
    for a, b in zip(video, video[1:], strict=False):
        assert b.starts_s[b.lead] == a.starts_s[a.lead] + a.duration_s
    # The recorder's wall time of each file plus the fragment's own media time.
    assert [f.wall_ms for f in video] == [1_000_000, 1_001_000, 1_002_000, 1_003_000, 1_004_000, 1_005_000]
    assert {f.init.generation for f in frags} == {1} and frags[0].init.mime.count("mp4a.40.2") == 1


def test_without_the_recorder_a_fragment_is_placed_one_fragment_before_it_arrived(made):
    _, frags = _feed(made["h264"][:1])
    assert all(f.wall_source == "arrival" and f.wall_ms == 10_000_000 - round(f.duration_s * 1000) for f in frags)


def test_a_new_codec_is_a_new_init_generation(made):
    timeline, frags = _feed([made["h264"][0], made["hevc"][0], made["hevc"][1]])
    gens = [f.init.generation for f in frags]
    assert gens[0] == 1 and gens[-1] == 2 and sorted(gens) == gens
    assert frags[-1].init.mime.startswith('video/mp4; codecs="hev1.') or 'hvc1.' in frags[-1].init.mime


def test_a_viewer_joins_at_a_keyframe_falls_behind_and_skips_to_the_newest(made):
    _, frags = _feed(made["h264"])
    v = Viewer("cam", "token:x", queue=2)
    for f in frags:
        v.offer(f)
    # Queue of 2: the first two, then a full queue dropped for the third, and so on.
    assert v.skips >= 1 and v.skipped == len(frags) - len(v._queue)
    assert len(v._queue) <= 2 and v._queue[-1][0].seq == frags[-1].seq
    fragment, resync = v._queue[0]
    assert resync and fragment.keyframe
    v.end("over")
    assert v.ended == "over"


async def test_a_viewer_reads_in_order_then_its_end():
    v = Viewer("cam", "token:x")
    v.end("the server is shutting down")
    assert await v.next(0.1) is None


def test_a_viewer_timeline_starts_at_0_and_closes_up_skips(made):
    _, frags = _feed(made["av"])
    frags = [f for f in frags if f.has_video]  # audio-only ends of files: their times follow the video's
    retimer, out = Retimer(), []
    for i, f in enumerate(frags):
        if i == 2:
            continue  # a skipped fragment
        out.append(b"".join(retimer.parts(f, resync=i == 3)))
    init = frags[0].init.data
    seg = parse_segment(init + b"".join(out))
    lead = seg.init.lead
    times = [next(t for t in fr.trafs if t.track_id == lead.track_id) for fr in seg.fragments]
    assert times[0].decode_time == 0
    for a, b in zip(times, times[1:], strict=False):
        assert b.decode_time == a.decode_time + a.duration  # continuous: the skip closed up
    assert [fr.sequence for fr in seg.fragments] == list(range(1, len(out) + 1))
    assert retimer.position_s == pytest.approx(float(sum(Fraction(t.duration, lead.timescale) for t in times)))


def test_framing_round_trips_and_refuses_what_would_break_a_header():
    msg = framing.encode({"Type": "media", "X-Init": "1"}, b"\r\n\r\nbytes")
    assert framing.decode(msg) == ({"Type": "media", "X-Init": "1"}, b"\r\n\r\nbytes")
    with pytest.raises(ValueError):
        framing.encode({"X-Bad": "a\r\nb"}, b"")
    with pytest.raises(ValueError):
        framing.decode(b"no header block")
