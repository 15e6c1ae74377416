"""The HTTP API (aiohttp): cameras, segments, timeline, clips, audit, health and metrics.

Every route is declared once in ``ROUTES`` with its role; the router and the
OpenAPI document are both built from that table, so they can't disagree.
Authorization is checked on the object actually loaded: a camera-scoped token
gets the same 404 for another camera's camera, segment or clip as for a
missing one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nvr.api import params
from nvr.api.auth import Principal, authenticate, require
from nvr.api.metrics import render_metrics
from nvr.api.problem import Problem, not_found, problem_middleware, storage_unavailable
from nvr.base.timeline import merge_ranges
from nvr.base.times import ms_to_rfc3339
from nvr.playback.clip import ClipError, plan_clip, stream_clip
from storage.errors import IntegrityError, StorageError, TransientStorageError
from storage.index import SegmentRow

if TYPE_CHECKING:
    from nvr.server.app import NvrServer

log = logging.getLogger("nvr.api")

SERVER_KEY = web.AppKey("nvr", object)
PRINCIPAL_KEY = web.RequestKey("nvr.principal", Principal)
MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: str | None  # None: no token needed
    summary: str
    query: tuple[str, ...] = ()
    body: str | None = None  # name of a schema in openapi.SCHEMAS
    responses: dict[int, str] = field(default_factory=dict)
    tag: str = "footage"


def srv_of(request: web.Request) -> NvrServer:
    return request.app[SERVER_KEY]  # type: ignore[return-value]


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, sort_keys=True))


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


# ---------------------------------------------------------------------- representations


def camera_json(srv: NvrServer, cam) -> dict[str, Any]:
    st = srv.recorders.status(cam.id)
    return {
        "id": cam.id, "name": cam.name, "url": cam.display_url, "enabled": cam.enabled,
        "segment_seconds": cam.segment_seconds, "rtsp_transport": cam.rtsp_transport, "audio": cam.audio,
        "source": srv.cameras.source(cam.id), "state": st.state if st else "stopped",
    }


def segment_json(r: SegmentRow) -> dict[str, Any]:
    return {
        "id": r.id, "camera": r.camera, "seq": r.seq, "start": ms_to_rfc3339(r.start_ms),
        "end": ms_to_rfc3339(r.end_ms), "duration": r.duration_ms / 1000, "partial": r.partial, "size": r.size,
        "sha256": r.sha256, "object_key": r.object_key, "object_size": r.object_size,
        "object_sha256": r.object_sha256, "key_id": r.key_id, "record_hash": r.record_hash, "state": r.state,
        "content_url": f"/api/v1/segments/{r.id}/content",
    }


# ---------------------------------------------------------------------- lookups that enforce scope


async def visible_camera(request: web.Request, raw_id: str, *, footage: bool = False) -> str:
    """A camera id the token may see; with ``footage`` a deleted camera that still has segments counts."""
    srv, who = srv_of(request), principal_of(request)
    cid = params.camera_id(raw_id)
    if not who.sees(cid):
        raise not_found(f"camera {cid!r}")
    if srv.cameras.get(cid) is None and not (footage and await asyncio.to_thread(srv.backend.index.has_segments, cid)):
        raise not_found(f"camera {cid!r}")
    return cid


async def visible_segment(request: web.Request) -> SegmentRow:
    srv, who = srv_of(request), principal_of(request)
    camera, _ = params.segment_id(request.match_info["id"])
    row = await asyncio.to_thread(srv.backend.index.segment, request.match_info["id"])
    if row is None or not who.sees(camera):
        raise not_found(f"segment {request.match_info['id']!r}")
    return row


async def read_segment_or_problem(srv: NvrServer, row: SegmentRow) -> bytes:
    try:
        return await srv.read_segment(row)
    except IntegrityError as e:
        await srv.audit.system("segment.verify_failed", row.id, {"check": e.check, "error": str(e)})
        raise Problem(502, f"segment {row.id} failed verification ({e.check}): {e}",
                      title="Integrity check failed") from None
    except TransientStorageError as e:
        raise storage_unavailable(e) from None
    except StorageError as e:
        raise Problem(502, f"segment {row.id} can't be read from storage: {e}") from None


# ---------------------------------------------------------------------- service routes


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus the alarms an operator must see (no footage, no credentials)."""
    status = srv_of(request).status()
    return json_reply({"ok": not status["alarms"], "alarms": status["alarms"]})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(srv_of(request)), content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    from nvr.api.openapi import build_openapi

    return json_reply(build_openapi(all_routes()))


async def status(request: web.Request) -> web.Response:
    who, data = principal_of(request), srv_of(request).status()
    data["cameras"] = {k: v for k, v in data["cameras"].items() if who.sees(k)}
    return json_reply(data)


# ---------------------------------------------------------------------- cameras


async def list_cameras(request: web.Request) -> web.Response:
    params.query(request, ())
    srv, who = srv_of(request), principal_of(request)
    return json_reply({"cameras": [camera_json(srv, c) for c in srv.cameras.all() if who.sees(c.id)]})


async def create_camera(request: web.Request) -> web.Response:
    params.query(request, ())
    srv, who = srv_of(request), principal_of(request)
    body = await params.json_body(request)
    if who.cameras is not None:
        raise Problem(403, "a camera-scoped token can't register cameras")
    cam = await srv.cameras.create(body, who.actor)
    return json_reply(camera_json(srv, cam), status=201)


async def get_camera(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"])
    srv = srv_of(request)
    return json_reply(camera_json(srv, srv.cameras.get(cid)))


async def patch_camera(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"])
    body = await params.json_body(request)
    srv = srv_of(request)
    cam = await srv.cameras.update(cid, body, principal_of(request).actor)
    return json_reply(camera_json(srv, cam))


async def delete_camera(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"])
    await srv_of(request).cameras.delete(cid, principal_of(request).actor)
    return web.Response(status=204)


async def camera_status(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"])
    srv = srv_of(request)
    st = srv.recorders.status(cid)
    data = st.as_dict() if st else {"camera": cid, "state": "stopped"}
    data["backlog"] = await asyncio.to_thread(srv.spool.backlog, cid)
    return json_reply(data)


# ---------------------------------------------------------------------- segments, timeline


async def list_segments(request: web.Request) -> web.Response:
    q = params.query(request, ("start", "end", "limit", "cursor"))
    cid = await visible_camera(request, request.match_info["id"], footage=True)
    start, end = params.time_range(q, required=False)
    limit = params.int_param(q, "limit", 100, minimum=1, maximum=1000)
    cursor = None
    if "cursor" in q:
        if not re.fullmatch(r"\d{1,15}", q["cursor"]):
            raise params.bad_request("cursor must be the next_cursor of a previous page", parameter="cursor")
        cursor = int(q["cursor"])
    rows = await asyncio.to_thread(srv_of(request).backend.index.segments, cid, start, end,
                                   limit=limit + 1, after_start_ms=cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_reply({"segments": [segment_json(r) for r in rows],
                  "next_cursor": str(rows[-1].start_ms) if more else None})


async def timeline(request: web.Request) -> web.Response:
    q = params.query(request, ("start", "end"))
    cid = await visible_camera(request, request.match_info["id"], footage=True)
    start, end = params.time_range(q)
    # Footage deleted by retention is no longer recorded footage: it shows as a gap.
    spans = await asyncio.to_thread(srv_of(request).backend.index.spans, cid, start, end, state="stored")
    recorded, gaps = merge_ranges(spans, start, end)
    iso = [{"start": ms_to_rfc3339(s), "end": ms_to_rfc3339(e)} for s, e in recorded]
    return json_reply({
        "camera": cid, "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "recorded": iso,
        "gaps": [{"start": ms_to_rfc3339(s), "end": ms_to_rfc3339(e)} for s, e in gaps],
        "recorded_seconds": sum(e - s for s, e in recorded) / 1000,
    })


async def get_segment(request: web.Request) -> web.Response:
    params.query(request, ())
    return json_reply(segment_json(await visible_segment(request)))


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


async def segment_content(request: web.Request) -> web.Response:
    params.query(request, ())
    row = await visible_segment(request)
    srv, who = srv_of(request), principal_of(request)
    if row.state != "stored":
        raise Problem(410, f"segment {row.id} was deleted by retention ({row.state}); its ledger record and "
                           f"tombstone remain: GET /api/v1/segments/{row.id}/verify shows the rule and time")
    rng = request.headers.get("Range")
    data = await read_segment_or_problem(srv, row)
    size, status, headers = len(data), 200, {
        "X-Content-SHA256": row.sha256, "Accept-Ranges": "bytes", "ETag": f'"{row.sha256}"',
        "Content-Disposition": f'inline; filename="{row.id.replace(":", "_")}.mp4"',
    }
    body = data
    if rng:
        m = _RANGE_RE.match(rng.strip())
        first, last = (m.group(1), m.group(2)) if m else ("", "")
        if not m or (first == "" and last == ""):
            raise Problem(416, f"Range {rng!r} is not a single bytes range such as bytes=0-1023",
                          headers={"Content-Range": f"bytes */{size}"})
        if first == "":
            a, b = max(0, size - int(last)), size - 1
        else:
            a, b = int(first), min(int(last), size - 1) if last else size - 1
        if a >= size or a > b:
            raise Problem(416, f"Range {rng!r} is outside the {size} bytes of this segment",
                          headers={"Content-Range": f"bytes */{size}"})
        body, status = data[a:b + 1], 206
        headers["Content-Range"] = f"bytes {a}-{b}/{size}"
    await srv.audit.record("segment.content", row.id, {
        "camera": row.camera, "start": ms_to_rfc3339(row.start_ms), "end": ms_to_rfc3339(row.end_ms),
        "client": _client(request), "range": rng,
    }, actor=who.actor)
    return web.Response(body=body, status=status, content_type="video/mp4", headers=headers)


# ---------------------------------------------------------------------- clips


async def clip(request: web.Request) -> web.StreamResponse:
    q = params.query(request, ("start", "end"))
    cid = await visible_camera(request, request.match_info["id"], footage=True)
    start, end = params.time_range(q)
    srv, who = srv_of(request), principal_of(request)
    limit = srv.cfg.server.max_clip_seconds
    if (end - start) / 1000 > limit:
        raise Problem(413, f"a clip may last at most {limit:g} s (server.max_clip); this one asks "
                           f"{(end - start) / 1000:g} s: split the range")
    rows = await asyncio.to_thread(srv.backend.index.segments, cid, start, end, state="stored")
    plan = plan_clip(rows, start, end)
    if not plan.segments:
        raise Problem(404, f"camera {cid!r} recorded nothing between {ms_to_rfc3339(start)} and {ms_to_rfc3339(end)}")
    gaps = ", ".join(f"{ms_to_rfc3339(a)}/{ms_to_rfc3339(b)}" for a, b in plan.gaps)
    await srv.audit.record("clip", cid, {
        "start": ms_to_rfc3339(start), "end": ms_to_rfc3339(end), "segments": [r.id for r in plan.segments],
        "gaps": len(plan.gaps), "client": _client(request),
    }, actor=who.actor)
    resp = web.StreamResponse(headers={
        "Content-Type": "video/mp4",
        "Content-Disposition": f'inline; filename="{cid}_{ms_to_rfc3339(start)}.mp4"'.replace(":", "-"),
        "X-Clip-Segments": str(len(plan.segments)),
        "X-Clip-Gaps": gaps or "none",
        "X-Clip-Recorded-Start": ms_to_rfc3339(max(start, plan.segments[0].start_ms)),
        "Cache-Control": "no-store",
    })
    await resp.prepare(request)

    async def read(row: SegmentRow) -> bytes:
        try:
            return await srv.read_segment(row)
        except StorageError as e:
            raise ClipError(f"segment {row.id}: {e}") from e

    try:
        await stream_clip(plan, ffmpeg=srv.ffmpeg, read_segment=read, write=resp.write, tmp_dir=srv.clip_tmp)
    except ClipError as e:
        # The status line is gone already: end the connection without the final chunk, so the client
        # sees a truncated transfer rather than a complete-looking clip.
        log.error("clip of %s %s..%s failed mid-stream: %s", cid, ms_to_rfc3339(start), ms_to_rfc3339(end), e)
        await srv.audit.system("clip.failed", cid, {"error": str(e)})
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


# ---------------------------------------------------------------------- audit


async def audit_log(request: web.Request) -> web.Response:
    q = params.query(request, ("start", "end", "actor", "action", "limit", "cursor"))
    start, end = params.time_range(q, required=False)
    limit = params.int_param(q, "limit", 100, minimum=1, maximum=1000)
    cursor = params.int_param(q, "cursor", 0, minimum=0, maximum=10**12) if "cursor" in q else None
    for name in ("actor", "action"):
        if name in q and not (0 < len(q[name]) <= 128):
            raise params.bad_request(f"{name} must be 1-128 characters", parameter=name)
    rows = await asyncio.to_thread(
        srv_of(request).backend.index.audit_entries, actor=q.get("actor"), action=q.get("action"),
        start_ms=start, end_ms=end, after_id=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_reply({"entries": [{
        "id": e.id, "time": ms_to_rfc3339(e.ts_ms), "actor": e.actor, "role": e.role, "action": e.action,
        "target": e.target, "detail": e.detail, "prev": e.prev, "hash": e.hash,
    } for e in rows], "next_cursor": str(rows[-1].id) if more else None})


# ---------------------------------------------------------------------- table, middleware, app

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None, "Liveness and current alarms", tag="service"),
    Route("GET", "/metrics", metrics, "viewer", "Prometheus metrics", tag="service"),
    Route("GET", "/api/v1/openapi.json", openapi, None, "This OpenAPI document", tag="service"),
    Route("GET", "/api/v1/status", status, "viewer", "Recorder, spool, storage and ingest status", tag="service"),
    Route("GET", "/api/v1/cameras", list_cameras, "viewer", "List cameras", tag="cameras"),
    Route("POST", "/api/v1/cameras", create_camera, "admin", "Register a camera and start recording it",
          body="CameraCreate", responses={201: "Camera", 409: "Problem"}, tag="cameras"),
    Route("GET", "/api/v1/cameras/{id}", get_camera, "viewer", "One camera", tag="cameras"),
    Route("PATCH", "/api/v1/cameras/{id}", patch_camera, "admin", "Change a camera; recording restarts if needed",
          body="CameraPatch", tag="cameras"),
    Route("DELETE", "/api/v1/cameras/{id}", delete_camera, "admin",
          "Unregister a camera and stop recording it; footage and ledger are kept", responses={204: ""},
          tag="cameras"),
    Route("GET", "/api/v1/cameras/{id}/status", camera_status, "viewer", "Recording status of a camera",
          tag="cameras"),
    Route("GET", "/api/v1/cameras/{id}/segments", list_segments, "viewer", "Segments of a camera, paged",
          query=("start", "end", "limit", "cursor")),
    Route("GET", "/api/v1/cameras/{id}/timeline", timeline, "viewer", "Recorded ranges and gaps",
          query=("start", "end")),
    Route("GET", "/api/v1/cameras/{id}/clip.mp4", clip, "viewer",
          "One fragmented MP4 of the range, streamed while it is made", query=("start", "end"),
          responses={200: "video/mp4", 413: "Problem"}),
    Route("GET", "/api/v1/segments/{id}", get_segment, "viewer", "Segment metadata and hashes"),
    Route("GET", "/api/v1/segments/{id}/content", segment_content, "viewer",
          "The original segment (decrypted and verified), with Range support",
          responses={200: "video/mp4", 206: "video/mp4", 410: "Problem", 416: "Problem", 502: "Problem"}),
    Route("GET", "/api/v1/audit", audit_log, "evidence", "The audit log, filtered and paged",
          query=("start", "end", "actor", "action", "limit", "cursor"), tag="audit"),
)


def all_routes() -> tuple[Route, ...]:
    """The core routes plus those of the custody and retention modules."""
    from nvr.api.custody import ROUTES as CUSTODY
    from nvr.api.retention import ROUTES as RETENTION

    return ROUTES + CUSTODY + RETENTION


def _auth_middleware(roles: dict[tuple[str, str], str | None]):
    @web.middleware
    async def auth(request: web.Request, handler) -> web.StreamResponse:
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else None
        method = "GET" if request.method == "HEAD" else request.method
        key = (method, route)
        if key in roles and roles[key] is not None:
            who = await authenticate(request, srv_of(request).backend.index)
            require(who, roles[key])
            request[PRINCIPAL_KEY] = who
        return await handler(request)

    return auth


@web.middleware
async def count_requests(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
        srv_of(request).metrics.observe_request(request.method, route, status, time.perf_counter() - started)


def build_app(srv: NvrServer) -> web.Application:
    routes = all_routes()
    roles = {(r.method, r.path): r.role for r in routes}
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[count_requests, problem_middleware, _auth_middleware(roles)])
    app[SERVER_KEY] = srv
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    return app
