"""The footage API against a real server: real RTSP cameras, real S3, real ffmpeg, real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from nvr.api.auth import create_token
from nvr.api.routes import all_routes, build_app
from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.times import ms_to_rfc3339
from nvr.server.app import NvrServer
from tests.conftest import make_config, wait_segments

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

A, B = "north", "south"


@dataclass
class Api:
    srv: NvrServer
    base: str
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    tmp: Path

    async def get(self, path: str, token: str | None = "admin", **kw) -> aiohttp.ClientResponse:
        return await self.request("GET", path, token, **kw)

    async def request(self, method: str, path: str, token: str | None = "admin", **kw) -> aiohttp.ClientResponse:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return await self.http.request(method, self.base + path, headers=headers, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(rtsp, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    cfg = make_config(tmp, s3, "api-tests", [{"id": A, "url": rtsp.url("cam7")}, {"id": B, "url": rtsp.url("cam8")}],
                      server={"listen": "127.0.0.1:0", "data_dir": str(tmp / "data"), "max_clip": "10m"})
    async with NvrServer(cfg) as srv:
        index = srv.backend.index
        tokens = {role: create_token(index, name=role, role=role, cameras=None)
                  for role in ("viewer", "evidence", "admin")}
        tokens["scoped"] = create_token(index, name="scoped", role="viewer", cameras=[A])
        tokens["revoked"] = create_token(index, name="revoked", role="admin", cameras=None)
        index.revoke_token("revoked")
        tokens["bad"] = "nvr_not-a-real-token"
        await wait_segments(srv, A, 5, timeout=90)
        await wait_segments(srv, B, 5, timeout=90)
        async with aiohttp.ClientSession() as http:
            yield Api(srv, f"http://127.0.0.1:{srv.http_port}", http, tokens, tmp)


def segments_of(api: Api, camera: str):
    return api.srv.backend.index.segments(camera)


# ---------------------------------------------------------------------- auth


def concrete(path: str, camera: str, segment: str) -> str:
    return path.replace("/segments/{id}", f"/segments/{segment}").replace("{id}", camera)


async def test_auth_matrix(api):
    seg_a, seg_b = segments_of(api, A)[1].id, segments_of(api, B)[1].id
    t0 = segments_of(api, A)[1].start_ms
    qs = f"?start={ms_to_rfc3339(t0)}&end={ms_to_rfc3339(t0 + 1000)}"
    rank = {"viewer": 1, "evidence": 2, "admin": 3}
    for route in all_routes():
        needs_q = route.handler.__name__ in ("timeline", "clip")
        for who in ("none", "bad", "revoked", "viewer", "evidence", "admin", "scoped-own", "scoped-other"):
            camera, segment = (B, seg_b) if who == "scoped-other" else (A, seg_a)
            # Mutations by those allowed target a camera that does not exist, so the matrix changes nothing.
            if route.method in ("PATCH", "DELETE") and who in ("admin",):
                camera = "no-such-camera"
            path = concrete(route.path, camera, segment) + (qs if needs_q else "")
            token = {"none": None, "scoped-own": "scoped", "scoped-other": "scoped"}.get(who, who)
            body = {"json": {}} if route.method in ("POST", "PATCH") else {}
            resp = await api.request(route.method, path, token, **body)
            await resp.read()
            got = resp.status
            where = f"{route.method} {path} as {who}: {got}"
            if route.role is None:
                assert got == 200, where
            elif who in ("none", "bad", "revoked"):
                assert got == 401, where
                assert resp.headers["Content-Type"].startswith("application/problem+json"), where
            else:
                role = "viewer" if who.startswith("scoped") else who
                if rank[role] < rank[route.role]:
                    assert got == 403, where
                elif who == "scoped-other" and "{id}" in route.path:
                    assert got == 404, where  # exactly like a missing camera or segment
                else:
                    assert got not in (401, 403, 500), where


async def test_scoped_token_sees_only_its_cameras(api):
    listed = await (await api.get("/api/v1/cameras", "scoped")).json()
    assert [c["id"] for c in listed["cameras"]] == [A]
    seg_b = segments_of(api, B)[0].id
    other = await api.get(f"/api/v1/segments/{seg_b}/content", "scoped")
    missing = await api.get(f"/api/v1/segments/{B}:999999/content", "scoped")
    assert other.status == missing.status == 404
    other_body, missing_body = await other.json(), await missing.json()
    assert other_body["title"] == missing_body["title"]
    status = await (await api.get("/api/v1/status", "scoped")).json()
    assert list(status["cameras"]) == [A]


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


async def test_clip_streams_before_later_segments_are_read(api, monkeypatch):
    rows = segments_of(api, B)[:4]
    first_bytes = asyncio.Event()
    reads: list[str] = []
    real = api.srv.read_segment

    async def gated(row):
        reads.append(row.id)
        if row.id != rows[0].id:
            await first_bytes.wait()  # later segments wait until the client holds the first bytes
        return await real(row)

    monkeypatch.setattr(api.srv, "read_segment", gated)
    url = f"/api/v1/cameras/{B}/clip.mp4?start={ms_to_rfc3339(rows[0].start_ms)}&end={ms_to_rfc3339(rows[3].end_ms)}"
    resp = await api.get(url, "viewer")
    assert resp.status == 200
    chunk = await asyncio.wait_for(resp.content.read(1024), timeout=30)
    assert chunk[4:8] == b"ftyp"
    assert len(reads) <= 2 and rows[3].id not in reads  # the rest was not fetched yet
    first_bytes.set()
    rest = await asyncio.wait_for(resp.read(), timeout=60)
    assert len(rest) > 10_000 and reads == [r.id for r in rows]


async def test_clip_across_a_gap_reports_it_and_carries_on(api, rtsp):
    srv = api.srv
    status = srv.recorders.status(B)
    restarts = status.restarts
    await asyncio.to_thread(rtsp.drop, "cam8")
    await srv.pulse.wait_until(lambda: status.restarts > restarts, timeout=60)
    before = len(segments_of(api, B))
    await asyncio.to_thread(rtsp.restore, "cam8")
    await wait_segments(srv, B, before + 2, timeout=60)
    rows = segments_of(api, B)
    i = next(i for i in range(1, len(rows)) if rows[i].start_ms - rows[i - 1].end_ms > 100)
    start, end = rows[i - 1].start_ms, rows[i].end_ms
    resp = await api.get(f"/api/v1/cameras/{B}/clip.mp4?start={ms_to_rfc3339(start)}&end={ms_to_rfc3339(end)}",
                         "viewer")
    assert resp.status == 200
    assert resp.headers["X-Clip-Gaps"] == f"{ms_to_rfc3339(rows[i - 1].end_ms)}/{ms_to_rfc3339(rows[i].start_ms)}"
    path = api.tmp / "gap.mp4"
    path.write_bytes(await resp.read())
    # Frames from both sides of the gap are in the clip.
    assert len(frame_hashes(path)) >= (rows[i - 1].duration_ms + rows[i].duration_ms) / 1000 * 15 - 20


async def test_clip_too_long_is_refused(api):
    resp = await api.get(f"/api/v1/cameras/{A}/clip.mp4?start=2026-01-01T00:00:00Z&end=2026-01-01T00:10:01Z", "viewer")
    body = await resp.json()
    assert resp.status == 413 and "at most 600 s" in body["detail"]


# ---------------------------------------------------------------------- camera management


async def test_add_disable_delete_camera_at_runtime(api, rtsp):
    srv = api.srv
    pid_a = srv.recorders.status(A).pid
    resp = await api.request("POST", "/api/v1/cameras", json={
        "id": "east", "name": "East gate", "url": rtsp.url("cam6").replace("rtsp://", "rtsp://op:hunter2@")})
    created = await resp.json()
    assert resp.status == 201, created
    assert "hunter2" not in json.dumps(created) and created["url"].startswith("rtsp://***@")
    await wait_segments(srv, "east", 2, timeout=60)
    pid = srv.recorders.status("east").pid
    resp = await api.request("PATCH", "/api/v1/cameras/east", json={"enabled": False})
    assert resp.status == 200 and (await resp.json())["enabled"] is False
    assert srv.recorders.status("east") is None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)  # that camera's ffmpeg is gone
    # The last segment was closed by the stop; once it is ingested nothing more may come.
    await srv.pulse.wait_until(lambda: srv.spool.backlog("east") == 0, timeout=30)
    count = len(segments_of(api, "east"))
    await wait_segments(srv, A, len(segments_of(api, A)) + 2, timeout=60)
    assert len(segments_of(api, "east")) == count  # nothing new while disabled
    assert srv.recorders.status(A).pid == pid_a and srv.recorders.status(A).restarts == 0  # others untouched
    assert (await api.request("DELETE", "/api/v1/cameras/east")).status == 204
    assert (await api.get("/api/v1/cameras/east")).status == 404
    # Footage of a deleted camera stays reachable.
    assert (await api.get("/api/v1/cameras/east/segments")).status == 200
    actions = [e.action for e in srv.backend.index.audit_entries(target="east")]
    assert actions[:3] == ["camera.create", "camera.update", "camera.delete"]


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
    ("GET", f"/api/v1/cameras/{A}/segments?colour=red", None, 400, "unknown query parameter 'colour'"),
    ("GET", f"/api/v1/cameras/{A}/segments?limit=1&limit=2", None, 400, "more than once"),
    ("GET", f"/api/v1/cameras/{A}/timeline", None, 400, "start is required"),
    ("GET", f"/api/v1/cameras/{A}/timeline?start=2026-11-29T10:00:00Z", None, 400, "end is required"),
    ("GET", f"/api/v1/cameras/{A}/clip.mp4?start=2026-11-29T10:00:00%2B01:00&end=2026-11-29T09:00:00Z", None, 400,
     "end must be after start"),
    ("GET", "/api/v1/cameras/Bad%20Id", None, 400, "not a camera id"),
    ("GET", "/api/v1/cameras/nope", None, 404, "does not exist"),
    ("GET", "/api/v1/segments/garbage", None, 400, "not a segment id"),
    ("GET", f"/api/v1/segments/{A}:99999999", None, 404, "does not exist"),
    ("GET", "/api/v1/audit?limit=5000", None, 400, "between 1 and 1000"),
    ("GET", "/api/v1/audit?actor=", None, 400, "1-128"),
    ("GET", "/api/v1/cameras?x=1", None, 400, "this route takes none"),
    ("POST", "/api/v1/cameras", {"id": "x1"}, 400, "url: is required"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "ftp://h/x"}, 400, "scheme"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/x", "colour": "red"}, 400, "unknown key"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/x", "enabled": "yes"}, 400, "must be a boolean"),
    ("POST", "/api/v1/cameras", {"id": A, "url": "rtsp://h/x"}, 409, "already exists"),
    ("POST", "/api/v1/cameras", [1, 2], 400, "JSON object"),
    ("POST", "/api/v1/cameras", "not json", 400, "not valid JSON"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/" + "x" * 70_000}, 413, "too large"),
    ("PATCH", f"/api/v1/cameras/{A}", {"id": "other"}, 400, "id can't be changed"),
    ("PATCH", f"/api/v1/cameras/{A}", {"segment_seconds": 0}, 400, "between 1 and 600"),
    ("PATCH", f"/api/v1/cameras/{A}", {"rtsp_transport": "quic"}, 400, "'tcp' or 'udp'"),
    ("PUT", f"/api/v1/cameras/{A}", {}, 405, "not allowed"),
    ("GET", "/api/v1/nothing-here", None, 404, "no route"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, method, path, body, status, fragment):
    kw = {}
    if isinstance(body, str):
        kw = {"data": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        kw = {"json": body}
    resp = await api.request(method, path, "admin", **kw)
    problem = await resp.json(content_type=None)
    assert resp.status == status, problem
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == status and fragment in problem["detail"], problem


# ---------------------------------------------------------------------- service


async def test_openapi_lists_exactly_the_served_routes(api):
    doc = await (await api.get("/api/v1/openapi.json", None)).json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = build_app(api.srv)
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    assert documented == served
    assert doc["openapi"] == "3.1.0"


async def test_metrics_and_healthz(api):
    text = await (await api.get("/metrics", "viewer")).text()
    for name in ("nvr_segments_ingested_total", "nvr_ingested_bytes_total", "nvr_ingest_latency_seconds_bucket",
                 "nvr_spool_bytes", 'nvr_cameras{state="recording"}', "nvr_http_requests_total"):
        assert name in text
    assert re.search(r"^nvr_segments_ingested_total (\d+)", text, re.M).group(1) != "0"
    health = await (await api.get("/healthz", None)).json()
    assert health == {"ok": True, "alarms": []}


async def test_audit_log_is_chained_and_filterable(api):
    resp = await api.get("/api/v1/audit?actor=token:viewer&limit=1000", "evidence")
    entries = (await resp.json())["entries"]
    assert entries and all(e["actor"] == "token:viewer" for e in entries)
    everything = api.srv.backend.index.audit_entries()
    for prev, cur in zip(everything, everything[1:], strict=False):
        assert cur.prev == prev.hash


async def test_schemathesis_finds_no_server_error(api):
    # Reads only: a fuzzed camera URL would make ffmpeg dial arbitrary hosts. The bad-input table
    # above covers the bodies of the mutating routes.
    token = api.tokens["admin"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "st"), "run", f"{api.base}/api/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error", "--max-examples", "15",
         "--request-timeout", "30", "--include-method", "GET"],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
