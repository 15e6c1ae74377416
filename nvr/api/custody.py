"""HTTP routes of chain of custody: signing keys, verification, evidence exports.

* ``GET /api/v1/keys`` (viewer): the node's Ed25519 public keys, old ones
  included, with the fingerprint a bundle's VERIFY.txt asks to compare.
* ``GET /api/v1/segments/{id}/verify`` and ``POST /api/v1/verify`` (evidence):
  the report of storage/verify.py. The server first signs a checkpoint of the
  camera's current head (so fresh footage is anchored rather than reported
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

from nvr.api import params
from nvr.api.openapi import ID, SCHEMAS, TIME
from nvr.api.problem import Problem, bad_request, not_found, storage_unavailable
from nvr.api.routes import Route, json_reply, principal_of, srv_of, visible_camera, visible_segment
from nvr.base.times import ms_to_rfc3339
from nvr.custody.checkpoint import (
    CheckpointRefused,
    fingerprint,
    key_object_key,
    public_pem,
    trusted_keys,
)
from nvr.custody.verify import UnknownSegment, verify_range, verify_segment
from storage.errors import StorageError, TransientStorageError

MAX_VERIFY_SECONDS = 24 * 3600
MAX_EXPORT_SECONDS = 7 * 24 * 3600
MAX_EXPORT_CAMERAS = 64
EXPORT_ID_RE = re.compile(r"^exp-[0-9a-f]{16}$")
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/#()-]{0,127}$")

SCHEMAS.update({
    "VerifyRequest": {
        "type": "object", "additionalProperties": False, "required": ["camera", "start", "end"],
        "properties": {"camera": ID, "start": TIME, "end": TIME},
    },
    "ExportCreate": {
        "type": "object", "additionalProperties": False, "required": ["cameras", "start", "end", "case_id", "reason"],
        "properties": {
            "cameras": {"type": "array", "items": ID, "minItems": 1, "maxItems": MAX_EXPORT_CAMERAS},
            "start": TIME, "end": TIME,
            "case_id": {"type": "string", "pattern": CASE_ID_RE.pattern, "maxLength": 128},
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
        },
    },
    "VerifyReport": {"type": "object", "properties": {
        "cameras": {"type": "array", "items": ID}, "start": TIME, "end": TIME, "checked_at": TIME,
        "verdict": {"enum": ["ok", "unanchored", "failed"]}, "summary": {"type": "object"},
        "segments": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "status": {"enum": ["ok", "unanchored", "tampered", "missing",
                                                          "deleted-by-retention"]},
            "check": {"type": ["string", "null"]}, "failed_checks": {"type": "array"},
            "checkpoint": {"type": ["integer", "null"]}}}},
        "gaps": {"type": "array"}, "problems": {"type": "array"}}},
    "Export": {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"enum": ["queued", "running", "done", "failed"]},
        "cameras": {"type": "array", "items": ID}, "start": TIME, "end": TIME, "case_id": {"type": "string"},
        "reason": {"type": "string"}, "requested_by": {"type": "string"}, "sha256": {"type": ["string", "null"]},
        "manifest_sha256": {"type": ["string", "null"]}, "summary": {"type": ["object", "null"]},
        "error": {"type": ["string", "null"]}, "status_url": {"type": "string"},
        "bundle_url": {"type": ["string", "null"]}}},
    "KeyList": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object", "properties": {
        "key_id": {"type": "string"}, "algorithm": {"const": "Ed25519"}, "public_key_pem": {"type": "string"},
        "fingerprint_sha256": {"type": "string"}, "current": {"type": "boolean"},
        "object_key": {"type": "string"}}}}}},
})


def _fields(body: dict[str, Any], required: tuple[str, ...]) -> None:
    for key in body:
        if key not in required:
            raise bad_request(f"unknown key {key!r}; accepted: {', '.join(required)}", parameter=key)
    for key in required:
        if key not in body:
            raise bad_request(f"{key}: is required", parameter=key)


def _string(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise bad_request(f"{key}: must be a string", parameter=key)
    return value


def _range(body: dict[str, Any], limit: float, what: str) -> tuple[int, int]:
    start = params.parse_time(_string(body, "start"), "start")
    end = params.parse_time(_string(body, "end"), "end")
    if end <= start:
        raise bad_request("end must be after start", parameter="end")
    if (end - start) / 1000 > limit:
        raise Problem(413, f"{what} may span at most {limit / 3600:g} h; this one asks {(end - start) / 3600000:g} h: "
                           "split the range" + (" or use `nvr verify` on the node" if what == "a verification" else ""))
    return start, end


def _storage_problem(e: StorageError) -> Problem:
    if isinstance(e, TransientStorageError):
        return storage_unavailable(e)
    return Problem(502, f"verification could not read the bucket: {e}")


async def _anchor(srv, camera: str) -> None:
    """Sign the camera's current head first, so fresh footage is covered (see the module doc)."""
    writer = getattr(srv, "checkpoints", None)
    if writer is None:
        return
    try:
        await writer.write_now(camera)
    except CheckpointRefused:
        pass  # audited by the writer; the verification names what is wrong
    except StorageError as e:
        raise _storage_problem(e) from None


# ---------------------------------------------------------------------- keys


async def list_keys(request: web.Request) -> web.Response:
    params.query(request, ())
    ring = srv_of(request).backend.keyring
    current = ring.signing_key.key_id
    keys = trusted_keys(ring)
    return json_reply({"keys": [{
        "key_id": kid, "algorithm": "Ed25519", "public_key_pem": public_pem(key).decode("ascii"),
        "fingerprint_sha256": fingerprint(key), "current": kid == current, "object_key": key_object_key(kid),
    } for kid, key in sorted(keys.items())]})


# ---------------------------------------------------------------------- verification


async def verify_one(request: web.Request) -> web.Response:
    params.query(request, ())
    row = await visible_segment(request)
    srv, who = srv_of(request), principal_of(request)
    b = srv.backend
    await _anchor(srv, row.camera)
    try:
        report = await verify_segment(b.store, b.index, b.keyring, row.id)
    except UnknownSegment:
        raise not_found(f"segment {row.id!r}") from None
    except StorageError as e:
        raise _storage_problem(e) from None
    await srv.audit.record("verify", row.id, {**report.audit_detail(), "client": request.remote or "unknown"},
                           actor=who.actor)
    return json_reply(report.to_json())


async def verify_range_route(request: web.Request) -> web.Response:
    params.query(request, ())
    body = await params.json_body(request)
    _fields(body, ("camera", "start", "end"))
    camera = await visible_camera(request, _string(body, "camera"), footage=True)
    start, end = _range(body, MAX_VERIFY_SECONDS, "a verification")
    srv, who = srv_of(request), principal_of(request)
    b = srv.backend
    await _anchor(srv, camera)
    try:
        report = await verify_range(b.store, b.index, b.keyring, camera, start, end)
    except StorageError as e:
        raise _storage_problem(e) from None
    await srv.audit.record("verify", camera, {**report.audit_detail(), "client": request.remote or "unknown"},
                           actor=who.actor)
    return json_reply(report.to_json())


# ---------------------------------------------------------------------- exports


def _exports(srv):
    service = getattr(srv, "exports", None)
    if service is None:
        raise Problem(503, "exports are not available on this server")
    return service


async def create_export(request: web.Request) -> web.Response:
    params.query(request, ())
    body = await params.json_body(request)
    _fields(body, ("cameras", "start", "end", "case_id", "reason"))
    raw = body["cameras"]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise bad_request("cameras: must be a non-empty array of camera ids", parameter="cameras")
    if len(raw) > MAX_EXPORT_CAMERAS:
        raise bad_request(f"cameras: at most {MAX_EXPORT_CAMERAS} per export", parameter="cameras")
    cameras = [await visible_camera(request, c, footage=True) for c in dict.fromkeys(raw)]
    start, end = _range(body, MAX_EXPORT_SECONDS, "an export")
    case_id = _string(body, "case_id")
    if not CASE_ID_RE.match(case_id):
        raise bad_request("case_id: 1-128 characters of letters, digits, space and . _ : / # ( ) -, "
                          "starting with a letter or digit", parameter="case_id")
    reason = _string(body, "reason").strip()
    if not 0 < len(reason) <= 2000:
        raise bad_request("reason: must be 1-2000 characters", parameter="reason")
    srv, who = srv_of(request), principal_of(request)
    job = await _exports(srv).create(cameras=cameras, start_ms=start, end_ms=end, case_id=case_id, reason=reason,
                                     actor=who.actor)
    return json_reply(job.to_json(), status=201, headers={"Location": f"/api/v1/exports/{job.id}"})


async def _visible_export(request: web.Request):
    srv, who = srv_of(request), principal_of(request)
    eid = request.match_info["id"]
    job = await _exports(srv).get(eid) if EXPORT_ID_RE.match(eid) else None
    if job is None or not all(who.sees(c) for c in job.cameras):
        raise not_found(f"export {eid!r}")
    return job


async def get_export(request: web.Request) -> web.Response:
    params.query(request, ())
    return json_reply((await _visible_export(request)).to_json())


async def export_bundle(request: web.Request) -> web.StreamResponse:
    params.query(request, ())
    job = await _visible_export(request)
    srv, who = srv_of(request), principal_of(request)
    if job.state != "done":
        raise Problem(409, f"export {job.id} is {job.state}" + (f": {job.error}" if job.error else "; try again later"))
    path = _exports(srv).bundle_path(job)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise Problem(410, f"the bundle of export {job.id} is no longer on this server", title="Gone")
    await srv.audit.record("export.download", job.id, {
        "case_id": job.case_id, "sha256": job.sha256, "size": job.size, "client": request.remote or "unknown",
        "time": ms_to_rfc3339(job.finished_ms or 0),
    }, actor=who.actor)
    safe_case = re.sub(r"[^A-Za-z0-9._-]+", "_", job.case_id)[:64]
    return web.FileResponse(path, headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="nvr-{safe_case}-{job.id}.zip"',
        "X-Content-SHA256": job.sha256 or "", "Cache-Control": "no-store",
    })


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/keys", list_keys, "viewer", "The node's Ed25519 signing public keys, old ones included",
          responses={200: "KeyList"}, tag="custody"),
    Route("GET", "/api/v1/segments/{id}/verify", verify_one, "evidence",
          "Verify one segment: hashes, decryption, ledger links, signed checkpoint",
          responses={200: "VerifyReport", 502: "Problem", 503: "Problem"}, tag="custody"),
    Route("POST", "/api/v1/verify", verify_range_route, "evidence",
          "Verify every segment of a camera in a time range; the report lists each segment, gaps, verdict",
          body="VerifyRequest", responses={200: "VerifyReport", 413: "Problem", 503: "Problem"}, tag="custody"),
    Route("POST", "/api/v1/exports", create_export, "evidence",
          "Start an evidence export (signed, offline-verifiable zip) in the background",
          body="ExportCreate", responses={201: "Export", 413: "Problem"}, tag="custody"),
    Route("GET", "/api/v1/exports/{id}", get_export, "evidence", "Status of an export", responses={200: "Export"},
          tag="custody"),
    Route("GET", "/api/v1/exports/{id}/bundle", export_bundle, "evidence", "Download a finished export's zip",
          responses={200: "application/zip", 409: "Problem", 410: "Problem"}, tag="custody"),
)
