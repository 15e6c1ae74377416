"""The OpenAPI 3.1 document, generated from the route table so it can't drift from what is served."""

from __future__ import annotations

import re
from typing import Any

from nvr import __version__
from nvr.base.ids import CAMERA_ID, SEGMENT_ID

TIME = {"type": "string", "format": "date-time", "description": "RFC 3339 with offset or Z"}
ID = {"type": "string", "pattern": rf"^{CAMERA_ID}$", "maxLength": 63}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object", "description": "RFC 9457 problem details",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "instance": {"type": "string"}},
        "required": ["title", "status", "detail"],
    },
    "CameraCreate": {
        "type": "object", "additionalProperties": False, "required": ["id", "url"],
        "properties": {
            "id": ID,
            "url": {"type": "string", "minLength": 1, "maxLength": 2048,
                    "description": "rtsp(s)/http(s)/rtmp(s)/srt/udp/tcp URL, or lavfi:<graph>"},
            "name": {"type": "string", "maxLength": 200},
            "enabled": {"type": "boolean"},
            "segment_seconds": {"type": ["number", "null"], "minimum": 1, "maximum": 600},
            "rtsp_transport": {"enum": ["tcp", "udp"]},
            "audio": {"type": "boolean"},
        },
    },
    "CameraPatch": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048},
            "name": {"type": "string", "maxLength": 200},
            "enabled": {"type": "boolean"},
            "segment_seconds": {"type": ["number", "null"], "minimum": 1, "maximum": 600},
            "rtsp_transport": {"enum": ["tcp", "udp"]},
            "audio": {"type": "boolean"},
        },
    },
    "Camera": {"type": "object", "properties": {
        "id": ID, "name": {"type": "string"}, "url": {"type": "string", "description": "credentials redacted"},
        "enabled": {"type": "boolean"}, "segment_seconds": {"type": ["number", "null"]},
        "rtsp_transport": {"type": "string"}, "audio": {"type": "boolean"}, "source": {"enum": ["config", "api"]},
        "state": {"type": "string"}}},
    "Segment": {"type": "object", "properties": {
        "id": {"type": "string"}, "camera": ID, "seq": {"type": "integer"}, "start": TIME, "end": TIME,
        "duration": {"type": "number"}, "partial": {"type": "boolean"}, "size": {"type": "integer"},
        "sha256": {"type": "string"}, "object_key": {"type": "string"}, "object_sha256": {"type": "string"},
        "key_id": {"type": "string"}, "record_hash": {"type": "string"}, "state": {"type": "string"},
        "content_url": {"type": "string"}}},
}

QUERY: dict[str, dict[str, Any]] = {
    "start": {"schema": TIME, "description": "Start of the range (RFC 3339)"},
    "end": {"schema": TIME, "description": "End of the range, after start (RFC 3339)"},
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "description": "Page size"},
    "cursor": {"schema": {"type": "string", "pattern": r"^\d{1,15}$"}, "description": "next_cursor of the previous page"},
    "actor": {"schema": {"type": "string", "minLength": 1, "maxLength": 128}, "description": "Only this actor"},
    "action": {"schema": {"type": "string", "minLength": 1, "maxLength": 128}, "description": "Only this action"},
}

_REQUIRED_QUERY = {"timeline": ("start", "end"), "clip": ("start", "end"), "release_hold": ("reason",)}


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for name in re.findall(r"{(\w+)}", path):
        schema = ({"type": "string", "pattern": rf"^{SEGMENT_ID}$"}
                  if path.startswith("/api/v1/segments") else ID)
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    return out


def _response(status: int, kind: str) -> dict[str, Any]:
    if kind == "":
        return {"description": "No content"}
    if "/" in kind:
        return {"description": "Media", "content": {kind: {"schema": {"type": "string", "format": "binary"}}}}
    media = "application/problem+json" if kind == "Problem" else "application/json"
    return {"description": kind, "content": {media: {"schema": {"$ref": f"#/components/schemas/{kind}"}}}}


def build_openapi(routes) -> dict[str, Any]:
    """The document for ``routes`` (the API's route table)."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        required = _REQUIRED_QUERY.get(r.handler.__name__, ())
        op: dict[str, Any] = {
            "operationId": r.handler.__name__,
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": _path_params(r.path) + [
                {"name": q, "in": "query", "required": q in required, **QUERY[q]} for q in r.query
            ],
            "responses": {},
        }
        if r.role is None:
            op["security"] = []
        else:
            op["description"] = f"Needs a token with role {r.role} or higher."
        if r.body:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{r.body}"}}}}
        ok = {"GET": 200, "POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}[r.method]
        # A route that names its own success answers replaces the method's default.
        declared_ok = any(200 <= code < 300 for code in r.responses)
        for status, kind in (({} if declared_ok else {ok: "object"}) | r.responses).items():
            op["responses"][str(status)] = (_response(status, kind) if kind != "object"
                                            else {"description": "OK", "content": {"application/json": {}}})
        for status in (400, 401, 403, 404):
            if status == 401 and r.role is None:
                continue
            op["responses"].setdefault(str(status), _response(status, "Problem"))
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "nvr", "version": __version__,
                 "description": "Evidence-grade NVR: cameras, footage by time range, segments, audit."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
