"""Clips: the stored segments of one camera over a time range, joined without re-encoding, streamed.

Pipeline, one process per stage so the first bytes leave as soon as the first
segment is decrypted::

    segment i  ──decrypt──▶ private temp file ──ffmpeg #1 (-ss/-to on the first/last,
               -c copy, timestamps shifted to the segment's place in the clip)──▶ MPEG-TS ┐
                                                      (one kernel pipe shared by every #1) ▼
                                   ffmpeg #2 (-c copy, fragmented MP4 to stdout) ──▶ HTTP body

MPEG-TS is the joint because TS streams concatenate byte-wise. Input ``-ss``
with stream copy starts at the keyframe at or before ``start``; a gap between
segments stays a gap on the clip's timeline (the clip is faithful to time) and
is reported in the response headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nvr.base import timeline
from nvr.base.errors import NvrError
from nvr.base.ffmpeg import FMP4_FLAGS
from storage.index import SegmentRow

log = logging.getLogger("nvr.clip")

CHUNK = 64 * 1024


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
    """The clip could not be completed (a segment failed to read or verify, or ffmpeg failed)."""


SegmentReader = Callable[[SegmentRow], Awaitable[bytes]]
ChunkWriter = Callable[[bytes], Awaitable[None]]


async def stream_clip(plan: ClipPlan, *, ffmpeg: str, read_segment: SegmentReader, write: ChunkWriter,
                      tmp_dir: Path) -> int:
    """Produce the clip of ``plan`` and hand it to ``write`` chunk by chunk; returns the bytes written.

    ``tmp_dir`` (mode 0700, on the data disk) briefly holds one decrypted segment at a time.
    """
    if not plan.segments:
        raise ClipError("no segments in range")
    base_ms = max(plan.start_ms, plan.segments[0].start_ms)
    rfd, wfd = os.pipe()
    try:
        joiner = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            # Tiny probe: ffmpeg #2 must start emitting after the first keyframes, not after 5 s of input.
            "-probesize", "32768", "-analyzeduration", "0", "-f", "mpegts", "-i", "pipe:0",
            "-map", "0", "-c", "copy", "-avoid_negative_ts", "make_zero",
            "-f", "mp4", "-movflags", FMP4_FLAGS.split("=", 1)[1], "pipe:1",
            stdin=rfd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(rfd)
    feeder = asyncio.create_task(_feed(plan, base_ms, wfd, ffmpeg=ffmpeg, read_segment=read_segment, tmp_dir=tmp_dir),
                                 name=f"clip:{plan.camera}:feed")
    stderr = asyncio.create_task(joiner.stderr.read(), name=f"clip:{plan.camera}:stderr")
    written = 0
    try:
        while chunk := await joiner.stdout.read(CHUNK):
            await write(chunk)
            written += len(chunk)
        await feeder  # raises what went wrong feeding
        code = await joiner.wait()
        if code != 0:
            raise ClipError(f"ffmpeg join exited with {code}: {(await stderr).decode(errors='replace')[-300:]}")
        return written
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
        if joiner.returncode is None:
            joiner.kill()
            await joiner.wait()
        stderr.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stderr


async def _feed(plan: ClipPlan, base_ms: int, wfd: int, *, ffmpeg: str, read_segment: SegmentReader,
                tmp_dir: Path) -> None:
    """Decrypt each segment and remux it into the shared TS pipe, in order; closes the pipe at the end."""
    prefetch: asyncio.Task | None = None
    try:
        with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="clip-") as work:
            prefetch = asyncio.create_task(read_segment(plan.segments[0]))
            for i, row in enumerate(plan.segments):
                data = await prefetch
                # Fetch the next segment while this one is remuxed.
                nxt = plan.segments[i + 1] if i + 1 < len(plan.segments) else None
                prefetch = asyncio.create_task(read_segment(nxt)) if nxt is not None else None
                path = Path(work) / f"{i}.mp4"
                await asyncio.to_thread(path.write_bytes, data)
                del data
                args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
                if plan.start_ms > row.start_ms:
                    args += ["-ss", f"{(plan.start_ms - row.start_ms) / 1000:.3f}"]
                if plan.end_ms < row.end_ms:
                    args += ["-to", f"{(plan.end_ms - row.start_ms) / 1000:.3f}"]
                args += ["-i", str(path), "-map", "0", "-c", "copy", "-copyts",
                         "-output_ts_offset", f"{(row.start_ms - base_ms) / 1000:.3f}", "-f", "mpegts", "pipe:1"]
                proc = await asyncio.create_subprocess_exec(
                    *args, stdin=asyncio.subprocess.DEVNULL, stdout=wfd, stderr=asyncio.subprocess.PIPE)
                _, err = await proc.communicate()
                path.unlink(missing_ok=True)
                if proc.returncode != 0:
                    raise ClipError(f"segment {row.id}: remux failed: {err.decode(errors='replace')[-300:]}")
    finally:
        if prefetch is not None and not prefetch.done():
            prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await prefetch
        os.close(wfd)
