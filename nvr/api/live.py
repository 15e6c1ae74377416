"""Routes of the ``live`` tag: what a camera sees now, from the recorder's own fragments (``nvr.live``).

Two doors onto one feed per camera:

* ``GET /api/v1/cameras/{id}/live``: a WebSocket for browsers (Media Source
  Extensions); each binary message is an init or a media segment with its
  headers (``nvr.live.framing``).
* ``GET /api/v1/cameras/{id}/live.mp4``: one endless fragmented MP4 that
  ffplay, VLC and a plain ``<video src>`` play. One MP4 can't change codec:
  when the camera's configuration changes the response ends, and the player
  reconnects.

Both take a bearer token or a signed URL token (``nvr.api.urltokens``, as HLS
does): ``POST .../live-links`` makes one whose range is the session's allowed
time (a link to live footage is footage from now to its end). A session ends
when the client leaves, the link's range ends, its signer is revoked (checked
every ``REVALIDATE_S``), the camera stops being recorded here, or the server
shuts down. Every session is audited twice: ``live.start`` when the first
picture is sent, ``live.end`` with its duration, bytes, and skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from nvr.api.auth import (
    Unauthenticated,
    new_url_token,
    principal_of,
    reauthenticate,
    url_grant,
)
from nvr.api.deps import AUDIT, CAMERAS, LIVE, LIVE_LIMIT, RECORDERS
from nvr.api.hls import TOKEN
from nvr.api.problem import Problem
from nvr.api.shared import client_of, json_reply, visible_camera
from nvr.api.spec import BODY, CAMERA, IDS, QUERY, URL_TOKEN, Choice, Param, Route
from nvr.base.errors import InvalidInput, NotFound
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.live import framing
from nvr.live.units import LiveFragment, LiveInit
from nvr.live.viewer import Retimer, Viewer

log = logging.getLogger("nvr.api.live")

Parts = tuple[bytes, bytes, memoryview]  # a fragment rendered for one viewer (Retimer.parts)

FIRST_PICTURE_S = 10.0  # a recording camera's next fragment comes within a GOP; ten seconds is no camera
WAIT_STEP_S = 2.0  # how often a waiting session looks at its client and its link
REVALIDATE_S = 15.0  # how often a session's token (or the link's signer) is checked again
LINK_SECONDS = (10, 86_400, 3_600)  # a live link's range: least, most, default
# The kernel's send buffer of a live connection: without a cap Linux grows it to 4 MiB, a minute of a
# camera, held per stalled viewer before its writes block and the viewer's skip-ahead begins.
SEND_BUFFER = 256 * 1024


@dataclass
class _Session:
    camera: str
    door: str  # "ws" or "mp4"
    until_ms: int | None  # the link's range end: the session ends there
    stream: str = "main"
    started_ms: int = 0
    reason: str = "the client left"


async def _check(request: web.Request) -> _Session:
    """The camera of the path, if this token (or link) may watch it live now and this node records it."""
    grant, raw = url_grant(request), request[IDS]["id"]
    now = now_ms()
    if grant is not None and (raw != grant.camera or not grant.start_ms <= now < grant.end_ms):
        raise Problem(403, f"this link does not cover live footage of camera {raw} now (it is for camera "
                           f"{grant.camera}, {ms_to_rfc3339(grant.start_ms)} to {ms_to_rfc3339(grant.end_ms)})")
    cid = await visible_camera(request, raw)
    stream = request[QUERY]["stream"]
    camera = request.app[CAMERAS].get(cid)
    if stream == "sub" and (camera is None or not camera.live_url):
        raise NotFound(f"camera {cid} declares no live_url: watch its main stream")
    if request.app[RECORDERS].status(cid) is None:
        raise Problem(503, f"camera {cid} is not recorded by this node now (disabled, or recorded by another "
                           "node of the cluster): no live picture here", headers={"Retry-After": "5"})
    return _Session(cid, "", grant.end_ms if grant is not None else None, stream)


async def _next(request: web.Request, s: _Session, viewer: Viewer, gone: Callable[[], bool],
                checked: list[float]) -> tuple[LiveFragment, bool] | None:
    """The viewer's next fragment, or None when the session must end (``s.reason`` says why)."""
    while True:
        if gone():
            return None
        if s.until_ms is not None and now_ms() >= s.until_ms:
            s.reason = "the link's time ended"
            return None
        if time.monotonic() - checked[0] >= REVALIDATE_S:
            try:
                await reauthenticate(request)
            except Unauthenticated as e:
                s.reason = f"no longer authorized: {e.detail}"
                return None
            checked[0] = time.monotonic()
        if request.app[RECORDERS].status(s.camera) is None:
            s.reason = "the camera is no longer recorded by this node"
            return None
        try:
            item = await viewer.next(WAIT_STEP_S)
        except TimeoutError:
            continue
        if item is None:
            s.reason = viewer.ended or "the feed ended"
        return item


async def _stream(request: web.Request, s: _Session, *, prepare: Callable[[LiveInit], Awaitable[None]],
                  send_init: Callable[[LiveInit], Awaitable[None]],
                  send_media: Callable[[LiveFragment, Parts, Retimer, Viewer], Awaitable[None]],
                  gone: Callable[[], bool], one_config: bool) -> None:
    """One live session over either door: limits, the first picture, audits, and the send loop."""
    who, hub, audit = principal_of(request), request.app[LIVE], request.app[AUDIT]
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    with request.app[LIVE_LIMIT].hold(who.actor):
        async with hub.watch(s.camera, who.actor[0], s.stream) as viewer:
            try:
                item = await viewer.next(FIRST_PICTURE_S)
            except TimeoutError:
                raise Problem(503, f"camera {s.camera} sent no picture in {FIRST_PICTURE_S:g} s (see its status)",
                              headers={"Retry-After": "5"}) from None
            if item is None:
                raise Problem(503, f"camera {s.camera}'s live feed ended: {viewer.ended}", headers={"Retry-After": "5"})
            s.started_ms = now_ms()
            via = "link" if url_grant(request) else ("session" if who.kind == "user" else "bearer")
            await audit.record("live.start", s.camera, {
                "door": s.door, "stream": s.stream, "client": client_of(request), "via": via,
                "until": ms_to_rfc3339(s.until_ms) if s.until_ms else None}, actor=who.actor)
            retimer, config, checked = Retimer(), None, [time.monotonic()]
            try:
                await prepare(item[0].init)
                while item is not None:
                    fragment, resync = item
                    if fragment.init.key != config:
                        if config is not None and one_config:
                            s.reason = "the camera's codec configuration changed (reconnect)"
                            break
                        await send_init(fragment.init)
                        config = fragment.init.key
                    parts = retimer.parts(fragment, resync=resync)
                    await send_media(fragment, parts, retimer, viewer)
                    size = sum(len(p) for p in parts)
                    viewer.sent_bytes += size
                    viewer.sent_fragments += 1
                    hub.sent(s.camera, size)
                    item = await _next(request, s, viewer, gone, checked)
            except (ConnectionError, asyncio.CancelledError) as e:
                s.reason = "the client left" if not isinstance(e, asyncio.CancelledError) else "cancelled"
                if isinstance(e, asyncio.CancelledError):
                    raise
            finally:
                ended = now_ms()
                await asyncio.shield(audit.record("live.end", s.camera, {
                    "door": s.door, "stream": s.stream, "client": client_of(request), "start": ms_to_rfc3339(s.started_ms),
                    "end": ms_to_rfc3339(ended), "seconds": round((ended - s.started_ms) / 1000, 1),
                    "bytes": viewer.sent_bytes, "fragments": viewer.sent_fragments, "skipped": viewer.skipped,
                    "skips": viewer.skips, "reason": s.reason}, actor=who.actor))


# ---------------------------------------------------------------------- the doors


async def live_mp4(request: web.Request) -> web.StreamResponse:
    s = await _check(request)
    s.door = "mp4"
    headers = {"Content-Type": "video/mp4", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if request.method == "HEAD":  # what a player asks first; no picture is sent, nothing to audit
        return web.Response(headers=headers)
    resp = web.StreamResponse(headers=headers)

    async def prepare(init: LiveInit) -> None:
        resp.headers["X-Live-Codecs"] = init.mime
        await resp.prepare(request)

    async def send_init(init: LiveInit) -> None:
        await resp.write(init.data)

    async def send_media(fragment: LiveFragment, parts: Parts, retimer: Retimer, viewer: Viewer) -> None:
        await resp.write(b"".join(parts))

    def gone() -> bool:
        return request.transport is None or request.transport.is_closing()

    await _stream(request, s, prepare=prepare, send_init=send_init, send_media=send_media, gone=gone,
                  one_config=True)
    if resp.prepared and not gone():
        await resp.write_eof()
    return resp


async def live_ws(request: web.Request) -> web.StreamResponse:
    s = await _check(request)
    s.door = "ws"
    ws = web.WebSocketResponse(heartbeat=20, compress=False, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise Problem(400, "this route is a WebSocket: connect with Upgrade: websocket (or use live.mp4)")
    reader: asyncio.Task | None = None

    async def prepare(init: LiveInit) -> None:
        nonlocal reader
        await ws.prepare(request)
        reader = asyncio.create_task(_drain(ws), name=f"live:ws-reader:{s.camera}")

    async def send_init(init: LiveInit) -> None:
        await ws.send_bytes(framing.encode({"Type": "init", "Content-Type": init.mime,
                                            "X-Init": str(init.generation)}, init.data))

    async def send_media(fragment: LiveFragment, parts: Parts, retimer: Retimer, viewer: Viewer) -> None:
        media_time = retimer.last_start_s
        await ws.send_bytes(framing.encode({
            "Type": "media", "Content-Type": fragment.init.mime, "X-Init": str(fragment.init.generation),
            "X-Sequence": str(fragment.seq), "X-Wall-Clock": ms_to_rfc3339(fragment.wall_ms),
            "X-Wall-Clock-Source": fragment.wall_source, "X-Media-Time": f"{media_time:.6f}",
            "X-Skipped": str(viewer.skipped)}, *parts))

    def gone() -> bool:
        return ws.closed or (reader is not None and reader.done())

    try:
        await _stream(request, s, prepare=prepare, send_init=send_init, send_media=send_media, gone=gone,
                      one_config=False)
        if ws.prepared and not ws.closed:
            await ws.send_str(json.dumps({"end": s.reason}))
            await ws.close()
    finally:
        if reader is not None:
            reader.cancel()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and drop) what the client sends, so its close and pings are seen; ends when it closes."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


async def live_link(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"])
    body = request[BODY]
    unknown = sorted(set(body) - {"seconds"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: seconds", field=unknown[0])
    least, most, default = LINK_SECONDS
    seconds = body.get("seconds", default)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not least <= seconds <= most:
        raise InvalidInput(f"seconds: a whole number of seconds from {least} to {most}", field="seconds")
    who = principal_of(request)
    start = now_ms()
    token, grant = await new_url_token(request, who, cid, start, start + seconds * 1000)
    await request.app[AUDIT].record("live.link", cid, {
        "until": ms_to_rfc3339(grant.end_ms), "expires": ms_to_rfc3339(grant.expires_ms),
        "client": client_of(request)}, actor=who.actor)
    base = f"/api/v1/cameras/{cid}"
    return json_reply({"camera": cid, "until": ms_to_rfc3339(grant.end_ms), "expires": ms_to_rfc3339(grant.expires_ms),
                       "mp4": f"{base}/live.mp4?{URL_TOKEN}={token}", "ws": f"{base}/live?{URL_TOKEN}={token}"},
                      status=201)


SCHEMAS: dict[str, Any] = {
    "LiveLinkCreate": {"type": "object", "additionalProperties": False, "properties": {
        "seconds": {"type": "integer", "minimum": LINK_SECONDS[0], "maximum": LINK_SECONDS[1],
                    "description": f"how long the link may watch (default {LINK_SECONDS[2]})"}}},
    "LiveLink": {"type": "object", "required": ["camera", "until", "expires", "mp4", "ws"], "properties": {
        "camera": {"type": "string"}, "until": {"type": "string", "format": "date-time"},
        "expires": {"type": "string", "format": "date-time"},
        "mp4": {"type": "string", "description": "live.mp4's path with its URL token"},
        "ws": {"type": "string", "description": "the WebSocket's path with its URL token"}}},
}

STREAM = Param("stream", Choice(("main", "sub")), "main: the recorded stream (from the recorder's own fragments); "
               "sub: the camera's live_url, for walls (opened while watched)", default="main")
_LIVE = {503: "Problem", 429: "Problem"}
ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/cameras/{id}/live-links", live_link, "viewer",
          "A signed link to watch a camera live (for players and browsers that can't send a token)",
          tag="live", ids={"id": CAMERA}, body="LiveLinkCreate", responses={201: "LiveLink"}),
    Route("GET", "/api/v1/cameras/{id}/live.mp4", live_mp4, "viewer",
          "The camera live as one endless fragmented MP4 (ffplay, VLC, <video src>); bearer or URL token",
          tag="live", ids={"id": CAMERA}, query=(STREAM, TOKEN), url_token=True, responses={200: "video/mp4", **_LIVE}),
    Route("GET", "/api/v1/cameras/{id}/live", live_ws, "viewer",
          "The camera live over a WebSocket (Media Source Extensions): init and media segments with headers",
          tag="live", ids={"id": CAMERA}, query=(STREAM, TOKEN), url_token=True, responses={101: "", **_LIVE}),
)
