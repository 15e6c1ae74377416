"""Footage over HTTP against a real server: real RTSP cameras, real S3, real ffmpeg, real HTTP."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A, B
from tests.api.support import body_kw, problem_of, recorded_gap
from tests.support.timecode import read_frames

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


def segments_of(api, camera: str):
    return api.srv.backend.index.segments(camera)


# ---------------------------------------------------------------------- segments, content, timeline


async def test_segment_metadata_content_and_range(api):
    row = segments_of(api, A)[2]
    meta = await (await api.get(f"/api/v1/segments/{row.id}", "viewer")).json()
    assert meta["sha256"] == row.sha256 and meta["record_hash"] == row.record_hash
    resp = await api.get(f"/api/v1/segments/{row.id}/content", "viewer")
    data = await resp.read()
    assert resp.status == 200 and resp.headers["X-Content-SHA256"] == row.sha256
    assert hashlib.sha256(data).hexdigest() == row.sha256
    part = await api.get(f"/api/v1/segments/{row.id}/content", "viewer", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and await part.read() == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = await api.get(f"/api/v1/segments/{row.id}/content", "viewer", headers={"Range": "bytes=-50"})
    assert await tail.read() == data[-50:]
    bad = await api.get(f"/api/v1/segments/{row.id}/content", "viewer", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status == 416
    entries = api.srv.backend.index.audit_entries(action="segment.content", target=row.id)
    assert len(entries) == 3 and entries[0].actor == "token:viewer" and entries[0].detail["client"] == "127.0.0.1"


async def test_segments_paging_and_timeline(api):
    rows = segments_of(api, A)
    first = await (await api.get(f"/api/v1/cameras/{A}/segments?limit=2", "viewer")).json()
    assert [s["id"] for s in first["segments"]] == [r.id for r in rows[:2]]
    second = await (await api.get(f"/api/v1/cameras/{A}/segments?limit=2&cursor={first['next_cursor']}",
                                  "viewer")).json()
    assert [s["id"] for s in second["segments"]] == [r.id for r in rows[2:4]]
    start, end = rows[0].start_ms - 60_000, rows[-1].end_ms
    tl = await (await api.get(f"/api/v1/cameras/{A}/timeline?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}",
                              "viewer")).json()
    assert tl["recorded"][0]["start"] == ms_to_rfc3339(rows[0].start_ms)
    assert tl["gaps"][0] == {"start": ms_to_rfc3339(start), "end": ms_to_rfc3339(rows[0].start_ms)}


# ---------------------------------------------------------------------- clips


def frame_hashes(path: Path) -> list[str]:
    out = subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def media_seconds(path: Path) -> float:
    out = subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v", "-c", "copy", "-f", "null",
                          "-progress", "pipe:1", "-"], capture_output=True, text=True, timeout=60, check=True).stdout
    frames = [int(v) for v in re.findall(r"^frame=(\d+)", out, re.M)]
    return frames[-1] / 15  # the simulator's clip runs at 15 fps


async def test_clip_across_three_segments_has_the_recorded_frames(api):
    rows = segments_of(api, A)[1:4]
    start, end = rows[0].start_ms + 500, rows[2].end_ms - 500
    resp = await api.get(f"/api/v1/cameras/{A}/clip.mp4?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}",
                         "viewer")
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Clip-Segments"] == "3" and resp.headers["X-Clip-Gaps"] == "none"
    clip = api.tmp / "clip3.mp4"
    clip.write_bytes(await resp.read())
    seconds = media_seconds(clip)
    wanted = (end - start) / 1000
    assert wanted - 0.2 <= seconds <= wanted + 1.0 + 0.2, (seconds, wanted)  # within one GOP (1 s)
    recorded: list[str] = []
    for r in rows:
        path = api.tmp / f"{r.id.replace(':', '_')}.mp4"
        path.write_bytes(await api.srv.read_segment(r))
        recorded += frame_hashes(path)
    got = frame_hashes(clip)
    assert len(got) >= wanted * 15 - 3
    joined, sub = ",".join(recorded), ",".join(got)
    assert sub in joined, "the clip's frames are not a run of the recorded frames"
    audit = api.srv.backend.index.audit_entries(action="clip", target=A)
    assert audit[-1].detail["segments"] == [r.id for r in rows]


async def test_clip_has_its_size_first_validators_head_and_ranges(api):
    rows = segments_of(api, B)[:3]
    url = f"/api/v1/cameras/{B}/clip.mp4?start={ms_to_rfc3339(rows[0].start_ms + 300)}&end={ms_to_rfc3339(rows[2].end_ms)}"
    head = await api.request("HEAD", url, "viewer")
    assert head.status == 200 and await head.read() == b""
    size, etag = int(head.headers["Content-Length"]), head.headers["ETag"]
    full = await api.get(url, "viewer")
    body = await full.read()
    assert full.status == 200 and len(body) == size and full.headers["ETag"] == etag
    assert full.headers["Accept-Ranges"] == "bytes" and body[4:8] == b"ftyp"
    part = await api.get(url, "viewer", headers={"Range": "bytes=1000-4999"})
    assert part.status == 206 and await part.read() == body[1000:5000]
    assert part.headers["Content-Range"] == f"bytes 1000-4999/{size}"
    tail = await api.get(url, "viewer", headers={"Range": f"bytes={size - 100}-"})
    assert await tail.read() == body[-100:]
    assert (await api.get(url, "viewer", headers={"Range": f"bytes={size}-"})).status == 416
    same = await api.get(url, "viewer", headers={"If-None-Match": etag})
    assert same.status == 304 and await same.read() == b""
    # HEAD and 304 deliver no footage: only the two GETs with bodies and the two ranges are audited.
    entries = [e for e in api.srv.backend.index.audit_entries(action="clip", target=B)
               if e.detail["start"] == ms_to_rfc3339(rows[0].start_ms + 300)]
    assert len(entries) == 3
    seg = await api.request("HEAD", f"/api/v1/segments/{rows[0].id}/content", "viewer")
    assert seg.status == 200 and int(seg.headers["Content-Length"]) == rows[0].size
    cached = await api.get(f"/api/v1/segments/{rows[0].id}/content", "viewer",
                           headers={"If-None-Match": f'"{rows[0].sha256}"'})
    assert cached.status == 304


async def test_clip_across_a_gap_reports_it_and_carries_on(api, rtsp):
    rows, i = await recorded_gap(api, rtsp, B, "cam8")
    start, end = rows[i - 1].start_ms, rows[i].end_ms
    resp = await api.get(f"/api/v1/cameras/{B}/clip.mp4?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}",
                         "viewer")
    assert resp.status == 200
    assert resp.headers["X-Clip-Gaps"] == f"{ms_to_rfc3339(rows[i - 1].end_ms)}/{ms_to_rfc3339(rows[i].start_ms)}"
    path = api.tmp / "gap.mp4"
    path.write_bytes(await resp.read())
    # Frames from both sides of the gap are in the clip, and the hole stays a hole of its real length.
    assert len(frame_hashes(path)) >= (rows[i - 1].duration_ms + rows[i].duration_ms) / 1000 * 15 - 20
    times = [f.pts for f in read_frames(path)]
    hole = (rows[i].start_ms - rows[i - 1].end_ms) / 1000
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) >= hole - 0.2, (hole, times)
    assert times[-1] >= (rows[i].end_ms - start) / 1000 - 1.0


async def test_clip_too_long_is_refused(api):
    resp = await api.get(f"/api/v1/cameras/{A}/clip.mp4?start=2026-01-01T00:00:00Z&end=2026-01-01T00:10:01Z", "viewer")
    body = await resp.json()
    assert resp.status == 413 and "at most 600 s" in body["detail"]


# ---------------------------------------------------------------------- bad input

BAD_INPUT = [
    ("GET", f"/api/v1/cameras/{A}/segments?start=2026-11-29T10:00:00", None, 400, "no UTC offset"),
    ("GET", f"/api/v1/cameras/{A}/segments?start=yesterday", None, 400, "not an RFC 3339"),
    ("GET", f"/api/v1/cameras/{A}/segments?start=2026-11-29T10:00:00Z&end=2026-11-29T09:00:00Z", None, 400,
     "end must be after start"),
    ("GET", f"/api/v1/cameras/{A}/segments?start=0001-01-01T00:00:00Z", None, 400, "outside 1970"),
    ("GET", f"/api/v1/cameras/{A}/segments?limit=0", None, 400, "between 1 and 1000"),
    ("GET", f"/api/v1/cameras/{A}/segments?limit=ten", None, 400, "whole number"),
    ("GET", f"/api/v1/cameras/{A}/segments?cursor=abc", None, 400, "next_cursor"),
    ("GET", f"/api/v1/cameras/{A}/timeline", None, 400, "start is required"),
    ("GET", f"/api/v1/cameras/{A}/timeline?start=2026-11-29T10:00:00Z", None, 400, "end is required"),
    ("GET", f"/api/v1/cameras/{A}/clip.mp4?start=2026-11-29T10:00:00%2B01:00&end=2026-11-29T09:00:00Z", None, 400,
     "end must be after start"),
    ("GET", "/api/v1/segments/garbage", None, 400, "not a segment id"),
    ("GET", f"/api/v1/segments/{A}:99999999", None, 404, "does not exist"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, method, path, body, status, fragment):
    await problem_of(await api.request(method, path, "admin", **body_kw(body)), status, fragment)
