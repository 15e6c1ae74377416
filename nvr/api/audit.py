"""Routes of the ``audit`` tag: the hash-chained audit log, filtered and paged, within the token's camera scope.

What a camera-scoped token sees follows ``nvr.api.scope``: an entry is shown
whole only if every camera it is about is in the token's scope; an entry about
several cameras of which the token sees only some (a hold or an export over A
and B, read with a token for A) is shown cut: its other cameras removed, its
``detail`` reduced to the times (``REDACTED_KEEPS``), case id, reason, counts
and its ``prev``/``hash`` withheld (a cut entry can't be checked against its
hash anyway), and ``"redacted": true``. Entries about no camera (system,
tokens, configuration, failed authentication) and entries about none of its
cameras are hidden.

Which cameras an entry is about comes from its action (``_ABOUT``): the
target is a camera (``camera.*``, ``clip``, ``recording.*``...), a segment
(``segment.*``: its camera), a hold or an export (the record's cameras, looked
up once per request), or the sweep's ``detail.cameras``. An action that is not
listed is about no camera, so a new kind of entry stays hidden from scoped
tokens until it is listed here (fail closed).

Paging: ``next_cursor`` is the id to continue after. A scoped token's page is
filled from up to ``MAX_SCAN`` entries; when they run out before the page is
full, the page ends early (even empty) with the cursor of the last entry
looked at, so no visible entry is skipped. The log ends where ``next_cursor``
is null.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from nvr.api.auth import Principal, principal_of
from nvr.api.deps import EXPORTS, INDEX, RETENTION
from nvr.api.scope import Visibility, cut, visibility
from nvr.api.shared import json_reply
from nvr.api.spec import CURSOR, END, LIMIT, QUERY, START, TIME_SCHEMA, Param, Route, Text
from nvr.base.ids import is_camera_id, parse_segment_id
from nvr.base.times import ms_to_rfc3339
from storage.index import AuditEntry

BATCH = 500  # entries read at a time for a scoped token
MAX_SCAN = 20_000  # entries a scoped token's page looks at, at most
REDACTED_KEEPS = ("start", "end", "expires", "time", "run", "trigger", "started", "finished")

Cameras = frozenset[str] | None  # None: every camera; empty: none
# The actions whose target is a camera, and those whose target is a segment (see the module doc).
_BY_CAMERA = frozenset({
    "camera.create", "camera.update", "camera.delete", "clip", "clip.failed", "recording.loss",
    "recording.error", "recording.gap", "segment.partial", "ingest.error", "ledger.checkpoint_refused",
    "ledger.rollback", "retention.rules.camera", "recording.audio_transcoded", "recording.placement_corrected",
})
_BY_SEGMENT = frozenset({"segment.content", "segment.verify_failed", "segment.fetch"})


def _camera(target: str) -> Cameras:
    return frozenset({target}) if is_camera_id(target) else frozenset()


def _segment(target: str) -> Cameras:
    parsed = parse_segment_id(target)
    return frozenset({parsed[0]}) if parsed is not None else frozenset()


def _detail_cameras(entry: AuditEntry) -> Cameras:
    cams = entry.detail.get("cameras") if isinstance(entry.detail, dict) else None
    if isinstance(cams, dict | list) and cams and all(isinstance(c, str) for c in cams):
        return frozenset(cams)
    return frozenset()


class _Lookups:
    """The cameras of the holds and exports a page names, each read once per request."""

    def __init__(self, request: web.Request):
        self.app = request.app
        self.holds: dict[str, Cameras] = {}
        self.exports: dict[str, Cameras] = {}

    async def hold(self, entry: AuditEntry) -> Cameras:
        hid = entry.target
        if hid not in self.holds:
            rstore = self.app[RETENTION].rstore
            hold = await asyncio.to_thread(rstore.hold, hid) if rstore is not None else None
            if hold is None:  # not on this node: what the entry itself says, or nothing
                self.holds[hid] = _detail_cameras(entry)
            else:
                self.holds[hid] = None if hold.cameras is None else frozenset(hold.cameras)
        return self.holds[hid]

    async def export(self, entry: AuditEntry) -> Cameras:
        eid = entry.target
        if eid not in self.exports:
            job = await self.app[EXPORTS].get(eid)
            self.exports[eid] = frozenset(job.cameras) if job is not None else _detail_cameras(entry)
        return self.exports[eid]


async def _about(entry: AuditEntry, lookups: _Lookups) -> Cameras:
    """The cameras ``entry`` is about (see the module doc)."""
    action, target = entry.action, entry.target
    if action in _BY_CAMERA:
        return _camera(target)
    if action in _BY_SEGMENT:
        return _segment(target)
    if action == "verify":  # one segment, or a camera's range
        return _segment(target) or _camera(target)
    if action.startswith("hold."):
        return await lookups.hold(entry)
    if action.startswith("export."):
        return await lookups.export(entry)
    if action == "retention.sweep":
        return _detail_cameras(entry)
    return frozenset()


def entry_json(e: AuditEntry) -> dict[str, Any]:
    """An entry as the API shows it to a token that sees all of it."""
    return {"id": e.id, "time": ms_to_rfc3339(e.ts_ms), "actor": e.actor, "role": e.role, "action": e.action,
            "target": e.target, "detail": e.detail, "prev": e.prev, "hash": e.hash}


def _cut_entry(e: AuditEntry, who: Principal, cameras: Cameras) -> dict[str, Any]:
    detail = {k: v for k, v in e.detail.items() if k in REDACTED_KEEPS} if isinstance(e.detail, dict) else {}
    detail["cameras"] = cut(who, cameras)
    return {**entry_json(e), "detail": detail, "prev": None, "hash": None, "redacted": True}


async def _view(e: AuditEntry, who: Principal, lookups: _Lookups) -> dict[str, Any] | None:
    """The entry as ``who`` may see it, or None."""
    if who.cameras is None:
        return entry_json(e)
    cameras = await _about(e, lookups)
    seen = visibility(who, cameras)
    if seen is Visibility.HIDDEN:
        return None
    return entry_json(e) if seen is Visibility.FULL else _cut_entry(e, who, cameras)


async def audit_log(request: web.Request) -> web.Response:
    q, who = request[QUERY], principal_of(request)
    limit, after = q["limit"], q["cursor"]
    read: Callable[..., list[AuditEntry]] = request.app[INDEX].audit_entries
    lookups = _Lookups(request)
    shown: list[dict[str, Any]] = []
    scanned, last_seen, ended = 0, None, False
    while len(shown) <= limit and not ended and scanned < MAX_SCAN:
        n = limit + 1 if who.cameras is None else min(BATCH, MAX_SCAN - scanned)
        rows = await asyncio.to_thread(read, actor=q["actor"], action=q["action"], target=q["target"], start_ms=q["start"],
                                       end_ms=q["end"], after_id=after, limit=n)
        ended = len(rows) < n
        for e in rows:
            scanned, last_seen = scanned + 1, e.id
            view = await _view(e, who, lookups)
            if view is not None:
                shown.append(view)
                if len(shown) > limit:
                    break
        if rows:
            after = rows[-1].id
    if len(shown) > limit:
        shown, cursor = shown[:limit], shown[limit - 1]["id"]
    else:  # the page is not full: the log ended, or the scan did (continue after what was looked at)
        cursor = None if ended or last_seen is None else last_seen
    return json_reply({"entries": shown, "next_cursor": str(cursor) if cursor is not None else None})


_HASH = {"type": ["string", "null"], "description": "null on a redacted entry"}
SCHEMAS: dict[str, Any] = {
    "AuditPage": {"type": "object", "required": ["entries", "next_cursor"], "properties": {
        "entries": {"type": "array", "items": {
            "type": "object", "required": ["id", "time", "actor", "role", "action", "target", "detail"],
            "properties": {
                "id": {"type": "integer"}, "time": TIME_SCHEMA, "actor": {"type": "string"},
                "role": {"type": "string"}, "action": {"type": "string"}, "target": {"type": "string"},
                "detail": {"type": "object"}, "prev": _HASH, "hash": _HASH,
                "redacted": {"type": "boolean", "description": "cut to the token's cameras (see the audit tag)"}}}},
        "next_cursor": {"type": ["string", "null"], "description": "continue after this id; null: the end"}}},
}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/audit", audit_log, "evidence", "The audit log, filtered and paged", tag="audit",
          query=(START, END, Param("actor", Text(1, 128), "Only this actor"),
                 Param("action", Text(1, 128), "Only this action"),
                 Param("target", Text(1, 256), "Only entries about this (a camera, segment, user, hold, ...)"),
                 LIMIT, CURSOR),
          responses={200: "AuditPage"}),
)
