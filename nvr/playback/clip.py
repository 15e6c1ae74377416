"""Clips: the stored segments of one camera over a time range, stitched at the box level, no ffmpeg.

The stored segments are fragmented MP4 already. A clip is one init segment and
the fragments of the range with their decode times moved onto the clip's
timeline (``nvr.playback.mp4``): a hole between segments stays a hole of its
real length, an edit list starts playback at the requested instant while the
decoder still gets the keyframe before it, every fragment carries its capture
time (``prft``), and the exact size is known before the first byte, so HTTP
Range and seeking work.

Steps: :func:`plan_clip` (the index rows of the range, pure) → :func:`prepare_clip`
(each segment read, verified and decrypted by the caller's reader, parsed, kept in
a private temp file; the stitch plan) → :func:`write_clip` (the bytes, or a byte
range of them, from those files). A codec change ends the clip at that segment
(``PreparedClip.truncated``, the rule is in ``nvr.playback.mp4.stitch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nvr.base import timeline
from nvr.base.errors import NotFound, NvrError
from nvr.base.times import ms_to_rfc3339
from nvr.playback.mp4 import Mp4Error, PlacedSegment, StitchPlan, iter_clip_range, parse_segment
from nvr.playback.mp4 import plan_clip as stitch_plan
from storage.index import SegmentRow

log = logging.getLogger("nvr.clip")

FETCH_CONCURRENCY = 4  # segments read and decrypted at once for one clip


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
    """A clip ready to be written: its stitch plan, and its segments' bytes in a private temp dir."""

    plan: ClipPlan
    stitch: StitchPlan
    etag: str
    _dir: tempfile.TemporaryDirectory = field(repr=False)
    _files: dict[int, Path] = field(default_factory=dict, repr=False)

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

    def read(self, source: int) -> bytes:
        return self._files[source].read_bytes()

    def close(self) -> None:
        self._dir.cleanup()


SegmentReader = Callable[[SegmentRow], Awaitable[bytes]]
ChunkWriter = Callable[[bytes], Awaitable[None]]


async def prepare_clip(plan: ClipPlan, *, read_segment: SegmentReader, tmp_dir: Path) -> PreparedClip:
    """Read, verify (``read_segment`` does) and parse every segment of ``plan``; plan the stitch.

    ``tmp_dir`` (mode 0700, on the data disk) holds the decrypted segments until :meth:`PreparedClip.close`.
    """
    if not plan.segments:
        raise NotFound("no segments in range")
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
    return PreparedClip(plan=plan, stitch=stitch, etag=clip_etag(plan), _dir=work, _files=files)


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
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            await write(chunk)
            written += len(chunk)
    finally:
        with contextlib.suppress(Exception):
            chunks.close()
    return written
