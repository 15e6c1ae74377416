"""Clips: the stored segments of one camera over a time range, stitched at the box level, no ffmpeg.

The stored segments are fragmented MP4 already. A clip is one init segment and
the fragments of the range with their decode times moved onto the clip's
timeline (``nvr.base.mp4``): a hole between segments stays a hole of its
real length, an edit list starts playback at the requested instant while the
decoder still gets the keyframe before it, every fragment carries its capture
time (``prft``), and the exact size is known before the first byte, so HTTP
Range and seeking work.

Steps: :func:`plan_clip` (the index rows of the range, pure) → :func:`prepare_clip`
(the stitch plan: from the segments' skeletons in the index when every segment
has one, so nothing is read before the first byte; else from the segments
themselves, read, verified and decrypted by the caller's reader and kept in a
private temp file) → :func:`write_clip` (the bytes, or a byte range of them;
with skeletons each segment is fetched when its turn comes, the next one
prefetched). A codec change ends the clip at that segment
(``PreparedClip.truncated``, the rule is in ``nvr.base.mp4.stitch``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nvr.base import timeline
from nvr.base.errors import NotFound, NvrError
from nvr.base.mp4 import (
    Mp4Error,
    PlacedSegment,
    StitchPlan,
    iter_clip_range,
    parse_segment,
    parse_skeleton,
)
from nvr.base.mp4 import plan_clip as stitch_plan
from nvr.base.times import ms_to_rfc3339
from storage.index import SegmentRow

log = logging.getLogger("nvr.clip")

FETCH_CONCURRENCY = 4  # segments read and decrypted at once for one clip
# Writers block on their next segment's download: their own threads, so that they never starve the
# default executor the index and the file I/O of every other request run in.
_WRITERS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="clip")


@dataclass(frozen=True)
class ClipPlan:
    camera: str
    start_ms: int
    end_ms: int
    segments: tuple[SegmentRow, ...]
    gaps: tuple[tuple[int, int], ...]  # uncovered [from, to) inside the range


def plan_clip(rows: list[SegmentRow], start_ms: int, end_ms: int) -> ClipPlan:
    """The segments overlapping [start, end) in order, and the holes between them (pure)."""
    segs = sorted((r for r in rows if r.end_ms > start_ms and r.start_ms < end_ms and r.end_ms > r.start_ms),
                  key=lambda r: r.start_ms)
    gaps = timeline.gaps(((r.start_ms, r.end_ms) for r in segs), start_ms, end_ms)
    camera = segs[0].camera if segs else ""
    return ClipPlan(camera=camera, start_ms=start_ms, end_ms=end_ms, segments=tuple(segs), gaps=tuple(gaps))


class ClipError(NvrError):
    """The clip could not be completed (a segment failed to read, verify or parse)."""


def clip_etag(plan: ClipPlan) -> str:
    """A strong ETag: the same range over the same segment bytes is the same clip, byte for byte."""
    h = hashlib.sha256(f"{plan.camera}\n{plan.start_ms}\n{plan.end_ms}\n".encode())
    for row in plan.segments:
        h.update(f"{row.id} {row.sha256}\n".encode())
    return f'"{h.hexdigest()[:40]}"'


@dataclass
class PreparedClip:
    """A clip ready to be written: its stitch plan, and where its segments' bytes come from."""

    plan: ClipPlan
    stitch: StitchPlan
    etag: str
    read: Callable[[int], bytes] = field(repr=False)  # segment i's bytes; called from a worker thread
    _close: Callable[[], None] = field(repr=False, default=lambda: None)

    @property
    def size(self) -> int:
        return self.stitch.size

    @property
    def used(self) -> tuple[SegmentRow, ...]:
        """The segments the clip is made of (a codec change may end it early)."""
        return tuple(self.plan.segments[i] for i in sorted({p.source for p in self.stitch.pieces}))

    @property
    def truncated(self) -> str | None:
        """Why the clip ends before the range does, in words, or None."""
        if self.stitch.truncated_at_ms is None:
            return None
        return f"clip ends at {ms_to_rfc3339(self.stitch.truncated_at_ms)}: {self.stitch.truncated_reason}"

    def close(self) -> None:
        self._close()


SegmentReader = Callable[[SegmentRow], Awaitable[bytes]]
ChunkWriter = Callable[[bytes], Awaitable[None]]


SkeletonReader = Callable[[Sequence[SegmentRow]], Awaitable[dict[str, bytes]]]


async def prepare_clip(plan: ClipPlan, *, read_segment: SegmentReader, tmp_dir: Path,
                       skeletons: SkeletonReader | None = None) -> PreparedClip:
    """The stitch plan of ``plan``: from the index's skeletons when all are there, else from the segments.

    ``read_segment`` reads and verifies a segment. Without skeletons every segment is read first and
    ``tmp_dir`` (mode 0700, on the data disk) holds them until :meth:`PreparedClip.close`.
    """
    if not plan.segments:
        raise NotFound("no segments in range")
    if skeletons is not None:
        found = await skeletons(plan.segments)
        if len(found) == len(plan.segments):
            try:
                return await _from_skeletons(plan, found, read_segment)
            except Mp4Error as e:  # a damaged skeleton, or one of a later format: the segments themselves
                log.warning("clip of %s: a stored skeleton is unreadable (%s); reading the segments", plan.camera, e)
    work = tempfile.TemporaryDirectory(dir=tmp_dir, prefix="clip-")
    files: dict[int, Path] = {}
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(i: int, row: SegmentRow) -> PlacedSegment:
        async with gate:
            data = await read_segment(row)
        path = Path(work.name) / f"{i}.mp4"
        segment = await asyncio.to_thread(_keep_and_parse, path, data, row)
        files[i] = path
        return PlacedSegment(row.start_ms, row.end_ms, segment)

    try:
        placed = await asyncio.gather(*(fetch(i, r) for i, r in enumerate(plan.segments)))
        stitch = await asyncio.to_thread(stitch_plan, placed, plan.start_ms, plan.end_ms)
    except BaseException:
        work.cleanup()
        raise
    return PreparedClip(plan=plan, stitch=stitch, etag=clip_etag(plan), read=lambda i: files[i].read_bytes(),
                        _close=work.cleanup)


async def _from_skeletons(plan: ClipPlan, found: dict[str, bytes], read_segment: SegmentReader) -> PreparedClip:
    """Plan from the skeletons; the writer fetches each segment when its turn comes (and the next ahead)."""
    def parse() -> StitchPlan:
        placed = [PlacedSegment(r.start_ms, r.end_ms, parse_skeleton(found[r.id])) for r in plan.segments]
        return stitch_plan(placed, plan.start_ms, plan.end_ms)

    stitch = await asyncio.to_thread(parse)
    loop = asyncio.get_running_loop()
    ahead: dict[int, concurrent.futures.Future] = {}

    def fetch(i: int) -> concurrent.futures.Future:
        if i not in ahead:
            ahead[i] = asyncio.run_coroutine_threadsafe(read_segment(plan.segments[i]), loop)
        return ahead[i]

    def read(i: int) -> bytes:
        data = fetch(i).result()
        del ahead[i]
        later = [p.source for p in stitch.pieces if p.source > i]
        if later:
            fetch(later[0])  # the next segment downloads while this one is written
        return data

    def close() -> None:
        for f in ahead.values():
            f.cancel()

    return PreparedClip(plan=plan, stitch=stitch, etag=clip_etag(plan), read=read, _close=close)


def _keep_and_parse(path: Path, data: bytes, row: SegmentRow):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        return parse_segment(data, partial=row.partial)
    except Mp4Error as e:
        raise ClipError(f"segment {row.id} is not a readable fragmented MP4: {e}", segment=row.id) from e


async def write_clip(clip: PreparedClip, write: ChunkWriter, *, first: int = 0, last: int | None = None) -> int:
    """Write the clip's bytes ``[first, last]`` (inclusive; all by default) to ``write``; returns the count."""
    end = clip.size if last is None else last + 1
    chunks = iter_clip_range(clip.stitch, first, end, clip.read)
    done = object()
    written = 0
    loop = asyncio.get_running_loop()
    try:
        while (chunk := await loop.run_in_executor(_WRITERS, next, chunks, done)) is not done:
            await write(chunk)
            written += len(chunk)
    finally:
        with contextlib.suppress(Exception):
            chunks.close()
    return written
