"""Tokens and roles on every route of the table, and a camera-scoped token's view (a real server)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import aiohttp
import pytest

from nvr.api.app import ROUTES
from nvr.api.guard import AUTH_GUARD, AuthLimits
from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A, B
from tests.support.wait import until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


def segments_of(api, camera: str):
    return api.srv.backend.index.segments(camera)


def concrete(path: str, camera: str, segment: str) -> str:
    path = path.replace("{file}", "console.js").replace("{name}", "matrix-nobody")
    return path.replace("/segments/{id}", f"/segments/{segment}").replace("{id}", camera)


async def test_auth_matrix(api, monkeypatch):
    # The matrix sends many wrong tokens from one address: lift the limit of failures for it (tested below).
    monkeypatch.setattr(api.srv.app[AUTH_GUARD], "limits", AuthLimits(burst=1_000_000))
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
            if route.handler.__name__ == "live_mp4":
                resp.close()  # an endless stream when allowed: its status is all this asks
            else:
                await resp.read()
            got = resp.status
            where = f"{route.method} {path} as {who}: {got}"
            if route.role is None:  # open routes: only the login needs a body (a name and a password)
                assert got == (400 if route.body else 200), where
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


# ---------------------------------------------------------------------- failed authentication (issue 12)


async def test_failed_authentication_is_limited_per_address_and_audited_once_per_window(api, monkeypatch, caplog):
    guard, index = api.srv.app[AUTH_GUARD], api.srv.backend.index
    monkeypatch.setattr(guard, "limits", replace(AuthLimits(), window=5.0))  # defaults but a short window
    flooder = "127.0.0.3"  # another address of the loopback: a client other than the test's own
    caplog.set_level(logging.WARNING, logger="nvr.api.auth")
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(flooder, 0))) as http:
        async def as_flooder(token: str) -> aiohttp.ClientResponse:
            resp = await http.get(f"{api.base}/api/v1/cameras", headers={"Authorization": f"Bearer {token}"})
            await resp.read()
            return resp

        started = time.monotonic()
        for i in range(200):
            statuses.append((await as_flooder(f"nvr_guess-{i}")).status)
            if i == 100:  # while the flood goes on, a working token from another address is unaffected
                assert (await api.get("/api/v1/cameras", "viewer")).status == 200
        elapsed = time.monotonic() - started
        checked = statuses.count(401)
        assert statuses[:10] == [401] * 10  # the burst
        assert checked <= 10 + elapsed * guard.limits.per_second + 1 and statuses.count(429) == 200 - checked
        refused = await as_flooder(api.tokens["viewer"])  # refused without a look: even a working token
        problem = await refused.json(content_type=None)
        assert refused.status == 429 and refused.headers["Content-Type"].startswith("application/problem+json")
        wait = int(refused.headers["Retry-After"])
        assert 1 <= wait <= 2 and problem["status"] == 429 and "too many failed authentications" in problem["detail"]
        await asyncio.sleep(wait)
        assert (await as_flooder(api.tokens["viewer"])).status == 200  # earned back: it may try again
    # One audit entry and one log line for the window, with the count, however long the flood.
    entries = await until(lambda: index.audit_entries(action="auth.failed", target=flooder), timeout=10,
                          what="the window's auth.failed entry")
    [entry] = entries
    assert entry.detail["count"] == 201 and entry.detail["refused"] == 201 - checked
    assert entry.detail["failures"] == {"unknown": checked} and entry.actor == "system"
    lines = [r.getMessage() for r in caplog.records if flooder in r.getMessage()]
    assert len(lines) == 1 and "201 failed authentication(s)" in lines[0]
