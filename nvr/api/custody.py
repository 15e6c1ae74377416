"""Routes of the ``custody`` tag: signing keys, verification, evidence exports.

* ``GET /api/v1/keys`` (viewer): the node's Ed25519 public keys, old ones
  included, with the fingerprint a bundle's VERIFY.txt asks to compare.
* ``GET /api/v1/segments/{id}/verify`` and ``POST /api/v1/verify`` (evidence):
  the report of ``nvr.custody.verify``. The server first signs a checkpoint of
  the camera's current head (so fresh footage is anchored rather than reported
  ``unanchored``); that never hides tampering, because the writer refuses to
  sign a chain that does not continue its previous checkpoint. A tampered
  range is still a 200: the verification worked, the verdict is in the body.
  A range is limited to ``MAX_VERIFY_SECONDS`` (every object is fetched and
  decrypted while the request waits); ``nvr verify`` has no limit.
* ``POST /api/v1/exports`` (evidence) starts a background export (201 with the
  job, ``Location`` its status URL); ``GET /api/v1/exports/{id}`` is its status;
  ``GET /api/v1/exports/{id}/bundle`` downloads the zip once ``done`` (409 before).
  A camera-scoped token sees only exports whose cameras it may all see.

Every verification, export and bundle download is an audit event with the actor.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from nvr.api.auth import principal_of
from nvr.api.deps import AUDIT, CHECKPOINTS, EXPORTS, INDEX, KEYRING, STORE
from nvr.api.problem import Problem
from nvr.api.shared import client_of, json_reply, visible_camera, visible_cameras, visible_segment
from nvr.api.spec import (
    BODY,
    CAMERA_ID_SCHEMA,
    IDS,
    SEGMENT,
    TIME_SCHEMA,
    Id,
    Route,
    Time,
    check_range,
)
from nvr.base.errors import Conflict, InvalidInput, NotFound
from nvr.base.times import ms_to_rfc3339
from nvr.custody.checkpoint import (
    CheckpointRefused,
    fingerprint,
    key_object_key,
    public_pem,
    trusted_keys,
)
from nvr.custody.exports import ExportJob
from nvr.custody.verify import verify_range, verify_segment

MAX_VERIFY_SECONDS = 24 * 3600
MAX_EXPORT_SECONDS = 7 * 24 * 3600
MAX_EXPORT_CAMERAS = 64
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/#()-]{0,127}$")
EXPORT = Id("export", r"exp-[0-9a-f]{16}", "exp- and 16 hex digits", server_made=True)


def _fields(body: dict[str, Any], accepted: tuple[str, ...]) -> None:
    for key in body:
        if key not in accepted:
            raise InvalidInput(f"unknown key {key!r}; accepted: {', '.join(accepted)}", parameter=key)
    for key in accepted:
        if key not in body:
            raise InvalidInput(f"{key}: is required", parameter=key)


def _string(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise InvalidInput(f"{key}: must be a string", parameter=key)
    return value


def _range(body: dict[str, Any], limit: float, what: str) -> tuple[int, int]:
    start = Time().parse("start", _string(body, "start"))
    end = Time().parse("end", _string(body, "end"))
    check_range(start, end)
    if (end - start) / 1000 > limit:
        raise Problem(413, f"{what} may span at most {limit / 3600:g} h; this one asks {(end - start) / 3600000:g} h: "
                           "split the range" + (" or use `nvr verify` on the node" if what == "a verification" else ""))
    return start, end


async def _anchor(request: web.Request, camera: str) -> None:
    """Sign the camera's current head first, so fresh footage is covered (see the module doc)."""
    try:
        await request.app[CHECKPOINTS].write_now(camera)
    except CheckpointRefused:
        pass  # audited by the writer; the verification names what is wrong


# ---------------------------------------------------------------------- keys


async def list_keys(request: web.Request) -> web.Response:
    ring = request.app[KEYRING]
    current = ring.signing_key.key_id
    keys = trusted_keys(ring)
    return json_reply({"keys": [{
        "key_id": kid, "algorithm": "Ed25519", "public_key_pem": public_pem(key).decode("ascii"),
        "fingerprint_sha256": fingerprint(key), "current": kid == current, "object_key": key_object_key(kid),
    } for kid, key in sorted(keys.items())]})


# ---------------------------------------------------------------------- verification


async def verify_one(request: web.Request) -> web.Response:
    row = await visible_segment(request)
    await _anchor(request, row.camera)
    app = request.app
    report = await verify_segment(app[STORE], app[INDEX], app[KEYRING], row.id)
    await app[AUDIT].record("verify", row.id, {**report.audit_detail(), "client": client_of(request)},
                            actor=principal_of(request).actor)
    return json_reply(report.to_json())


async def verify_range_route(request: web.Request) -> web.Response:
    body = request[BODY]
    _fields(body, ("camera", "start", "end"))
    camera = await visible_camera(request, _string(body, "camera"), footage=True, name="camera")
    start, end = _range(body, MAX_VERIFY_SECONDS, "a verification")
    await _anchor(request, camera)
    app = request.app
    report = await verify_range(app[STORE], app[INDEX], app[KEYRING], camera, start, end)
    await app[AUDIT].record("verify", camera, {**report.audit_detail(), "client": client_of(request)},
                            actor=principal_of(request).actor)
    return json_reply(report.to_json())


# ---------------------------------------------------------------------- exports


async def create_export(request: web.Request) -> web.Response:
    body = request[BODY]
    _fields(body, ("cameras", "start", "end", "case_id", "reason"))
    raw = body["cameras"]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise InvalidInput("cameras: must be a non-empty array of camera ids", parameter="cameras")
    if len(raw) > MAX_EXPORT_CAMERAS:
        raise InvalidInput(f"cameras: at most {MAX_EXPORT_CAMERAS} per export", parameter="cameras")
    cameras = await visible_cameras(request, raw, name="cameras")
    start, end = _range(body, MAX_EXPORT_SECONDS, "an export")
    case_id = _string(body, "case_id")
    if not CASE_ID_RE.match(case_id):
        raise InvalidInput("case_id: 1-128 characters of letters, digits, space and . _ : / # ( ) -, "
                           "starting with a letter or digit", parameter="case_id")
    reason = _string(body, "reason").strip()
    if not 0 < len(reason) <= 2000:
        raise InvalidInput("reason: must be 1-2000 characters", parameter="reason")
    job = await request.app[EXPORTS].create(cameras=cameras, start_ms=start, end_ms=end, case_id=case_id,
                                            reason=reason, actor=principal_of(request).actor)
    return json_reply(job.to_json(), status=201, headers={"Location": f"/api/v1/exports/{job.id}"})


async def _visible_export(request: web.Request) -> ExportJob:
    eid = request[IDS]["id"]
    job = await request.app[EXPORTS].get(eid)
    if job is None or not all(principal_of(request).sees(c) for c in job.cameras):
        raise NotFound(f"export {eid!r} does not exist")
    return job


async def get_export(request: web.Request) -> web.Response:
    return json_reply((await _visible_export(request)).to_json())


async def export_bundle(request: web.Request) -> web.StreamResponse:
    job = await _visible_export(request)
    if job.state != "done":
        raise Conflict(f"export {job.id} is {job.state}" + (f": {job.error}" if job.error else "; try again later"))
    path = request.app[EXPORTS].bundle_path(job)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise Problem(410, f"the bundle of export {job.id} is no longer on this server", title="Gone")
    await request.app[AUDIT].record("export.download", job.id, {
        "case_id": job.case_id, "sha256": job.sha256, "size": job.size, "client": client_of(request),
        "time": ms_to_rfc3339(job.finished_ms or 0),
    }, actor=principal_of(request).actor)
    safe_case = re.sub(r"[^A-Za-z0-9._-]+", "_", job.case_id)[:64]
    return web.FileResponse(path, headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="nvr-{safe_case}-{job.id}.zip"',
        "X-Content-SHA256": job.sha256 or "", "Cache-Control": "no-store",
    })


# ---------------------------------------------------------------------- schemas, table

SCHEMAS: dict[str, Any] = {
    "VerifyRequest": {
        "type": "object", "additionalProperties": False, "required": ["camera", "start", "end"],
        "properties": {"camera": CAMERA_ID_SCHEMA, "start": TIME_SCHEMA, "end": TIME_SCHEMA},
    },
    "ExportCreate": {
        "type": "object", "additionalProperties": False, "required": ["cameras", "start", "end", "case_id", "reason"],
        "properties": {
            "cameras": {"type": "array", "items": CAMERA_ID_SCHEMA, "minItems": 1, "maxItems": MAX_EXPORT_CAMERAS},
            "start": TIME_SCHEMA, "end": TIME_SCHEMA,
            "case_id": {"type": "string", "pattern": CASE_ID_RE.pattern, "maxLength": 128},
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
        },
    },
    "VerifyReport": {"type": "object", "properties": {
        "cameras": {"type": "array", "items": CAMERA_ID_SCHEMA}, "start": TIME_SCHEMA, "end": TIME_SCHEMA,
        "checked_at": TIME_SCHEMA, "verdict": {"enum": ["ok", "unanchored", "failed"]}, "summary": {"type": "object"},
        "segments": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "status": {"enum": ["ok", "unanchored", "tampered", "missing",
                                                          "deleted-by-retention"]},
            "check": {"type": ["string", "null"]}, "failed_checks": {"type": "array"},
            "checkpoint": {"type": ["integer", "null"]}}}},
        "gaps": {"type": "array"}, "problems": {"type": "array"}}},
    "Export": {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"enum": ["queued", "running", "done", "failed"]},
        "cameras": {"type": "array", "items": CAMERA_ID_SCHEMA}, "start": TIME_SCHEMA, "end": TIME_SCHEMA,
        "case_id": {"type": "string"}, "reason": {"type": "string"}, "requested_by": {"type": "string"},
        "sha256": {"type": ["string", "null"]}, "manifest_sha256": {"type": ["string", "null"]},
        "summary": {"type": ["object", "null"]}, "error": {"type": ["string", "null"]},
        "expired": {"type": ["string", "null"], "description": "when the bundle was removed (exports.keep)"},
        "status_url": {"type": "string"}, "bundle_url": {"type": ["string", "null"]}}},
    "KeyList": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object", "properties": {
        "key_id": {"type": "string"}, "algorithm": {"const": "Ed25519"}, "public_key_pem": {"type": "string"},
        "fingerprint_sha256": {"type": "string"}, "current": {"type": "boolean"},
        "object_key": {"type": "string"}}}}}},
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/keys", list_keys, "viewer", "The node's Ed25519 signing public keys, old ones included",
          tag="custody", responses={200: "KeyList"}),
    Route("GET", "/api/v1/segments/{id}/verify", verify_one, "evidence",
          "Verify one segment: hashes, decryption, ledger links, signed checkpoint", tag="custody",
          ids={"id": SEGMENT}, responses={200: "VerifyReport", 502: "Problem", 503: "Problem"}),
    Route("POST", "/api/v1/verify", verify_range_route, "evidence",
          "Verify every segment of a camera in a time range; the report lists each segment, gaps, verdict",
          tag="custody", body="VerifyRequest", responses={200: "VerifyReport", 413: "Problem", 503: "Problem"}),
    Route("POST", "/api/v1/exports", create_export, "evidence",
          "Start an evidence export (signed, offline-verifiable zip) in the background", tag="custody",
          body="ExportCreate", responses={201: "Export", 413: "Problem", 429: "Problem"}),
    Route("GET", "/api/v1/exports/{id}", get_export, "evidence", "Status of an export", tag="custody",
          ids={"id": EXPORT}, responses={200: "Export"}),
    Route("GET", "/api/v1/exports/{id}/bundle", export_bundle, "evidence", "Download a finished export's zip",
          tag="custody", ids={"id": EXPORT}, responses={200: "application/zip", 409: "Problem", 410: "Problem"}),
)
