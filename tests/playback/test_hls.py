"""HLS playlists by table (pure), and their media segments checked with ffmpeg on real fragmented MP4."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nvr.base.mp4 import iter_clip, parse_segment, plan_clip, producer_times
from nvr.base.times import ms_to_rfc3339
from nvr.playback import hls
from storage.index import SegmentRow
from tests.base.mp4 import media

W0 = media.W0
RUN = "r1700000000000"


def row(seq: int, start: int, end: int, run: str | None = RUN, camera: str = "cam") -> SegmentRow:
    """An index row at ``W0 + start .. W0 + end`` ms; ``run`` None gives an object key of an unknown form."""
    key = f"{camera}/2023/11/14/22/x_{run}-{seq:06d}.seg" if run else f"{camera}/old-{seq}.seg"
    return SegmentRow(f"{camera}:{seq}", camera, seq, W0 + start, W0 + end, False, 1, "0" * 64, key, 1, "0" * 64,
                      None, "k", "h", "stored", 0)


# ---------------------------------------------------------------------- the playlist, by table

S = 2000  # a segment's length in most rows
# name: (spans as (start, end, run), configs by index (default: one for all), range,
#        expected entries as (at, EXTINF, discontinuity, new map, joined to the one before))
PLAYLISTS = {
    "contiguous": ([(0, S, RUN), (S, 2 * S, RUN), (2 * S, 3 * S, RUN)], {}, (0, 3 * S),
                   [(0, S, False, True, False), (S, S, False, False, True), (2 * S, S, False, False, True)]),
    "a hole under the threshold stays on the timeline": (
        [(0, S, RUN), (S + 50, 2 * S + 50, RUN)], {}, (0, 3 * S),
        [(0, S + 50, False, True, False), (S + 50, S, False, False, True)]),
    "exactly the threshold is not a gap": (
        [(0, S, RUN), (S + 100, 2 * S + 100, RUN)], {}, (0, 3 * S),
        [(0, S + 100, False, True, False), (S + 100, S, False, False, True)]),
    "an overlap shortens the EXTINF before it": (
        [(0, S, RUN), (S - 30, 2 * S - 30, RUN)], {}, (0, 3 * S),
        [(0, S - 30, False, True, False), (S - 30, S, False, False, True)]),
    "a gap is a discontinuity, its room in media time only": (
        [(0, S, RUN), (S + 3000, 2 * S + 3000, "r1700000005000"), (2 * S + 3000, 3 * S + 3000, "r1700000005000")],
        {}, (0, 4 * S + 3000),
        [(0, S, False, True, False), (S + 3000, S, True, False, False), (2 * S + 3000, S, False, False, True)]),
    "a long gap gives at most ROOM_MS": (
        [(0, S, RUN), (S + 60_000, 2 * S + 60_000, "r1700000062000")], {}, (0, 3 * S + 60_000),
        [(0, S, False, True, False), (S + hls.ROOM_MS, S, True, False, False)]),
    "a codec change without a gap is a new map and a discontinuity": (
        [(0, S, RUN), (S, 2 * S, "r1700000002000"), (2 * S, 3 * S, "r1700000002000")], {1: "hevc"}, (0, 3 * S),
        [(0, S, False, True, False), (S, S, True, True, False), (2 * S, S, False, False, True)]),
    "the same codec after a gap keeps its map": (
        [(0, 1500, RUN), (9000, 9000 + S, "r1700000009000")], {1: "h264"}, (0, 20_000),
        [(0, 1500, False, True, False), (1500 + hls.ROOM_MS, S, True, False, False)]),
}


def _playlist(spans, configs, rng):
    rows = [row(i, a, b, run) for i, (a, b, run) in enumerate(spans)]
    keys = {i: configs.get(i, "h264") for i in hls.probes(rows)}
    return hls.plan_playlist("cam", hls.in_range(rows, W0 + rng[0], W0 + rng[1]), W0 + rng[0], W0 + rng[1], keys)


@pytest.mark.parametrize("name", PLAYLISTS)
def test_playlist_entries(name):
    spans, configs, rng, expected = PLAYLISTS[name]
    pl = _playlist(spans, configs, rng)
    got = [(s.at_ms, s.duration_ms, s.discontinuity, s.init is not None, s.after is not None) for s in pl.segments]
    assert got == expected
    for prev, s in zip(pl.segments, pl.segments[1:], strict=False):
        assert (s.after is prev.row) == (not s.discontinuity)  # joined to exactly the entry before it
        if not s.discontinuity:  # inside a sequence the timeline is the wall clock's
            assert s.at_ms - prev.at_ms == s.row.start_ms - prev.row.start_ms


def test_the_rendered_playlist():
    pl = _playlist([(0, 2500, RUN), (2500, 4000, RUN), (9000, 11_000, "r1700000009000")], {2: "hevc"}, (700, 20_000))
    text = hls.render_playlist(pl, lambda s: f"../../segments/{s.row.id}/media.m4s?at={s.at_ms}",
                               lambda r: f"../../segments/{r.id}/init.mp4")
    assert text == "\n".join([
        "#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-TARGETDURATION:3",
        "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-DISCONTINUITY-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-START:TIME-OFFSET=0.700,PRECISE=YES",  # the range starts inside the first segment
        '#EXT-X-MAP:URI="../../segments/cam:0/init.mp4"',
        f"#EXT-X-PROGRAM-DATE-TIME:{ms_to_rfc3339(W0)}", "#EXTINF:2.500,", "../../segments/cam:0/media.m4s?at=0",
        f"#EXT-X-PROGRAM-DATE-TIME:{ms_to_rfc3339(W0 + 2500)}", "#EXTINF:1.500,",
        "../../segments/cam:1/media.m4s?at=2500",
        "#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="../../segments/cam:2/init.mp4"',
        f"#EXT-X-PROGRAM-DATE-TIME:{ms_to_rfc3339(W0 + 9000)}", "#EXTINF:2.000,",
        "../../segments/cam:2/media.m4s?at=9000",  # 4 s of footage, then the hole (up to ROOM_MS)
        "#EXT-X-ENDLIST", ""])
    assert pl.gaps == ((W0 + 4000, W0 + 9000), (W0 + 11_000, W0 + 20_000))  # the timeline's gaps, by the gap rule
    assert pl.target_duration == 3 and pl.duration_ms == 6000


# name: (spans as (start, end, run), the rows whose codec configuration must be read)
PROBES = {
    "one run": ([(0, S, RUN), (S, 2 * S, RUN), (2 * S, 3 * S, RUN)], [0]),
    "a new run": ([(0, S, RUN), (S, 2 * S, "r1700000002000"), (2 * S, 3 * S, "r1700000002000")], [0, 1]),
    "after a gap, even in one run": ([(0, S, RUN), (S + 500, 2 * S + 500, RUN)], [0, 1]),
    "a key of another form": ([(0, S, RUN), (S, 2 * S, None), (2 * S, 3 * S, RUN)], [0, 1, 2]),
}


@pytest.mark.parametrize("name", PROBES)
def test_which_segments_say_the_codec_configuration(name):
    spans, expected = PROBES[name]
    assert hls.probes([row(i, a, b, run) for i, (a, b, run) in enumerate(spans)]) == expected


def test_in_range_is_the_clip_rule():
    rows = [row(2, 4000, 6000), row(0, 0, 2000), row(1, 2000, 4000), row(3, 6000, 6000)]
    assert [r.seq for r in hls.in_range(rows, W0 + 1999, W0 + 4001)] == [0, 1, 2]
    assert [r.seq for r in hls.in_range(rows, W0 + 2000, W0 + 4000)] == [1]  # [start, end): touching is out


# ---------------------------------------------------------------------- media segments, with ffmpeg


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, list[media.Made]]:
    root = tmp_path_factory.mktemp("hls")
    return {
        "av": media.make(root, "av", "h264", seconds=8, audio=True),  # 4 segments, B-frames and AAC
        "small": media.make(root, "small", "h264", seconds=2),
        "big": media.make(root, "big", "h264", seconds=2, size="192x144"),  # another sample entry
    }


def serve(out: Path, made: list[media.Made], holes: list[int], runs: list[str]) -> tuple[hls.Playlist, dict]:
    """The playlist of the segments (placed as the recorder does, with holes), written out with its files."""
    segs = media.placed(made, holes)
    rows = [row(i, p.start_ms - W0, p.end_ms - W0, run) for i, (p, run) in enumerate(zip(segs, runs, strict=True))]
    configs = {i: hls.config_key(segs[i].segment.init) for i in hls.probes(rows)}
    pl = hls.plan_playlist("cam", rows, rows[0].start_ms, rows[-1].end_ms, configs)
    files = {}
    for s in pl.segments:
        plan = hls.plan_media(segs[s.row.seq], s.at_ms, segs[s.after.seq] if s.after else None)
        files[f"m{s.row.seq}.m4s"] = hls.media_bytes(plan, made[s.row.seq].data)
        assert len(files[f"m{s.row.seq}.m4s"]) == plan.size
        if s.init is not None:
            files[f"i{s.row.seq}.mp4"] = hls.init_segment(segs[s.row.seq].segment, s.row.start_ms, s.row.end_ms)
    files["p.m3u8"] = hls.render_playlist(pl, lambda s: f"m{s.row.seq}.m4s", lambda r: f"i{r.seq}.mp4").encode()
    for name, data in files.items():
        (out / name).write_bytes(data)
    return pl, files


def stream_packets(path: Path) -> dict[int, list[media.Packet]]:
    out: dict[int, list[media.Packet]] = {}
    for p in media.packets(path):
        out.setdefault(p.stream, []).append(p)
    return out


def test_a_playlist_plays_cleanly_and_its_joins_are_the_clips(made, tmp_path):
    pl, files = serve(tmp_path, made["av"], [0, 0, 3000, 0], [RUN] * 4)
    assert [s.discontinuity for s in pl.segments] == [False, False, True, False]
    assert media.warnings(tmp_path / "p.m3u8") == ""  # ffmpeg's HLS demuxer, decoding every stream
    got = stream_packets(tmp_path / "p.m3u8")
    for packets in got.values():  # decode times only ever go forward, across the discontinuity too
        assert all(b.dts > a.dts for a, b in zip(packets, packets[1:], strict=False))
    # The first sequence's samples are exactly those of the clip of the same two segments: same joins.
    segs = media.placed(made["av"][:2])
    clip = tmp_path / "clip.mp4"
    datas = [m.data for m in made["av"][:2]]
    clip.write_bytes(b"".join(iter_clip(plan_clip(segs, segs[0].start_ms, segs[1].end_ms), lambda i: datas[i])))
    want = stream_packets(clip)
    timescales = {t.track_id - 1: t.timescale for t in segs[0].segment.init.tracks}
    for stream, packets in want.items():
        lead = hls.LEAD_S * timescales[stream]
        mine = [(p.dts - lead, p.pts - lead, p.duration, p.checksum) for p in got[stream][:len(packets)]]
        assert mine == [(p.dts, p.pts, p.duration, p.checksum) for p in packets]
    samples = sum(t.sample_count for m in made["av"] for f in parse_segment(m.data).fragments for t in f.trafs)
    assert sum(len(p) for p in got.values()) == samples  # every sample of every segment, once


def test_every_fragment_tells_its_wall_time_on_the_playlist_timeline(made, tmp_path):
    pl, files = serve(tmp_path, made["av"], [0, 0, 3000, 0], [RUN] * 4)
    timescales = {t.track_id: t.timescale for t in parse_segment(made["av"][0].data).init.tracks}
    for s in pl.segments:
        prfts = producer_times(files[f"m{s.row.seq}.m4s"])
        assert len(prfts) == len(parse_segment(made["av"][s.row.seq].data).fragments)
        for p in prfts:
            # A player's date for a playlist time: its segment's PROGRAM-DATE-TIME + (time - the segment's start).
            playlist_ms = (p.media_time / timescales[p.track_id] - hls.LEAD_S) * 1000
            assert s.row.start_ms + playlist_ms - s.at_ms == pytest.approx(p.wall_ms, abs=1)


def test_the_init_has_no_edit_list_and_the_segments_sample_entries(made):
    seg = parse_segment(made["av"][1].data)
    init = parse_segment(hls.init_segment(seg, W0, W0 + 2000)).init
    assert [t.edits for t in init.tracks] == [(), ()]
    assert [t.entries for t in init.tracks] == [t.entries for t in seg.init.tracks]
    assert hls.config_key(init) == hls.config_key(seg.init)


def test_a_codec_change_gets_its_own_map_and_each_segment_decodes_with_it(made, tmp_path):
    segments = made["small"] + made["big"]
    pl, files = serve(tmp_path, segments, [0] * len(segments), [RUN] * len(made["small"]) + ["r1700000009000"])
    maps = re.findall(r'#EXT-X-MAP:URI="(i\d+).mp4"', files["p.m3u8"].decode())
    first_big = len(made["small"])
    assert maps == ["i0", f"i{first_big}"] and pl.segments[first_big].discontinuity
    for s in pl.segments:
        init = "i0" if s.row.seq < first_big else f"i{first_big}"
        whole = tmp_path / f"whole{s.row.seq}.mp4"
        whole.write_bytes(files[f"{init}.mp4"] + files[f"m{s.row.seq}.m4s"])
        assert media.warnings(whole) == ""
        assert len(media.frames(whole)) == sum(t.sample_count for f in parse_segment(segments[s.row.seq].data)
                                               .fragments for t in f.trafs)


def test_a_media_segment_must_join_the_segment_before_it(made):
    small, big = media.placed(made["small"][:1]), media.placed(made["big"], at=W0 + 2000)
    with pytest.raises(hls.Mp4Error, match="joins"):
        hls.plan_media(big[0], 2000, small[0])  # another sample entry: the clip rule would end there
    with pytest.raises(ValueError, match="can't follow"):
        hls.plan_media(big[0], 100, small[0])


def test_ffmpeg_opens_each_media_segment_once_in_order(made, tmp_path):
    pl, _ = serve(tmp_path, made["av"], [0, 0, 3000, 0], [RUN] * 4)
    proc = subprocess.run([media.CHECKER, "-hide_banner", "-nostdin", "-v", "verbose", "-i",
                           str(tmp_path / "p.m3u8"), "-map", "0", "-c", "copy", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=60)
    opened = re.findall(r"Opening '[^']*?(m\d+)\.m4s'", proc.stderr)
    assert opened == [f"m{s.row.seq}" for s in pl.segments]
