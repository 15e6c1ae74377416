"""The clip writer without a server: size first (promised or planned), the same bytes, bounded read-ahead, failures."""

from __future__ import annotations

import asyncio

import pytest

from nvr.base.mp4 import PlacedSegment, iter_clip, parse_segment, plan_clip, skeleton
from nvr.playback import clip as clipmod
from nvr.playback.clip import ClipError, prepare_clip, write_clip
from nvr.playback.clip import plan_clip as plan_rows
from storage.index import SegmentRow
from tests.base.mp4 import media

W0 = media.W0


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[list[SegmentRow], list[bytes]]:
    """Seven 2 s segments with audio in a row, as a camera's index lists them (each row's size its bytes')."""
    made = media.make(tmp_path_factory.mktemp("stream"), "av", "h264", seconds=6, audio=True)
    datas = [m.data for m in made * 3][:7]
    rows, at = [], W0
    for seq, (m, data) in enumerate(zip((made * 3)[:7], datas, strict=True)):
        length = round((m.end_s - m.start_s) * 1000)
        rows.append(SegmentRow(f"cam:{seq}", "cam", seq, at, at + length, False, len(data), "0" * 64, f"k{seq}",
                               len(data), "0" * 64, None, "k", "h", "stored", 0))
        at += length
    return rows, datas


def _reference(rows: list[SegmentRow], datas: list[bytes], start: int, end: int) -> bytes:
    placed = [PlacedSegment(r.start_ms, r.end_ms, parse_segment(d)) for r, d in zip(rows, datas, strict=True)]
    return b"".join(iter_clip(plan_clip(placed, start, end), datas.__getitem__))


class Reader:
    """Segment bytes by row id, counting fetches and how many run at once."""

    def __init__(self, rows: list[SegmentRow], datas: list[bytes], fail: str | None = None):
        self.by_id = {r.id: d for r, d in zip(rows, datas, strict=True)}
        self.fail, self.calls, self.running, self.most = fail, [], 0, 0

    async def __call__(self, row: SegmentRow) -> bytes:
        self.calls.append(row.id)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0)  # lets the writer start the next fetches, as a real download would
            if row.id == self.fail:
                raise ClipError(f"segment {row.id}: failed verification", segment=row.id)
            return self.by_id[row.id]
        finally:
            self.running -= 1


def _skeletons(rows: list[SegmentRow], datas: list[bytes], missing: set[str] = frozenset()):
    blobs = {r.id: skeleton(d) for r, d in zip(rows, datas, strict=True) if r.id not in missing}

    async def read(asked):
        return {r.id: blobs[r.id] for r in asked if r.id in blobs}
    return read


@pytest.mark.parametrize("missing", [set(), {"cam:3"}])
async def test_promised_and_planned_clips_are_the_reference_bytes(recording, tmp_path, missing):
    """From inside the first to inside the last segment: the size comes before any byte, the bytes are the plan's."""
    rows, datas = recording
    start, end = rows[0].start_ms + 700, rows[-1].start_ms + 900
    expected = _reference(rows, datas, start, end)
    reader = Reader(rows, datas)
    prepared = await prepare_clip(plan_rows(rows, start, end), read_segment=reader, tmp_dir=tmp_path,
                                  skeletons=_skeletons(rows, datas, missing))
    try:
        assert prepared.size == len(expected) and prepared.init == expected[:len(prepared.init)]
        if not missing:
            assert reader.calls == [] and prepared._planned is None  # promised: nothing read, nothing planned yet
        chunks: list[bytes] = []

        async def write(chunk) -> None:
            chunks.append(bytes(chunk))
        assert await write_clip(prepared, write) == len(expected)
        assert b"".join(chunks) == expected
        assert [u.id for u in prepared.used] == [r.id for r in rows]
        if not missing:
            assert reader.most <= 1 + clipmod.READ_AHEAD and sorted(reader.calls) == sorted(set(reader.calls))
        for a, b in [(0, 10), (5, len(prepared.init) + 100), (len(prepared.init) + 3, len(expected) - 2),
                     (len(expected) // 2, len(expected) - 1)]:
            chunks.clear()
            assert await write_clip(prepared, write, first=a, last=b) == b - a + 1
            assert b"".join(chunks) == expected[a:b + 1], (a, b)
    finally:
        prepared.close()


async def test_a_failed_segment_stops_the_clip(recording, tmp_path):
    """A segment that fails to read ends the writing with its error: no byte of it or after it is written."""
    rows, datas = recording
    start, end = rows[0].start_ms, rows[-1].end_ms - 100
    expected = _reference(rows, datas, start, end)
    reader = Reader(rows, datas, fail="cam:4")
    prepared = await prepare_clip(plan_rows(rows, start, end), read_segment=reader, tmp_dir=tmp_path,
                                  skeletons=_skeletons(rows, datas))
    plan = await prepared.stitch()
    fourth = next(p.offset for p in plan.pieces if p.source == 4)
    chunks: list[bytes] = []

    async def write(chunk) -> None:
        chunks.append(bytes(chunk))
    with pytest.raises(ClipError, match="cam:4"):
        await write_clip(prepared, write)
    got = b"".join(chunks)
    assert got == expected[:len(got)] and len(got) <= fourth
    prepared.close()


async def test_a_promise_the_plan_breaks_is_an_error(recording, tmp_path):
    """Should the plan ever disagree with the size announced, the clip stops as a ClipError, after at most
    the init and the first segment's fragments (sent from the promise's own plan while the full one is made)."""
    rows, datas = recording
    start, end = rows[0].start_ms + 700, rows[-1].start_ms + 900
    expected = _reference(rows, datas, start, end)
    prepared = await prepare_clip(plan_rows(rows, start, end), read_segment=Reader(rows, datas), tmp_dir=tmp_path,
                                  skeletons=_skeletons(rows, datas))
    assert prepared.early is not None
    first = [p for p in prepared.early.pieces if p.source == 0]
    prepared.size += 1
    chunks: list[bytes] = []

    async def write(chunk) -> None:
        chunks.append(bytes(chunk))
    with pytest.raises(ClipError, match="announced"):
        await write_clip(prepared, write)
    got = b"".join(chunks)
    assert got == expected[:first[-1].offset + first[-1].size]


def test_rows_are_the_segments(recording):
    rows, datas = recording
    assert [parse_segment(d).size for d in datas] == [r.size for r in rows]
