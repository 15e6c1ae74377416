"""Crash recovery of the spool: files a run left without a segment-list line become partial segments.

This covers ffmpeg killed (stall, SIGKILL of nvr, power loss) mid-segment:
fragmented MP4 plays up to its last complete fragment, so the file is kept,
given wall-clock bounds and ingested like any segment, flagged partial. Empty
files hold no media and are removed, and that loss is an audited event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nvr.base.ffmpeg import probe_duration
from nvr.base.times import ms_to_rfc3339
from storage.spool import SEGMENT_RE, ClosedSegment, Spool, closed_now

log = logging.getLogger("nvr.recovery")

EventFn = Callable[[str, str, dict[str, Any]], Awaitable[None]]


def place_partial(
    *, n: int, run_start_ms: int, floor_ms: int | None, mtime_ms: int, duration_ms: int
) -> tuple[int, int]:
    """Wall-clock bounds of a partial segment (pure).

    A file after the first of its run continues the run's previous segment
    (``floor``). The first file of a run started when its stream did: its last
    write minus what it holds, but never before the run was spawned or before
    the camera's previous segment ended.
    """
    floor = floor_ms or 0
    if n > 0 and floor_ms is not None:
        start = floor
    else:
        start = max(floor, run_start_ms, mtime_ms - duration_ms)
    return start, start + max(duration_ms, 0)


async def recover_camera(
    camera: str,
    *,
    spool: Spool,
    ffmpeg: str,
    floor: Callable[[str], Awaitable[int | None]],
    on_segment: Callable[[ClosedSegment], Awaitable[None]],
    on_event: EventFn,
    run_floor: Callable[[str, str], Awaitable[int | None]] | None = None,
) -> list[ClosedSegment]:
    """Ticket every untracked file of ``camera`` as a partial segment, oldest first.

    In a cluster (the run recorded under a lease epoch) the camera's footage may go on on another
    node, so a file is placed after its own run's previous segment (``run_floor``), never after
    what another node recorded since.
    """
    recovered = []
    for path in await asyncio.to_thread(spool.untracked_files, camera):
        m = SEGMENT_RE.match(path.name)
        assert m is not None  # untracked_files only returns segment names
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            continue
        if st.st_size == 0:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            log.warning("camera %s: %s was empty (ffmpeg stopped before writing media); removed", camera, path.name)
            await on_event("recording.loss", camera, {"file": path.name, "reason": "empty segment file"})
            continue
        seconds = await probe_duration(ffmpeg, path)
        if seconds is None:
            # Unreadable media is still evidence of what the camera sent: keep the bytes, zero duration.
            log.warning("camera %s: %s holds no readable media; stored as a zero-length partial", camera, path.name)
            seconds = 0.0
        epoch = await asyncio.to_thread(spool.run_epoch, camera, m["run"])  # a cluster's lease of that run
        floor_ms = await (run_floor(camera, m["run"]) if epoch is not None and run_floor else floor(camera))
        start, end = place_partial(
            n=int(m["n"]), run_start_ms=int(m["run"][1:]), floor_ms=floor_ms,
            mtime_ms=st.st_mtime_ns // 1_000_000, duration_ms=round(seconds * 1000),
        )
        # Placed by the file's last write and the media it holds, whatever timed the frames.
        seg = closed_now(camera, path.name, start, end, partial=True, clock="write-time", epoch=epoch)
        await asyncio.to_thread(spool.write_ticket, seg)
        log.info("camera %s: recovered partial segment %s (%s, %.1f s)", camera, path.name, ms_to_rfc3339(start), seconds)
        recovered.append(seg)
        await on_segment(seg)
    return recovered
