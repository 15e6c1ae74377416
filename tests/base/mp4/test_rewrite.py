"""Fragment rewriting: tfdt v0 → v1 with every offset still right, sample description index, trims, prft."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from nvr.base.mp4 import Mp4Error, parse_segment
from nvr.base.mp4.boxes import box, full_box, iter_boxes
from nvr.base.mp4.fragments import TFHD_DESCRIPTION_INDEX, Segment
from nvr.base.mp4.rewrite import (
    PRFT_SIZE,
    fragment_size,
    moof_size,
    ntp_time,
    ntp_to_ms,
    prft,
    rewrite_moof,
)
from tests.base.mp4 import media


def downgrade(d: bytes) -> bytes:
    """The segment with every tfdt written as version 0 (32-bit), as older muxers do; the mfra is dropped."""
    seg = parse_segment(d)
    out, prev = [d[:seg.fragments[0].start]], seg.fragments[0].start
    for f in seg.fragments:
        shrink = 4 * len(f.trafs)
        parts = []
        for child in iter_boxes(d, f.moof_body, f.moof_end):
            if child.type != b"traf":
                parts.append(d[child.start:child.end])
                continue
            traf = next(t for t in f.trafs if t.box.start == child.start)
            offsets = {r.box_start: r.data_offset_at for r in traf.runs}
            kids = []
            for c in iter_boxes(d, child.body, child.end):
                if c.type == b"tfdt":
                    kids.append(full_box(b"tfdt", 0, 0, struct.pack(">I", traf.decode_time)))
                elif c.type == b"trun" and offsets.get(c.start):
                    at = offsets[c.start]
                    old = struct.unpack_from(">i", d, at)[0]
                    kids.append(d[c.start:at] + struct.pack(">i", old - shrink) + d[at + 4:c.end])
                else:
                    kids.append(d[c.start:c.end])
            parts.append(box(b"traf", *kids))
        out += [d[prev:f.start], box(b"moof", *parts), d[f.moof_end:f.end]]
        prev = f.end
    return b"".join(out)


def sample_bytes(d: bytes, seg: Segment) -> list[bytes]:
    return [d[run.data_start + sum(s.size for s in run.samples[:i]):][:smp.size]
            for f in seg.fragments for t in f.trafs for run in t.runs for i, smp in enumerate(run.samples)]


def test_tfdt_v0_is_upgraded_and_offsets_follow(made, tmp_path):
    original = made["av"][1].data
    old = downgrade(original)
    path = tmp_path / "v0.mp4"
    path.write_bytes(old)
    # The v0 file is a faithful one: ffmpeg reads the very same packets from it.
    assert media.packets(path) == media.packets(made["av"][1].path)
    seg, ref = parse_segment(old), parse_segment(original)
    assert all(t.tfdt.size == 16 for f in seg.fragments for t in f.trafs)
    for f, g in zip(seg.fragments, ref.fragments, strict=True):
        times = {t.track_id: t.decode_time for t in f.trafs}
        new = rewrite_moof(old, f, times, f.sequence, {})
        assert len(new) == moof_size(f, {}) == g.moof_end - g.start
        # Upgrading the v0 file gives back ffmpeg's own v1 moof, byte for byte.
        assert new == original[g.start:g.moof_end]
        assert fragment_size(f, {}) == PRFT_SIZE + (g.end - g.start)


def test_description_index_and_new_times(made, tmp_path):
    d = made["av"][0].data
    seg = parse_segment(d)
    out, prev = [d[:seg.fragments[0].start]], seg.fragments[0].start
    for n, f in enumerate(seg.fragments):
        times = {t.track_id: t.decode_time + 10_000 for t in f.trafs}
        new = rewrite_moof(d, f, times, 100 + n, {1: 1})
        assert len(new) == moof_size(f, {1: 1}) == f.moof_end - f.start + 4 * (f.traf(1) is not None)
        out += [d[prev:f.start], new, d[f.moof_end:f.end]]
        prev = f.end
    moved = b"".join(out)
    again = parse_segment(moved)
    assert [f.sequence for f in again.fragments] == list(range(100, 100 + len(seg.fragments)))
    for f, g in zip(again.fragments, seg.fragments, strict=True):
        assert [t.decode_time for t in f.trafs] == [t.decode_time + 10_000 for t in g.trafs]
        for t in f.trafs:
            assert bool(t.tfhd_flags & TFHD_DESCRIPTION_INDEX) == (t.track_id == 1) and t.description_index == 1
            assert t.samples == g.traf(t.track_id).samples
    assert sample_bytes(moved, again) == sample_bytes(d, seg)  # the data offsets still find every sample
    path = tmp_path / "moved.mp4"
    path.write_bytes(moved)
    assert media.warnings(path) == ""
    for stream in (0, 1):
        assert [(p.size, p.checksum) for p in media.packets(path) if p.stream == stream] == [
            (p.size, p.checksum) for p in media.packets(made["av"][0].path) if p.stream == stream]


def test_trim_shortens_the_first_sample_only(made):
    d = made["av"][1].data
    seg = parse_segment(d)
    f = seg.fragments[0]
    times = {t.track_id: t.decode_time for t in f.trafs}
    new = rewrite_moof(d, f, times, 1, {}, {2: 100})
    again = parse_segment(d[:f.start] + new + d[f.moof_end:])
    before, after = f.traf(2).samples, again.fragments[0].traf(2).samples
    assert after[0].duration == before[0].duration - 100 and after[1:] == before[1:]
    with pytest.raises(Mp4Error, match="cannot shorten"):
        rewrite_moof(d, f, times, 1, {}, {2: before[0].duration})
    with pytest.raises(Mp4Error, match="no decode time given for track 2"):
        rewrite_moof(d, f, {1: 0}, 1, {})


def test_ntp_time():
    epoch = datetime(1970, 1, 1, tzinfo=UTC) - datetime(1900, 1, 1, tzinfo=UTC)
    assert ntp_time(0) == int(epoch.total_seconds()) << 32
    t = 1_700_000_000_500
    assert ntp_time(t) == ((t // 1000 + int(epoch.total_seconds())) << 32) | (1 << 31)
    for ms in (0, 1, 999, 1_700_000_000_123, 4_000_000_000_001):
        assert ntp_to_ms(ntp_time(ms)) == ms


def test_prft_box():
    b = prft(1, 1_700_000_000_000, 12345)
    assert len(b) == PRFT_SIZE
    size, kind, version, flags, track, ntp, media_time = struct.unpack(">I4sB3sIQQ", b)
    assert (size, kind, version, int.from_bytes(flags, "big"), track) == (32, b"prft", 1, 24, 1)
    assert ntp == ntp_time(1_700_000_000_000) and media_time == 12345


@pytest.mark.parametrize("version", [0, 1])
def test_decode_times_never_change_a_size(made, version):
    """Any decode time, 0 to 2^64-1, gives the same moof size (tfdt is always written as version 1), and
    so does any sequence number and trim: a clip's size follows from its boxes, whatever its timeline.
    This is what lets a clip announce its length from its segments' box headers (promise_clip)."""
    data = made["av"][1].data if version else downgrade(made["av"][1].data)
    seg = parse_segment(data)
    for f in seg.fragments:
        planned = moof_size(f, {})
        for t in (0, 1, 2**32 - 1, 2**32, 2**40 + 7, 2**64 - 1):
            times = {traf.track_id: t for traf in f.trafs}
            assert len(rewrite_moof(data, f, times, 2**32 - 1, {})) == planned
        first = f.trafs[0].runs[0]
        if first.first_duration_at and first.samples[0].duration > 1:
            trims = {f.trafs[0].track_id: first.samples[0].duration - 1}
            times = {traf.track_id: 5 for traf in f.trafs}
            assert len(rewrite_moof(data, f, times, 1, {}, trims)) == planned
        assert fragment_size(f, {}) == PRFT_SIZE + planned + f.end - f.moof_end
