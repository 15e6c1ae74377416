"""Clips stitched at the box level, checked with ffmpeg: frames at their wall times, clean joins, exact sizes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nvr.base.errors import NotFound
from nvr.base.mp4 import (
    Mp4Error,
    StitchPlan,
    iter_clip,
    iter_clip_range,
    parse_segment,
    plan_clip,
    producer_times,
)
from tests.base.mp4 import media
from tests.base.mp4.media import W0

FRAME_S = 0.1  # every test source runs at 10 fps


def stitch(tmp_path: Path, made: list[media.Made], start: int, end: int | None = None,
           holes: list[int] | None = None, **kw) -> tuple[StitchPlan, Path]:
    segs = media.placed(made, holes)
    end_ms = segs[-1].end_ms if end is None else W0 + end
    plan = plan_clip(segs, W0 + start, end_ms, **kw)
    datas = [m.data for m in made]
    out = b"".join(iter_clip(plan, lambda i: datas[i]))
    assert len(out) == plan.size  # the Content-Length promised before the first byte
    path = tmp_path / "clip.mp4"
    path.write_bytes(out)
    return plan, path


def truth(made: list[media.Made], holes: list[int] | None = None) -> dict[str, float]:
    """Wall time (Unix ms) of every frame, from the unsegmented encode: W0 + its time there + holes before it."""
    at = {f.checksum: f.pts for f in media.frames(media.whole(made))}
    out, hole = {}, 0
    for m, h in zip(made, holes or [0] * len(made), strict=True):
        hole += h
        for f in media.frames(m.path):
            out[f.checksum] = W0 + at[f.checksum] * 1000 + hole
    return out


def check_frames(path: Path, made: list[media.Made], start: int, holes: list[int] | None = None):
    """Every decoded frame's clip time + the clip's start is its wall time; returns the frames."""
    walls = truth(made, holes)
    frames = media.frames(path)
    assert frames
    for f in frames:
        assert W0 + start + f.pts * 1000 == pytest.approx(walls[f.checksum], abs=0.6), f
    return frames


def test_contiguous_clip_with_audio(made, tmp_path):
    """Three segments, cut mid-GOP: pre-roll from the keyframe, no warning at the joins, A and V on time."""
    av = made["av"]
    plan, path = stitch(tmp_path, av, 1500)
    assert media.warnings(path) == ""
    frames = check_frames(path, av, 1500)
    # The decoder gets the keyframe at 1.2 s; the edit list makes 1.5 s the clip's t=0.
    assert frames[0].pts == pytest.approx(-0.3) and plan.first_ms == W0 + 1200
    shown = [f for f in frames if f.pts >= 0]
    assert shown[0].pts == 0  # the frame captured at 1.5 s
    assert len(frames) == sum(w >= W0 + 1200 for w in truth(av).values())
    assert frames[-1].pts + FRAME_S == pytest.approx(float(plan.duration_ms) / 1000)
    assert float(plan.duration_ms) == av_span(av) - 1500
    # Audio: every packet at its wall time, the joins' first packets included (trimmed, see _decode_times).
    ref = {p.checksum: p.pts / 16000 for p in media.packets(media.whole(av)) if p.stream == 1}
    clip_audio = [p for p in media.packets(path) if p.stream == 1]
    assert clip_audio and any(dict(p.trims) for p in plan.pieces)
    for p in clip_audio:
        assert W0 + 1500 + p.pts / 16 == pytest.approx(W0 + ref[p.checksum] * 1000, abs=0.1)
    # ffmpeg reports the pre-roll as a negative start; its end is the clip's end.
    probe = media.probe(path)
    assert probe.start == pytest.approx(-0.3)
    assert any("avc1" in s for s in probe.streams) and any("mp4a" in s for s in probe.streams)


def av_span(made: list[media.Made]) -> float:
    return round((made[-1].end_s - made[0].start_s) * 1000)


def test_hole_between_segments_stays_its_length(made, tmp_path):
    av = made["av"]
    plan, path = stitch(tmp_path, av, 0, holes=[0, 40_000, 0])
    assert media.warnings(path) == ""
    frames = check_frames(path, av, 0, [0, 40_000, 0])
    gaps = [b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)]
    assert max(gaps) == pytest.approx(40.0 + FRAME_S) and sorted(gaps)[-2] == pytest.approx(FRAME_S)
    assert float(plan.duration_ms) == pytest.approx(40_000 + av_span(av))
    walls = [p.wall_ms for p in producer_times(path.read_bytes()) if p.track_id == 1]
    assert max(b - a for a, b in zip(walls, walls[1:], strict=False)) == pytest.approx(41_000, abs=1)


def test_start_in_a_hole_is_an_empty_edit(made, tmp_path):
    h = made["h264"]
    plan, path = stitch(tmp_path, h, 0, holes=[5000, 0])
    assert media.warnings(path) == ""
    frames = check_frames(path, h, 0, [5000, 0])
    assert frames[0].pts == pytest.approx(5.2)  # the first frame of a run is 0.2 s into it (B-frame delay)
    assert plan.first_ms == W0 + 5200 and plan.duration_ms == 5000 + av_span(h)


def test_end_inside_a_fragment(made, tmp_path):
    h = made["h264"]
    plan, path = stitch(tmp_path, h, 500, 2500)
    assert plan.duration_ms == 2000
    assert [p.source for p in plan.pieces] == [0, 0, 1]  # the keyframes of 0.2, 1.2 and 2.2 s
    frames = check_frames(path, h, 500)
    assert frames[-1].pts + FRAME_S >= 2.0


@pytest.mark.parametrize("name", ["hevc", "mjpeg"])
def test_other_codecs(made, tmp_path, name):
    m = made[name]
    plan, path = stitch(tmp_path, m, 700)
    assert media.warnings(path) == ""
    check_frames(path, m, 700)
    tag = {"hevc": "hvc1", "mjpeg": "mp4v"}[name]
    assert tag in media.probe(path).streams[0]


def test_range_bytes_are_slices_of_the_whole(made, tmp_path):
    av = made["av"]
    segs = media.placed(av)
    plan = plan_clip(segs, W0 + 1500, segs[-1].end_ms)
    datas = [m.data for m in av]
    full = b"".join(iter_clip(plan, lambda i: datas[i]))
    rng = random.Random(7)
    edges = [0, len(plan.init), plan.size, *(p.offset for p in plan.pieces), *(p.offset + p.head_size for p in plan.pieces)]
    cases = [(a, b) for a in edges[:6] for b in edges[:6] if a < b] + [(0, plan.size), (plan.size - 1, plan.size + 9)]
    cases += [tuple(sorted(rng.sample(range(plan.size + 1), 2))) for _ in range(60)]
    for a, b in cases:
        read: list[int] = []

        def reader(i: int, read: list[int] = read) -> bytes:
            read.append(i)
            return datas[i]

        got = b"".join(iter_clip_range(plan, a, b, reader))
        assert got == full[a:b], (a, b)
        assert read == list(plan.needed(a, b))  # only the segments the range is made of, each once
        if b <= len(plan.init):
            assert read == []
    assert b"".join(iter_clip_range(plan, 5, 5, lambda i: datas[i])) == b""


def test_wrong_segment_bytes_are_refused(made):
    av = made["av"]
    segs = media.placed(av)
    plan = plan_clip(segs, segs[0].start_ms, segs[-1].end_ms)
    with pytest.raises(Mp4Error, match="were parsed"):
        b"".join(iter_clip(plan, lambda i: av[i].data[:-1]))


def test_prft_carries_each_fragments_wall_time(made, tmp_path):
    av = made["av"]
    plan, path = stitch(tmp_path, av, 1500)
    assert media.warnings(path) == ""  # ffmpeg parses prft (a known top-level box) and says nothing
    data = path.read_bytes()
    prfts = producer_times(data)
    assert [p.track_id for p in prfts] == [p.prft_track for p in plan.pieces]
    # Each video prft names the frame presented at its media_time; that frame was captured at its NTP time.
    walls = truth(av)
    video = parse_segment(data).init.track(1)
    at = {round(f.pts * 10240): f.checksum for f in media.frames(path)}
    checked = 0
    for p in prfts:
        if p.track_id == 1:
            frame = at[p.media_time - video.edits[0].media_time]
            assert p.wall_ms == round(walls[frame])
            checked += 1
    assert checked == 5 and prfts[0].wall_ms == W0 + 1200


def test_layout_change_ends_the_clip(made):
    h264, hevc, av = made["h264"], made["hevc"], made["av"]
    segs = media.placed([*h264, *hevc])
    plan = plan_clip(segs, segs[0].start_ms, segs[-1].end_ms)
    assert plan.truncated_at_ms == segs[2].start_ms and "vide:avc1 -> vide:hevc" in plan.truncated_reason
    assert {p.source for p in plan.pieces} == {0, 1}
    # Audio appearing is a layout change too.
    segs = media.placed([h264[0], av[1]])
    plan = plan_clip(segs, segs[0].start_ms, segs[-1].end_ms)
    assert plan.truncated_at_ms == segs[1].start_ms and "soun:mp4a" in plan.truncated_reason


def test_sample_entry_change_ends_the_clip_by_default(made):
    segs = media.placed([*made["h264"], *made["h264_big"]])
    plan = plan_clip(segs, segs[0].start_ms, segs[-1].end_ms)
    assert plan.truncated_at_ms == segs[2].start_ms and "sample entry changed" in plan.truncated_reason
    assert plan.duration_ms == segs[2].start_ms - segs[0].start_ms


def test_multi_entry_clip_needs_inband_parameter_sets(made, tmp_path):
    """The finding behind the default: ffmpeg decodes a two-entry clip only if the SPS/PPS are also in-band.

    If the second half starts failing, ffmpeg learned to switch sample entries in fragments.
    """
    plan, path = stitch(tmp_path, [*made["inband"], *made["inband_big"]], 0, entry_changes=True)
    assert plan.truncated_at_ms is None and [dict(p.indexes)[1] for p in plan.pieces] == [1, 1, 1, 1, 2, 2]
    assert media.warnings(path) == ""
    sizes = [f.size for f in media.frames(path)]
    assert sizes.count("160x120") == 40 and sizes.count("192x144") == 20
    plan, path = stitch(tmp_path, [*made["h264"], *made["h264_big"]], 0, entry_changes=True)
    assert "error while decoding" in media.warnings(path) or "corrupt" in media.warnings(path)


def test_no_footage(made):
    segs = media.placed(made["h264"])
    with pytest.raises(NotFound):
        plan_clip(segs, segs[-1].end_ms + 10, segs[-1].end_ms + 5000)
    with pytest.raises(NotFound):
        plan_clip(segs, W0 - 5000, W0 - 10)
    with pytest.raises(NotFound):
        plan_clip(segs, W0 + 100, W0 + 100)
    with pytest.raises(NotFound):
        plan_clip([], W0, W0 + 1000)
    with pytest.raises(ValueError, match="wall-clock order"):
        plan_clip(list(reversed(segs)), W0, W0 + 1000)
