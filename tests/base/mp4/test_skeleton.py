"""Segment skeletons: the same Segment as the real bytes, the same plan and clip from it, and strict blobs."""

from __future__ import annotations

import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from nvr.base.mp4 import (
    Mp4Error,
    PlacedSegment,
    iter_clip,
    iter_clip_range,
    parse_segment,
    parse_skeleton,
    plan_clip,
    skeleton,
)
from nvr.base.mp4.skeleton import MAX_BODY, MAX_SEGMENT, _regions
from nvr.recording.command import SPOOL_FORMAT_OPTIONS
from tests.base.mp4 import media
from tests.base.mp4.media import W0


def _recorded(out: Path, name: str, size: str, rate: int, seconds: int) -> bytes:
    """One segment as the recorder writes its lavfi source (record_command's encode and muxer), with AAC.

    The recorder copies a camera's audio, or makes AAC 32k of it: here a noise source at 48 kHz
    (a packet every 21 ms, the densest audio track a skeleton has to list).
    """
    pattern = out / f"{name}-%d.mp4"
    subprocess.run([
        media.ENCODER, "-hide_banner", "-nostdin", "-v", "error",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
        "-f", "lavfi", "-i", "anoisesrc=seed=7:sample_rate=48000:amplitude=0.2", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-force_key_frames", "expr:gte(t,n_forced*1)", "-b:v", "400k", "-threads", "1",
        "-c:a", "aac", "-b:a", "32k",
        "-f", "segment", "-segment_time", str(seconds), "-segment_format", "mp4",
        "-segment_format_options", SPOOL_FORMAT_OPTIONS, "-reset_timestamps", "1", str(pattern),
    ], check=True, capture_output=True, timeout=120)
    return (out / f"{name}-0.mp4").read_bytes()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("skeleton")
    return {
        "10 s 1920x1080 25 fps": _recorded(root, "hd", "1920x1080", 25, 10),
        "2 s 320x240 15 fps": _recorded(root, "small", "320x240", 15, 2),
    }


def _cuts(data: bytes) -> list[bytes]:
    """The file of a killed ffmpeg, cut inside its last fragment at each kind of place."""
    last = parse_segment(data).fragments[-1]
    return [data[:cut] for cut in (last.start + 3, last.start + 40, last.moof_end, last.moof_end + 4, last.end - 1)]


@pytest.mark.parametrize("name", ["av", "h264", "hevc", "mjpeg"])
def test_round_trip_is_the_parse_of_the_bytes(made, name):
    for m in made[name]:
        data = m.data
        blob = skeleton(data)
        assert parse_skeleton(blob) == parse_segment(data)
        assert parse_skeleton(memoryview(blob)) == parse_segment(data)
        assert skeleton(memoryview(data)) == blob


def test_round_trip_of_recorded_segments(recorded):
    for data in recorded.values():
        assert parse_skeleton(skeleton(data)) == parse_segment(data)


def test_partial_segment(made):
    data = made["av"][0].data
    for cut in _cuts(data):
        with pytest.raises(Mp4Error):
            skeleton(cut)  # an unfinished tail is refused unless the segment is known to be partial
        seg = parse_skeleton(skeleton(cut, partial=True))
        assert seg == parse_segment(cut, partial=True)
        assert seg.size == len(cut) and seg.dropped_tail > 0
    assert parse_skeleton(skeleton(data, partial=True)).dropped_tail == 0


def test_no_media_in_the_skeleton(made):
    """Other sample bytes, same skeleton: it holds the boxes, not one byte of any mdat's payload."""
    data = made["av"][0].data
    scrambled = bytearray(data)
    rng = random.Random(3)
    for f in parse_segment(data).fragments:
        mdat_body = f.moof_end + 8
        scrambled[mdat_body:f.end] = rng.randbytes(f.end - mdat_body)
    assert bytes(scrambled) != data and skeleton(bytes(scrambled)) == skeleton(data)


def _both(segments: list[PlacedSegment], datas: list[bytes]) -> tuple[list[PlacedSegment], list[PlacedSegment]]:
    """The same segments placed with their parsed bytes, and with their parsed skeletons."""
    sk = [ps._replace(segment=parse_skeleton(skeleton(d, partial=ps.segment.dropped_tail > 0)))
          for ps, d in zip(segments, datas, strict=True)]
    return segments, sk


@pytest.mark.parametrize(("name", "start", "end"), [
    ("av", 0, None), ("av", 1500, None), ("av", 2300, 4100), ("hevc", 700, None), ("mjpeg", 700, 2500),
])
def test_plan_and_clip_from_skeletons(made, name, start, end):
    segs = made[name]
    datas = [m.data for m in segs]
    full, sk = _both(media.placed(segs), datas)
    end_ms = full[-1].end_ms if end is None else W0 + end
    plan = plan_clip(full, W0 + start, end_ms)
    planned = plan_clip(sk, W0 + start, end_ms)
    assert planned == plan  # same init, pieces, offsets, size, source sizes
    clip = b"".join(iter_clip(plan, datas.__getitem__))
    assert b"".join(iter_clip(planned, datas.__getitem__)) == clip and len(clip) == planned.size
    rng = random.Random(11)
    edges = [0, len(planned.init), *(p.offset for p in planned.pieces), *(p.offset + p.head_size for p in planned.pieces)]
    ranges = [(a, b) for a in edges[:5] for b in edges[:5] if a < b]
    ranges += [tuple(sorted(rng.sample(range(planned.size + 1), 2))) for _ in range(25)]
    for a, b in ranges:
        assert b"".join(iter_clip_range(planned, a, b, datas.__getitem__)) == clip[a:b], (a, b)


def test_plan_ending_in_a_partial_segment(made):
    av = made["av"]
    cut = _cuts(av[-1].data)[1]
    datas = [*(m.data for m in av[:-1]), cut]
    placed = media.placed(av)
    placed[-1] = placed[-1]._replace(segment=parse_segment(cut, partial=True))
    full, sk = _both(placed, datas)
    plan = plan_clip(sk, W0, full[-1].end_ms)
    assert plan == plan_clip(full, W0, full[-1].end_ms) and dict(plan.source_sizes)[2] == len(cut)
    assert b"".join(iter_clip(plan, datas.__getitem__)) == b"".join(iter_clip(plan_clip(full, W0, full[-1].end_ms),
                                                                             datas.__getitem__))


def test_read_is_lazy_in_order_and_once(made):
    """The caller fetches a segment inside read(): each one only when its first byte is due, once, in order."""
    av = made["av"]
    datas = [m.data for m in av]
    _, sk = _both(media.placed(av), datas)
    plan = plan_clip(sk, W0 + 500, sk[-1].end_ms)
    assert [s for s, _ in plan.source_sizes] == [0, 1, 2]
    for a, b in [(0, plan.size), (len(plan.init) + 10, plan.size - 10), (plan.pieces[3].offset + 1, plan.size)]:
        calls: list[int] = []

        def read(i: int, calls: list[int] = calls) -> bytes:
            calls.append(i)
            return datas[i]

        chunks = iter_clip_range(plan, a, b, read)
        assert calls == []  # making the iterator fetches nothing
        at = a
        for chunk in chunks:
            at += len(chunk)
            # Exactly the segments of the bytes given so far: none fetched ahead of its turn.
            assert calls == list(plan.needed(a, at)), (a, at)
        assert at == b and calls == list(plan.needed(a, b)) and len(set(calls)) == len(calls)
    calls = []
    assert b"".join(iter_clip_range(plan, 0, len(plan.init), calls.append)) == plan.init and calls == []


def test_fetched_bytes_must_be_the_planned_ones(made):
    av = made["av"]
    datas = [m.data for m in av]
    _, sk = _both(media.placed(av), datas)
    plan = plan_clip(sk, W0, sk[-1].end_ms)
    with pytest.raises(Mp4Error, match="were parsed"):
        b"".join(iter_clip(plan, lambda i: datas[i][:-1]))
    with pytest.raises(Mp4Error, match="were parsed"):
        b"".join(iter_clip(plan, lambda i: datas[i] + b"\0"))


def _raw(body: bytes, *, version: int = 1, magic: bytes = b"NVSK") -> bytes:
    return magic + bytes((version,)) + zlib.compress(body)


def _blob(size: int, complete: int, regions: list[tuple[int, bytes]], *, version: int = 1, tail: bytes = b"") -> bytes:
    """A hand-made skeleton in the version 1 layout (see nvr/base/mp4/skeleton.py)."""
    head = struct.pack(">QQI", size, complete, len(regions))
    table = b"".join(struct.pack(">QI", off, len(raw)) for off, raw in regions)
    return _raw(head + table + b"".join(raw for _, raw in regions) + tail, version=version)


def _layout(data: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    seg = parse_segment(data)
    return seg.size, seg.size, [(r.offset, r.data) for r in _regions(data, seg.size)]


def test_hand_made_blob_is_the_skeleton(made):
    data = made["av"][0].data
    made_by_hand, made_here = _blob(*_layout(data)), skeleton(data)
    # The layout the malformed cases below are built on (compared inflated: zlib levels may differ).
    assert made_by_hand[:5] == made_here[:5] and zlib.decompress(made_by_hand[5:]) == zlib.decompress(made_here[5:])
    assert parse_skeleton(made_by_hand) == parse_segment(data)


def _malformed(data: bytes) -> list[tuple[str, bytes, str]]:
    good = skeleton(data)
    body = zlib.decompress(good[5:])
    size, complete, regs = _layout(data)
    (o0, r0), (o1, r1) = regs[0], regs[1]
    rest = regs[2:]
    ftyp = struct.unpack_from(">I", data)[0]
    return [
        ("empty", b"", "too few"),
        ("magic only", good[:4], "too few"),
        ("cut in the zlib", good[:-3], "cut off"),
        ("half", good[:len(good) // 2], "cut off"),
        ("stray bytes after the zlib", good + b"\0", "stray bytes"),
        ("wrong magic", b"XXXX" + good[4:], "not a segment skeleton"),
        ("version 2", _blob(size, complete, regs, version=2), "unknown skeleton version 2"),
        ("version 0", _blob(size, complete, regs, version=0), "unknown skeleton version 0"),
        ("not zlib", good[:5] + b"not zlib at all", "corrupt compressed body"),
        ("zlib bomb", _raw(b"\0" * (MAX_BODY + 1)), "inflates past"),
        ("header cut off", _raw(body[:19]), "header cut off"),
        ("table cut off", _raw(struct.pack(">QQI", size, complete, 9) + b"\0" * 12), "table of 9 regions cut off"),
        ("bytes cut off", _raw(body[:-1]), "bytes cut off"),
        ("stray bytes after the regions", _blob(size, complete, regs, tail=b"x"), "1 stray bytes"),
        ("overlapping", _blob(size, complete, [(o0, r0), (o0 + len(r0) - 4, r1), *rest]), "starts before region 0"),
        ("out of order", _blob(size, complete, [(o1, r1), (o0, r0), *rest]), "starts before region 0"),
        ("past the complete length", _blob(size, complete, [*regs[:-1], (complete - 2, regs[-1][1])]),
         "runs past the complete length"),
        ("complete past the length", _blob(size - 1, complete, regs), "not 0 < complete <= length"),
        ("nothing complete", _blob(size, 0, []), "not 0 < complete <= length"),
        ("too long", _blob(MAX_SEGMENT + 1, complete, regs), "not 0 < complete <= length"),
        ("empty region", _blob(size, complete, [(o0, r0), (o0 + len(r0) + 5, b""), *regs[1:]]), "region 1 is empty"),
        ("a fragment left out", _blob(size, complete, [(o0, r0), *rest]), "not the skeleton"),
        ("split region", _blob(size, complete, [(o0, r0[:100]), (o0 + 100, r0[100:]), *regs[1:]]), "not the skeleton"),
        ("media added", _blob(size, complete, [*regs, (complete - 4, data[complete - 4:])]), "not the skeleton"),
        ("no moov", _blob(size, complete, [(o0, r0[:ftyp]), *regs[1:]]), "no moov"),
        ("damaged trun", _blob(size, complete, [(o0, _lying_trun(r0)), *regs[1:]]), "do not fill"),
    ]


def _lying_trun(init_and_moof: bytes) -> bytes:
    at = init_and_moof.index(b"trun") - 4
    count = struct.unpack_from(">I", init_and_moof, at + 12)[0]
    return init_and_moof[:at + 12] + struct.pack(">I", count + 1) + init_and_moof[at + 16:]


@pytest.fixture(scope="module")
def malformed(made) -> list[tuple[str, bytes, str]]:
    return _malformed(made["av"][0].data)  # once: the zlib bomb takes a fifth of a second to make


@pytest.mark.parametrize("case", range(26))
def test_malformed_blobs(malformed, case):
    assert len(malformed) == 26  # a case added below the list's end would not run
    name, blob, message = malformed[case]
    with pytest.raises(Mp4Error, match=message):
        parse_skeleton(blob)


def test_fuzzed_blobs_raise_only_mp4error(made):
    """Random damage to a skeleton's body (re-compressed, so it reaches the parse) parses or is an Mp4Error."""
    data = made["av"][0].data
    body = zlib.decompress(skeleton(data)[5:])
    rng = random.Random(20240612)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(250):
        b = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.2:
            b = b[:rng.randrange(len(b))]
        try:
            parse_skeleton(b"NVSK\x01" + zlib.compress(bytes(b)))
            outcomes["parsed"] += 1
        except Mp4Error:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 50 and outcomes["parsed"] > 10


def test_sizes(recorded):
    """A skeleton is a small fraction of its segment (measured: 2216 B of 623 KB, 936 B of 129 KB).

    At the recorder's 400 kbit/s; a camera's 4 Mbit/s stream has more media, not more boxes,
    so the same 10 s skeleton is ~0.05 % of its ~5 MB.
    """
    table = {name: (len(skeleton(data)), len(data)) for name, data in recorded.items()}
    hd, hd_size = table["10 s 1920x1080 25 fps"]
    small, small_size = table["2 s 320x240 15 fps"]
    assert hd < 0.01 * hd_size and hd < 6000, table
    assert small < 0.02 * small_size and small < 2500, table
    # zlib earns its place: the sample tables repeat (flags, durations), about 3x smaller.
    raw = sum(len(r.data) + 12 for r in _regions(recorded["10 s 1920x1080 25 fps"], hd_size))
    assert hd < raw / 2, (hd, raw)



# ---------------------------------------------------------------------- summaries and promises


def test_summary_sizes_are_the_rewritten_sizes(made, recorded):
    """A summary's fragment sizes are rewrite.fragment_size's, box for box, with and without a description index."""
    from nvr.base.mp4.rewrite import fragment_size
    from nvr.base.mp4.skeleton import summarize

    datas = [m.data for ms in made.values() for m in ms] + list(recorded.values())
    for data in datas:
        seg, sm = parse_segment(data), summarize(skeleton(data))
        assert (sm.size, sm.complete, sm.ftyp, sm.moov) == (seg.size, seg.size, seg.init.ftyp, seg.init.moov)
        assert len(sm.fragments) == len(seg.fragments)
        for f, s in zip(seg.fragments, sm.fragments, strict=True):
            ids = {t.track_id for t in f.trafs}
            assert s.size == fragment_size(f, {}) and s.tracks == ids
            all_indexed = {t: 1 for t in ids}
            assert s.size + 4 * len(s.growable) == fragment_size(f, all_indexed)
            assert s.times == tuple((t.track_id, t.decode_time, t.first_cto) for t in f.trafs if t.sample_count)
            assert s.first_track == f.trafs[0].track_id


def _promised(segs: list[PlacedSegment], datas: list[bytes], start: int, end: int):
    from nvr.base.mp4.skeleton import summarize
    from nvr.base.mp4.stitch import SummarizedSegment, promise_clip

    first, *middle, last = segs
    summaries = [SummarizedSegment(ps.start_ms, ps.end_ms, summarize(skeleton(d)))
                 for ps, d in zip(middle, datas[1:-1], strict=True)]
    return promise_clip(first, summaries, last, start, end)


def _repeated(made, name: str, times: int, holes_ms: list[int] | None = None):
    """``made[name]``'s segments over and over, placed one after the other (as a long recording is)."""
    segs = made[name] * times
    return media.placed(segs, holes_ms), [m.data for m in segs]


@pytest.mark.parametrize(("name", "times", "holes"), [
    ("av", 2, None), ("h264", 3, None), ("hevc", 3, None), ("mjpeg", 3, None), ("av", 2, [0, 0, 40_000, 0, 300, 0]),
])
def test_promise_is_the_plan(made, name, times, holes):
    """The init and size announced from the first and last skeletons and the others' summaries are the plan's."""
    segs, datas = _repeated(made, name, times, holes)
    ends = [segs[-1].start_ms + 1, segs[-1].start_ms + 1100, segs[-1].end_ms - 1]
    kept = 0
    for start in (segs[0].start_ms, segs[0].start_ms + 700, segs[0].start_ms + 1500, segs[0].end_ms - 300):
        for end in ends:
            plan = plan_clip(segs, start, end)
            promise = _promised(segs, datas, start, end)
            if promise is None:
                continue
            kept += 1
            assert promise.init == plan.init and promise.size == plan.size, (start, end)
            assert set(promise.sources) == {p.source for p in plan.pieces}
            # What the clip writer sends before the full plan is ready: the first segment's pieces.
            assert [p for p in promise.early.pieces if p.source == 0] == [p for p in plan.pieces if p.source == 0]
    assert kept >= 6  # the usual clip (from inside its first segment to inside its last) is promised


def test_no_promise_where_the_middle_would_decide(made):
    """When a middle segment would change what plan_clip decides, there is no promise (the caller plans it whole)."""
    segs, datas = _repeated(made, "h264", 3)
    start = segs[0].start_ms + 500
    assert _promised(segs, datas, start, segs[-1].end_ms - 10) is not None
    # The range runs past the footage: the clip's duration would come from the footage, not the range.
    assert _promised(segs, datas, start, segs[-1].end_ms + 5000) is None
    # A codec change in the middle: the clip ends there.
    hevc = made["hevc"][0]
    mixed = [*made["h264"][:2], hevc, *made["h264"]]
    placed, mdatas = media.placed(mixed), [m.data for m in mixed]
    assert plan_clip(placed, start, placed[-1].end_ms - 10).truncated_at_ms == placed[2].start_ms
    assert _promised(placed, mdatas, start, placed[-1].end_ms - 10) is None
    # A partial segment in the middle (a killed ffmpeg's): its unfinished tail is left out.
    cut = _cuts(datas[2])[1]
    placed = list(segs)
    placed[2] = placed[2]._replace(segment=parse_segment(cut, partial=True))
    from nvr.base.mp4.skeleton import summarize
    from nvr.base.mp4.stitch import SummarizedSegment, promise_clip

    summaries = [SummarizedSegment(ps.start_ms, ps.end_ms, summarize(skeleton(d, partial=i == 1)))
                 for i, (ps, d) in enumerate(zip(placed[1:-1], [datas[1], cut, *datas[3:-1]], strict=True))]
    assert promise_clip(placed[0], summaries, placed[-1], start, placed[-1].end_ms - 10) is None
    # The clip starting after the first segment's footage: its first fragment is not in the first segment.
    assert _promised(segs, datas, segs[0].end_ms + 100, segs[-1].end_ms - 10) is None
