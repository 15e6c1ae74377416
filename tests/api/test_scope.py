"""A camera-scoped token sees nothing of another camera anywhere: every route of the table, walked (a real server).

The walk takes the route table from ``nvr.api`` itself, so a new route is
walked without a change here (or fails, asking for an example of its ids or
body). With a token for ``A`` only (admin, so every handler is reached), each
route is called with ``B``'s ids, ranges and bodies, and again with those of
a camera, segment, hold and export that do not exist: the two answers must be
the same (a 404 exactly like a missing one, or the 403 every scoped token
gets for a route about every camera), and no answer may carry anything of
``B``: its id, its segments' hashes, the case ids and reasons of holds and
exports that cover it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio

from nvr.api.app import ROUTES
from nvr.api.spec import Route
from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A, B

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

TOKEN = "scoped-admin"
MISSING = {"camera": "nobody", "hold": "hold-999999999", "export": "exp-0000000000000000"}


class Walk:
    """B's ids and what must never show, and the requests of a route for B and for what does not exist."""

    def __init__(self, api, hold: dict, both: dict, export: dict):
        rows = api.srv.backend.index.segments(B)
        self.segment = rows[1]
        # Users and tokens are no camera's: a camera-scoped token is refused their routes whatever the name (403).
        self.ids = {"camera": B, "segment": self.segment.id, "hold": hold["id"], "export": export["id"],
                    "user": "walk-user", "token": "walk-token"}
        # Server-made ids quoted, as JSON shows them: "hold-3" is not "hold-31".
        self.secrets = [B, *(r.sha256 for r in rows[:5]), f'"{hold["id"]}"', f'"{export["id"]}"', "case-walk-b",
                        "reason-walk-b",
                        "case-walk-ab", "reason-walk-ab", "case-walk-exp", "reason-walk-exp"]
        start, end = ms_to_rfc3339(self.segment.start_ms), ms_to_rfc3339(self.segment.end_ms)
        self.query = {"start": start, "end": end, "reason": "walk"}
        rule = {"max_age": "30d"}
        self.bodies: dict[str, list[dict[str, Any]]] = {
            "CameraCreate": [{"id": B, "url": "rtsp://127.0.0.1:9/none"}],
            "CameraPatch": [{"enabled": True}],
            "VerifyRequest": [{"camera": B, "start": start, "end": end}],
            "ExportCreate": [{"cameras": [B], "start": start, "end": end, "case_id": "walk", "reason": "walk"},
                             {"cameras": [A, B], "start": start, "end": end, "case_id": "walk", "reason": "walk"}],
            "HoldCreate": [{"case_id": "walk", "cameras": [B], "start": start, "end": end, "reason": "walk"}],
            "RetentionRules": [{"cameras": {B: rule}}],
            "RetentionRule": [rule],
            "RetentionPreviewRequest": [{"rules": {"cameras": {B: rule}}}, {}],
            "VodLinkCreate": [{"start": start, "end": end}],
            "LiveLinkCreate": [{"seconds": 60}],
            "UserCreate": [{"name": "walk-user", "role": "viewer", "cameras": [B], "password": "walk-password"}],
            "UserPatch": [{"cameras": [B]}],
            "TokenCreate": [{"name": "walk-token", "role": "viewer", "cameras": [B]}],
        }

    def requests(self, route: Route) -> list[tuple[str, dict[str, Any] | None]]:
        """(path with query, body) of each call of ``route`` about B."""
        path = route.path
        for name, kind in route.ids.items():
            assert kind.what in self.ids, f"{route.path}: teach the walk an id of kind {kind.what!r}"
            path = path.replace(f"{{{name}}}", self.ids[kind.what])
        required = [p.name for p in route.query if p.required]
        for name in required:
            assert name in self.query, f"{route.path}: teach the walk a value of ?{name}"
        if required:
            path += "?" + "&".join(f"{n}={self.query[n]}" for n in required).replace("+", "%2B")
        if route.body is None:
            return [(path, None)]
        assert route.body in self.bodies, f"{route.method} {route.path}: teach the walk a {route.body} body"
        return [(path, body) for body in self.bodies[route.body]]

    def missing(self, text: str) -> str:
        """``text`` about things that do not exist instead of B's."""
        text = text.replace(self.ids["hold"], MISSING["hold"]).replace(self.ids["export"], MISSING["export"])
        return text.replace(B, MISSING["camera"])

    def leaked(self, text: str) -> list[str]:
        return [s for s in self.secrets if s in text]


async def call(api, method: str, path: str, body: dict | None) -> tuple[int, str, str]:
    resp = await api.request(method, path, TOKEN, **({"json": body} if body is not None else {}))
    raw = await resp.read()
    return resp.status, resp.headers.get("Content-Type", ""), raw.decode("utf-8", "replace")


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def walk(api):
    """A hold over B, one over A and B, a finished export over B (all by a token of every camera)."""
    seg = api.srv.backend.index.segments(B)[1]
    rng = {"start": ms_to_rfc3339(seg.start_ms), "end": ms_to_rfc3339(seg.end_ms)}
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-walk-b", "cameras": [B], **rng, "reason": "reason-walk-b"})
    both = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-walk-ab", "cameras": [A, B], **rng, "reason": "reason-walk-ab"})
    export = await api.json("POST", "/api/v1/exports", "evidence", status=201, json={
        "cameras": [B], **rng, "case_id": "case-walk-exp", "reason": "reason-walk-exp"})
    assert (await api.srv.exports.wait(export["id"], timeout=90)).state == "done"
    yield Walk(api, hold, both, export)
    for h in (hold, both):
        await api.request("DELETE", f"/api/v1/holds/{h['id']}?reason=walked", "evidence")


async def test_every_route_shows_a_scoped_token_nothing_of_another_camera(api, walk):
    walked = 0
    for route in ROUTES:
        if route.role is None:
            continue  # anyone may call these, token or not: no camera scope applies (they name no camera)
        for path, body in walk.requests(route):
            where = f"{route.method} {path} {json.dumps(body) if body is not None else ''}"
            status, ctype, text = await call(api, route.method, path, body)
            twin = await call(api, route.method, walk.missing(path),
                              json.loads(walk.missing(json.dumps(body))) if body is not None else None)
            assert status in (200, 403, 404), f"{where}: {status} {text[:300]}"
            if route.ids and not {"user", "token"} & {k.what for k in route.ids.values()}:
                assert status == 404, f"{where}: {status} {text[:300]}"
            if status == 403:  # only the refusal every scoped token gets, whatever the camera
                assert "camera-scoped token" in text, f"{where}: {text[:300]}"
            if status >= 400:  # exactly the answer for what does not exist (it names only what was asked)
                assert ctype.startswith("application/problem+json"), where
                got, missing = walk.missing(json.loads(text)["detail"]), json.loads(twin[2])["detail"]
                assert (status, got) == (twin[0], missing), f"{where}: {text[:300]} / {twin[2][:300]}"
            else:
                assert not walk.leaked(text), f"{where}: {walk.leaked(text)} in {text[:2000]}"
            walked += 1
    assert walked >= len([r for r in ROUTES if r.role is not None])


async def test_the_walk_would_see_b(api, walk):
    # What the scoped token must not see is there for a token of every camera (the walk is not vacuous).
    for path in ("/api/v1/audit?limit=1000", "/api/v1/holds", f"/api/v1/segments/{walk.segment.id}",
                 f"/api/v1/exports/{walk.ids['export']}", "/api/v1/status"):
        resp = await api.get(path, "admin")
        assert resp.status == 200 and walk.leaked(await resp.text()), path
