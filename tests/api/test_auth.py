"""Tokens and roles on every route of the table, and a camera-scoped token's view (a real server)."""

from __future__ import annotations

import pytest

from nvr.api.app import ROUTES
from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A, B

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


def segments_of(api, camera: str):
    return api.srv.backend.index.segments(camera)


def concrete(path: str, camera: str, segment: str) -> str:
    return path.replace("/segments/{id}", f"/segments/{segment}").replace("{id}", camera)


async def test_auth_matrix(api):
    seg_a, seg_b = segments_of(api, A)[1].id, segments_of(api, B)[1].id
    t0 = segments_of(api, A)[1].start_ms
    qs = f"?start={ms_to_rfc3339(t0)}&end={ms_to_rfc3339(t0 + 1000)}"
    rank = {"viewer": 1, "evidence": 2, "admin": 3}
    for route in ROUTES:
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
