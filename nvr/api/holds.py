"""Routes of the ``holds`` tag: place, list and release holds (footage a hold covers is never deleted).

Every route needs ``evidence``. A camera-scoped token holds only its cameras,
lists only holds touching them (with the camera list cut to its scope), and
can release only a hold whose cameras are all in its scope. Errors in a hold
request name the field (``start``, ``cameras``...).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.auth import Principal, principal_of
from nvr.api.deps import RETENTION
from nvr.api.problem import Problem
from nvr.api.shared import json_reply, visible_cameras
from nvr.api.spec import (
    BODY,
    CAMERA_ID_SCHEMA,
    IDS,
    QUERY,
    TIME_SCHEMA,
    Choice,
    Id,
    Param,
    Route,
    Text,
)
from nvr.base.errors import NotFound
from nvr.base.times import now_ms
from retention.holds import HoldRecord, hold_json, parse_hold_request, parse_release_reason

HOLD = Id("hold", r"hold-[0-9]{1,18}", "hold- and a number", server_made=True)
STATES = ("active", "expired", "released", "all")


def _hold_view(h: HoldRecord, who: Principal, now: int) -> dict[str, Any]:
    out = hold_json(h, now)
    if who.cameras is not None and out["cameras"] is not None:
        out["cameras"] = [c for c in out["cameras"] if who.sees(c)]
    return out


def _sees_hold(who: Principal, h: HoldRecord) -> bool:
    return who.cameras is None or h.cameras is None or any(who.sees(c) for c in h.cameras)


async def place_hold(request: web.Request) -> web.Response:
    now = now_ms()
    req = parse_hold_request(request[BODY], now)
    await visible_cameras(request, sorted(req.cameras), name="cameras")
    svc, who = request.app[RETENTION], principal_of(request)
    change = await svc.holds.place(req, who.actor)
    out = _hold_view(change.hold, who, now)
    out["legal_holds"] = change.legal_holds.as_dict() | {"enabled": svc.holds.legal_holds_enabled}
    return json_reply(out, status=201)


async def list_holds(request: web.Request) -> web.Response:
    state = request[QUERY]["state"]
    svc, who = request.app[RETENTION], principal_of(request)
    now = now_ms()
    holds = [h for h in await svc.holds.holds() if _sees_hold(who, h) and state in ("all", h.state(now))]
    return json_reply({"holds": [_hold_view(h, who, now) for h in holds]})


async def release_hold(request: web.Request) -> web.Response:
    hid = request[IDS]["id"]
    svc, who = request.app[RETENTION], principal_of(request)
    hold = await asyncio.to_thread(svc.rstore.hold, hid)
    if hold is None or not _sees_hold(who, hold):
        raise NotFound(f"hold {hid!r} does not exist")
    if who.cameras is not None and (hold.cameras is None or not set(hold.cameras) <= who.cameras):
        raise Problem(403, f"hold {hid} also covers cameras outside this token's scope; a token for those "
                           "cameras must release it")
    reason = parse_release_reason(request[QUERY]["reason"])
    await svc.holds.release(hid, reason, who.actor)
    return web.Response(status=204)


# ---------------------------------------------------------------------- schemas, table

_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time", "description": TIME_SCHEMA["description"]}

SCHEMAS: dict[str, Any] = {
    "HoldCreate": {
        "type": "object", "additionalProperties": False, "required": ["case_id", "cameras", "start", "reason"],
        "properties": {
            "case_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "cameras": {"type": "array", "minItems": 1, "items": CAMERA_ID_SCHEMA},
            "start": TIME_SCHEMA, "end": _NULLABLE_TIME,
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "expires": _NULLABLE_TIME,
        },
    },
    "Hold": {"type": "object", "properties": {
        "id": {"type": "string"}, "case_id": {"type": "string"}, "cameras": {"type": "array"}, "start": TIME_SCHEMA,
        "end": _NULLABLE_TIME, "reason": {"type": "string"}, "expires": _NULLABLE_TIME,
        "state": {"enum": ["active", "expired", "released"]}, "created": TIME_SCHEMA,
        "created_by": {"type": "string"}, "released": _NULLABLE_TIME, "released_by": {"type": ["string", "null"]},
        "release_reason": {"type": ["string", "null"]}, "legal_holds": {"type": "object"}}},
}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/holds", place_hold, "evidence",
          "Place a hold: footage it covers is never deleted (S3 legal hold where object lock is on)",
          tag="holds", body="HoldCreate", responses={201: "Hold"}),
    Route("GET", "/api/v1/holds", list_holds, "evidence", "Holds, newest last", tag="holds",
          query=(Param("state", Choice(STATES), "Only holds in this state", default="all"),)),
    Route("DELETE", "/api/v1/holds/{id}", release_hold, "evidence",
          "Release a hold (reason required); legal holds no other hold needs are cleared", tag="holds",
          ids={"id": HOLD},
          query=(Param("reason", Text(1, 1000), "Why the hold is released", required=True),),
          responses={204: "", 409: "Problem"}),
)
