"""Registering, changing and unregistering cameras at runtime over HTTP (a real server, real RTSP cameras)."""

from __future__ import annotations

import json
import os

import pytest

from tests.api.conftest import A
from tests.api.support import body_kw, problem_of
from tests.conftest import wait_segments

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


def segments_of(api, camera: str):
    return api.srv.backend.index.segments(camera)


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


BAD_INPUT = [
    ("GET", "/api/v1/cameras/Bad%20Id", None, 400, "not a camera id"),
    ("GET", "/api/v1/cameras/nope", None, 404, "does not exist"),
    ("POST", "/api/v1/cameras", {"id": "x1"}, 400, "url: is required"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "ftp://h/x"}, 400, "scheme"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/x", "colour": "red"}, 400, "unknown key"),
    ("POST", "/api/v1/cameras", {"id": "x1", "url": "rtsp://h/x", "enabled": "yes"}, 400, "must be a boolean"),
    ("POST", "/api/v1/cameras", {"id": A, "url": "rtsp://h/x"}, 409, "already exists"),
    ("PATCH", f"/api/v1/cameras/{A}", {"id": "other"}, 400, "id can't be changed"),
    ("PATCH", f"/api/v1/cameras/{A}", {"segment_seconds": 0}, 400, "between 1 and 600"),
    ("PATCH", f"/api/v1/cameras/{A}", {"rtsp_transport": "quic"}, 400, "'tcp' or 'udp'"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, method, path, body, status, fragment):
    await problem_of(await api.request(method, path, "admin", **body_kw(body)), status, fragment)
