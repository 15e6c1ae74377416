"""Clips: the stored segments of one camera over a time range, stitched at the box level, no ffmpeg.

The stored segments are fragmented MP4 already. A clip is one init segment and
the fragments of the range with their decode times moved onto the clip's
timeline (``nvr.base.mp4``): a hole between segments stays a hole of its
real length, an edit list starts playback at the requested instant while the
decoder still gets the keyframe before it, every fragment carries its capture
time (``prft``), and the exact size is known before the first byte, so HTTP
Range and seeking work.

Steps: :func:`plan_clip` (the index rows of the range, pure) → :func:`prepare_clip`
(the size and init: from the segments' skeletons in the index when every segment
has one, so nothing is read before the first byte — for 4 segments or more from
the first and last ones' and the others' summaries, the full plan following
while the first segment downloads; else from the segments themselves, read,
verified and decrypted by the caller's reader and kept in a private temp file)
→ :func:`write_clip` (the bytes, or a byte range of them; each segment fetched
up to READ_AHEAD ahead of the one being written). A codec change ends the clip
at that segment (``PreparedClip.truncated``, the rule is in ``nvr.base.mp4.stitch``).
"""

from __future__ import annotations

import asyncio
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
    Piece,
    PlacedSegment,
    StitchPlan,
    parse_segment,
    parse_skeleton,
    render_head,
)
from nvr.base.mp4 import plan_clip as stitch_plan
from nvr.base.mp4.skeleton import summarize
from nvr.base.mp4.stitch import ClipPromise, SummarizedSegment, check_source, promise_clip
from nvr.base.times import ms_to_rfc3339
from storage.index import SegmentRow

log = logging.getLogger("nvr.clip")

FETCH_CONCURRENCY = 4  # segments read and decrypted at once for one clip planned from the segments
READ_AHEAD = 2  # segments fetched beyond the one being written (each one held in memory until written)
# Clips of this many segments or more announce their size from the first and last segments' skeletons
# and the others' summaries (nvr.base.mp4.stitch.promise_clip): fewer are planned whole as fast.
PROMISE_FROM = 4


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


SegmentReader = Callable[[SegmentRow], Awaitable[bytes]]
ChunkWriter = Callable[[bytes | memoryview], Awaitable[None]]
SkeletonReader = Callable[[Sequence[SegmentRow]], Awaitable[dict[str, bytes]]]


@dataclass
class PreparedClip:
    """A clip ready to be written: its init and exact size, its stitch plan, where its segments' bytes come from.

    The plan may come later than the size (:func:`_promised`): :meth:`stitch` gives it, and holds
    it to the size and init already announced.
    """

    plan: ClipPlan
    etag: str
    init: bytes
    size: int
    sources: tuple[int, ...]  # indexes into plan.segments of the segments the clip is made of
    truncated_at_ms: int | None
    truncated_reason: str
    fetch: Callable[[int], Awaitable[bytes]] = field(repr=False)  # segment i's bytes
    _stitch: Callable[[], Awaitable[StitchPlan]] = field(repr=False)
    _close: Callable[[], None] = field(repr=False, default=lambda: None)
    _planned: StitchPlan | None = field(repr=False, default=None)
    # A plan whose pieces of the first segment are the clip's (promise_clip's), written while the full
    # plan is made: so the first segment's media follows its init without waiting for that.
    early: StitchPlan | None = field(repr=False, default=None)

    @classmethod
    def of(cls, plan: ClipPlan, stitch: StitchPlan, fetch: Callable[[int], Awaitable[bytes]],
           close: Callable[[], None] = lambda: None) -> PreparedClip:
        async def planned() -> StitchPlan:
            return stitch

        sources = tuple(dict.fromkeys(p.source for p in stitch.pieces))
        return cls(plan, clip_etag(plan), stitch.init, stitch.size, sources, stitch.truncated_at_ms,
                   stitch.truncated_reason, fetch, planned, close, stitch)

    @property
    def used(self) -> tuple[SegmentRow, ...]:
        """The segments the clip is made of (a codec change may end it early)."""
        return tuple(self.plan.segments[i] for i in sorted(self.sources))

    @property
    def truncated(self) -> str | None:
        """Why the clip ends before the range does, in words, or None."""
        if self.truncated_at_ms is None:
            return None
        return f"clip ends at {ms_to_rfc3339(self.truncated_at_ms)}: {self.truncated_reason}"

    async def stitch(self) -> StitchPlan:
        """The full stitch plan; one that disagrees with the announced init or size is a :class:`ClipError`."""
        if self._planned is None:
            planned = await self._stitch()
            if planned.init != self.init or planned.size != self.size:
                # Never expected (tests hold promise and plan equal); the bytes sent so far are cut off.
                raise ClipError(f"clip of {self.plan.camera}: planned {planned.size} bytes, {self.size} were "
                                "announced")
            self._planned = planned
        return self._planned

    def close(self) -> None:
        self._close()


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
    return PreparedClip.of(plan, stitch, lambda i: asyncio.to_thread(files[i].read_bytes), work.cleanup)


async def _from_skeletons(plan: ClipPlan, found: dict[str, bytes], read_segment: SegmentReader) -> PreparedClip:
    """Plan from the skeletons; each segment is fetched when the writer comes near it (:func:`write_clip`)."""
    rows = plan.segments

    def parse() -> StitchPlan:
        placed = [PlacedSegment(r.start_ms, r.end_ms, parse_skeleton(found[r.id])) for r in rows]
        return stitch_plan(placed, plan.start_ms, plan.end_ms)

    async def fetch(i: int) -> bytes:
        return await read_segment(rows[i])

    if len(rows) >= PROMISE_FROM:
        promise = await asyncio.to_thread(_promise, plan, found)
        if promise is not None:
            return PreparedClip(plan, clip_etag(plan), promise.init, promise.size, promise.sources, None, "", fetch,
                                lambda: asyncio.to_thread(parse), early=promise.early)
    return PreparedClip.of(plan, await asyncio.to_thread(parse), fetch)


def _promise(plan: ClipPlan, found: dict[str, bytes]) -> ClipPromise | None:
    """The clip's init and size from its first and last segments' skeletons and the others' summaries."""
    rows = plan.segments
    first, *middle, last = rows
    try:
        return promise_clip(
            PlacedSegment(first.start_ms, first.end_ms, parse_skeleton(found[first.id])),
            [SummarizedSegment(r.start_ms, r.end_ms, summarize(found[r.id])) for r in middle],
            PlacedSegment(last.start_ms, last.end_ms, parse_skeleton(found[last.id])),
            plan.start_ms, plan.end_ms)
    except Mp4Error:  # planned the full way, which names what is wrong
        return None


def _keep_and_parse(path: Path, data: bytes, row: SegmentRow):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        return parse_segment(data, partial=row.partial)
    except Mp4Error as e:
        raise ClipError(f"segment {row.id} is not a readable fragmented MP4: {e}", segment=row.id) from e


async def write_clip(clip: PreparedClip, write: ChunkWriter, *, first: int = 0, last: int | None = None) -> int:
    """Write the clip's bytes ``[first, last]`` (inclusive; all by default) to ``write``; returns the count.

    The init goes out at once; the fragments as their segments arrive, each segment fetched up to
    :data:`READ_AHEAD` ahead of the one being written, its media written straight from the
    fetched bytes (no copy) in one write per fragment.
    """
    a, b = first, clip.size if last is None else last + 1
    out = _Writer(clip, write, a, b)
    try:
        if a < len(clip.init):
            if b > len(clip.init) and clip.sources:
                out.segments.want(clip.sources[:1])  # downloads while the rest is planned
            await out.send(clip.init[a:min(b, len(clip.init))])
        if b <= len(clip.init):
            return out.written
        planning = asyncio.ensure_future(clip.stitch())
        try:
            at = max(a, len(clip.init))
            if clip._planned is None and clip.early is not None:
                lead = [p for p in clip.early.pieces if p.source == clip.early.pieces[0].source]
                lead_end = lead[-1].offset + lead[-1].size
                if at < lead_end:
                    out.segments.want(clip.sources[:1 + READ_AHEAD])
                    await out.pieces(clip.early, [p for p in lead if p.offset + p.size > at and p.offset < b])
                    at = lead_end
            stitch = await planning
        finally:
            if not planning.done():
                planning.cancel()
        if at < b:
            await out.pieces(stitch, stitch.overlapping(at, b))
    except Mp4Error as e:
        raise ClipError(f"clip of {clip.plan.camera}: {e}") from e
    finally:
        out.segments.close()
    return out.written


class _Writer:
    """The bytes ``[a, b)`` of a clip, written piece by piece from its segments' bytes."""

    def __init__(self, clip: PreparedClip, write: ChunkWriter, a: int, b: int):
        self.write, self.a, self.b = write, a, b
        self.segments = _Segments(clip.fetch)
        self.written = 0
        self.source, self.view = -1, memoryview(b"")

    async def send(self, chunk: bytes | memoryview) -> None:
        await self.write(chunk)
        self.written += len(chunk)

    async def pieces(self, stitch: StitchPlan, pieces: Sequence[Piece]) -> None:
        order = list(dict.fromkeys(p.source for p in pieces))
        for piece in pieces:
            if piece.source != self.source:
                at = order.index(piece.source)
                self.segments.want(order[at:at + 1 + READ_AHEAD])
                self.source, self.view = piece.source, memoryview(await self.segments.take(piece.source))
                check_source(stitch, piece.source, self.view)
            lo = max(self.a, piece.offset) - piece.offset
            hi = min(self.b, piece.offset + piece.size) - piece.offset
            if lo < piece.head_size:
                await self.send(render_head(piece, self.view)[lo:min(hi, piece.head_size)])
            tail = piece.fragment.moof_end - piece.head_size  # segment offset of the piece's byte head_size
            if hi > piece.head_size:
                await self.send(self.view[tail + max(lo, piece.head_size):tail + hi])


class _Segments:
    """Segment fetches started ahead of need, each taken once, the rest cancelled at the end."""

    def __init__(self, fetch: Callable[[int], Awaitable[bytes]]):
        self._fetch = fetch
        self._tasks: dict[int, asyncio.Task] = {}
        self._taken: set[int] = set()

    def want(self, sources: Sequence[int]) -> None:
        for i in sources:
            if i not in self._tasks and i not in self._taken:
                self._tasks[i] = asyncio.ensure_future(self._fetch(i))

    async def take(self, i: int) -> bytes:
        self.want([i])
        self._taken.add(i)
        return await self._tasks.pop(i)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
            # A fetch that failed after its clip ended has nobody to tell: its error was not this clip's.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._tasks.clear()
