"""Sample times of a clip on its timeline, compared with the times ffmpeg gives the same samples."""

from __future__ import annotations

from fractions import Fraction

import pytest

from nvr.base.mp4 import frame_times, iter_clip, plan_clip
from tests.base.mp4 import media
from tests.base.mp4.media import W0


def test_segment_without_edit_list(made):
    times = frame_times(made["av"][1].data)
    video = [t for t in times if t.handler == "vide"]
    assert len(video) == 20 and video[0].decode_s == 0 and video[0].composition_s == Fraction(1, 5)
    assert [t.sync for t in video].count(True) == 2
    assert all(t.sync for t in times if t.handler == "soun")


def test_clip_times_are_ffmpegs(made, tmp_path):
    av = made["av"]
    segs = media.placed(av, [0, 3000, 0])
    plan = plan_clip(segs, W0 + 1500, segs[-1].end_ms)
    datas = [m.data for m in av]
    clip = b"".join(iter_clip(plan, lambda i: datas[i]))
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    times = frame_times(clip)
    packets = media.packets(path)
    for track_id, ts in ((1, 10240), (2, 16000)):
        ours = [t for t in times if t.track_id == track_id]
        theirs = [p for p in packets if p.stream == track_id - 1]
        assert [(t.decode_s, t.composition_s, t.sync) for t in ours] == [
            (Fraction(p.dts, ts), Fraction(p.pts, ts), p.key) for p in theirs]
    decoded = sorted(f.pts for f in media.frames(path))
    assert sorted(float(t.composition_s) for t in times if t.track_id == 1) == pytest.approx(decoded)
