"""Clips stitched at the box level, checked frame by frame by an independent ffmpeg on a time-coded camera."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import pytest

from nvr.api.auth import create_token
from nvr.base.mp4 import producer_times
from nvr.base.times import ms_to_rfc3339, now_ms
from tests.conftest import make_config, running, wait_segments
from tests.support.rawsql import tampering
from tests.support.rtsp import ffmpeg_exe, independent_ffmpeg
from tests.support.s3proxy import S3Proxy
from tests.support.timecode import read_frames

pytestmark = pytest.mark.integration

OUTAGE_S = 6


async def test_a_clip_keeps_the_hole_starts_at_the_instant_and_every_frame_shows_its_clip_time(
        rtsp, s3, bucket, tmp_path):
    # The camera streams on (another client keeps it busy) while nvr's link to it is cut for OUTAGE_S.
    watcher = subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp",
         "-timeout", "120000000", "-i", rtsp.url("tc2"), "-c", "copy", "-f", "null", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    link = await S3Proxy(f"127.0.0.1:{rtsp.port}").start()
    cfg = make_config(tmp_path, s3, bucket, [{"id": "door", "url": f"rtsp://127.0.0.1:{link.port}/tc2"}])
    try:
        async with running(cfg) as srv:
            index = srv.backend.index
            await wait_segments(srv, "door", 4, timeout=60)
            link.mode = "refuse"
            link.break_connections()
            down = time.time()
            await srv.pulse.wait_until(lambda: srv.recorders.statuses()["door"].state == "backoff", timeout=20)
            await asyncio.sleep(max(0.0, down + OUTAGE_S - time.time()))  # the outage's length, on schedule
            link.mode = "pass"
            before = len(index.segments("door"))
            await wait_segments(srv, "door", before + 3, timeout=60)
            rows = index.segments("door")
            hole = next(i for i in range(1, len(rows)) if rows[i].start_ms - rows[i - 1].end_ms > 1000)
            start = rows[1].start_ms + 700  # mid-GOP: the keyframe is up to a second before
            end = rows[hole + 1].end_ms
            token = create_token(index, name="clip-viewer", role="viewer", cameras=None)
            url = (f"http://127.0.0.1:{srv.http_port}/api/v1/cameras/door/clip.mp4"
                   f"?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}")
            async with aiohttp.ClientSession() as http, \
                    http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.read()
            clip = tmp_path / "clip.mp4"
            clip.write_bytes(body)
            # Planned from the skeletons in the index; without them (an older release's segments, a rebuilt
            # index) the segments are read first, and the clip is the same, byte for byte.
            assert len(index.skeletons(rows)) == len(rows)
            with tampering(index) as db:
                db.execute("DELETE FROM segment_skeletons WHERE id = ?", (rows[2].id,))
            async with aiohttp.ClientSession() as http, \
                    http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200 and await resp.read() == body
            gap_ms = rows[hole].start_ms - rows[hole - 1].end_ms
            assert now_ms() > end
    finally:
        await link.stop()
        watcher.kill()
        watcher.wait(10)

    # An independent decoder has nothing to say: no DTS warning at any join, no error.
    check = subprocess.run([independent_ffmpeg(), "-hide_banner", "-v", "warning", "-i", str(clip), "-f", "null", "-"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stderr == "", check.stderr
    frames = [f for f in read_frames(clip) if f.wall_ms is not None]
    shown = [f for f in frames if f.pts >= 0]  # before t=0: the keyframe's pre-roll, skipped by the edit list
    # The first frame shown is the one of the requested instant (within a frame and the camera's latency).
    assert abs(shown[0].wall_ms - start) <= 300, (shown[0].wall_ms - start)
    # Every frame's clip time + the clip's start is the time the frame shows: a hole stays a hole.
    errors = [round(start + f.pts * 1000) - f.wall_ms for f in shown]
    assert max(abs(e) for e in errors) <= 500, (min(errors), max(errors))
    jumps = [b.pts - a.pts for a, b in zip(shown, shown[1:], strict=False)]
    assert max(jumps) * 1000 >= gap_ms - 200, (max(jumps), gap_ms)
    assert shown[-1].wall_ms >= rows[hole + 1].end_ms - 1000
    # The capture time is in the file: each fragment's prft, the first of every segment at its ledger start.
    prfts = [p.wall_ms for p in producer_times(body)]
    assert prfts == sorted(prfts) and abs(prfts[0] - frames[0].wall_ms) <= 500
    used = [r for r in rows if r.end_ms > start and r.start_ms < end]
    assert all(min(abs(p - r.start_ms) for p in prfts) <= 1 for r in used[1:]), (prfts, [r.start_ms for r in used])
