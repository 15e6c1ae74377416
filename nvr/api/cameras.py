"""Routes of the ``cameras`` tag: register, change, unregister cameras and see their recording state.

A change restarts the camera's recorder only when a recording field changed
(see ``nvr.recording.registry``); unregistering keeps footage and ledger.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.auth import principal_of, refuse_scoped
from nvr.api.deps import CAMERAS, RECORDERS, SPOOL
from nvr.api.shared import json_reply, visible_camera
from nvr.api.spec import BODY, CAMERA, CAMERA_ID_SCHEMA, IDS, Route
from nvr.config.settings import CameraConfig
from nvr.recording.registry import CameraRegistry
from nvr.recording.supervisor import RecorderSupervisor


def camera_json(cameras: CameraRegistry, recorders: RecorderSupervisor, cam: CameraConfig) -> dict[str, Any]:
    """A camera as the API shows it (credentials in its URL redacted)."""
    st = recorders.status(cam.id)
    return {
        "id": cam.id, "name": cam.name, "url": cam.display_url, "enabled": cam.enabled,
        "segment_seconds": cam.segment_seconds, "rtsp_transport": cam.rtsp_transport, "audio": cam.audio,
        "timestamps": cam.timestamps, "priority": cam.priority, "live_url": cam.display_live_url,
        "source": cameras.source(cam.id),
        "state": st.state if st else "stopped",
    }


def _reply(request: web.Request, cam: CameraConfig, status: int = 200) -> web.Response:
    return json_reply(camera_json(request.app[CAMERAS], request.app[RECORDERS], cam), status=status)


async def list_cameras(request: web.Request) -> web.Response:
    cameras, recorders, who = request.app[CAMERAS], request.app[RECORDERS], principal_of(request)
    return json_reply({"cameras": [camera_json(cameras, recorders, c) for c in cameras.all() if who.sees(c.id)]})


async def create_camera(request: web.Request) -> web.Response:
    who = principal_of(request)
    refuse_scoped(who, "register cameras")
    cam = await request.app[CAMERAS].create(request[BODY], who.actor)
    return _reply(request, cam, status=201)


async def get_camera(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"])
    return _reply(request, request.app[CAMERAS].get(cid))


async def patch_camera(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"])
    cam = await request.app[CAMERAS].update(cid, request[BODY], principal_of(request).actor)
    return _reply(request, cam)


async def delete_camera(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"])
    await request.app[CAMERAS].delete(cid, principal_of(request).actor)
    return web.Response(status=204)


async def camera_status(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"])
    st = request.app[RECORDERS].status(cid)
    data = st.as_dict() if st else {"camera": cid, "state": "stopped"}
    data["backlog"] = await asyncio.to_thread(request.app[SPOOL].backlog, cid)
    return json_reply(data)


_FIELDS = {
    "url": {"type": "string", "minLength": 1, "maxLength": 2048,
            "description": "rtsp(s)/http(s)/rtmp(s)/srt/udp/tcp URL, or lavfi:<graph>"},
    "name": {"type": "string", "maxLength": 200},
    "enabled": {"type": "boolean"},
    "segment_seconds": {"type": ["number", "null"], "minimum": 1, "maximum": 600},
    "rtsp_transport": {"enum": ["tcp", "udp"]},
    "audio": {"type": "boolean"},
    "timestamps": {"enum": ["auto", "camera", "arrival"],
                   "description": "whose clock times the frames; auto: arrival time for http(s) sources"},
    "priority": {"type": "integer", "minimum": -1000, "maximum": 1000,
                 "description": "in a cluster: cameras of higher priority are claimed first"},
    "live_url": {"type": "string", "maxLength": 2048,
                 "description": "a second, low-resolution stream for live walls, opened only while watched "
                                "(the same schemes as url); empty: none"},
}
SCHEMAS: dict[str, Any] = {
    "CameraCreate": {"type": "object", "additionalProperties": False, "required": ["id", "url"],
                     "properties": {"id": CAMERA_ID_SCHEMA, **_FIELDS}},
    "CameraPatch": {"type": "object", "additionalProperties": False, "properties": _FIELDS},
    "Camera": {"type": "object", "properties": {
        "id": CAMERA_ID_SCHEMA, "name": {"type": "string"},
        "url": {"type": "string", "description": "credentials redacted"},
        "enabled": {"type": "boolean"}, "segment_seconds": {"type": ["number", "null"]},
        "rtsp_transport": {"type": "string"}, "audio": {"type": "boolean"}, "source": {"enum": ["config", "api"]},
        "timestamps": {"enum": ["auto", "camera", "arrival"]}, "priority": {"type": "integer"},
        "live_url": {"type": ["string", "null"], "description": "credentials redacted; null: none"},
        "state": {"type": "string"}}},
}

_ID = {"id": CAMERA}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/cameras", list_cameras, "viewer", "List cameras", tag="cameras"),
    Route("POST", "/api/v1/cameras", create_camera, "admin", "Register a camera and start recording it",
          tag="cameras", body="CameraCreate", responses={201: "Camera", 409: "Problem"}),
    Route("GET", "/api/v1/cameras/{id}", get_camera, "viewer", "One camera", tag="cameras", ids=_ID),
    Route("PATCH", "/api/v1/cameras/{id}", patch_camera, "admin", "Change a camera; recording restarts if needed",
          tag="cameras", ids=_ID, body="CameraPatch"),
    Route("DELETE", "/api/v1/cameras/{id}", delete_camera, "admin",
          "Unregister a camera and stop recording it; footage and ledger are kept", tag="cameras", ids=_ID,
          responses={204: ""}),
    Route("GET", "/api/v1/cameras/{id}/status", camera_status, "viewer", "Recording status of a camera",
          tag="cameras", ids=_ID),
)
