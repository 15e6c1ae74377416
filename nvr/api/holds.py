"""Routes of the ``holds`` tag: place, list and release holds (footage a hold covers is never deleted).

Every route needs ``evidence``. A camera-scoped token holds only its cameras,
and sees holds by the rule of ``nvr.api.scope`` (the audit log's rule too): a
hold all of whose cameras it sees is shown whole; a hold that also covers
cameras outside its scope is shown cut (its camera list cut to the scope,
``case_id``, ``reason`` and ``release_reason`` null, ``"redacted": true``) and
can't be released with that token (403); a hold on none of its cameras does
not exist for it (404). Errors in a hold request name the field (``start``,
``cameras``...).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.auth import Principal, principal_of
from nvr.api.deps import RETENTION
from nvr.api.problem import Problem
from nvr.api.scope import Visibility, cut, visibility
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


REDACTED = ("case_id", "reason", "release_reason")  # what a cut hold withholds: it is about the whole case


def _hold_view(h: HoldRecord, who: Principal, now: int) -> dict[str, Any]:
    out = hold_json(h, now)
    if visibility(who, h.cameras) is Visibility.CUT:
        out |= dict.fromkeys(REDACTED) | {"cameras": cut(who, h.cameras), "redacted": True}
    return out


def _sees_hold(who: Principal, h: HoldRecord) -> bool:
    return visibility(who, h.cameras) is not Visibility.HIDDEN


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
    if visibility(who, hold.cameras) is Visibility.CUT:
        raise Problem(403, f"hold {hid} also covers cameras outside this token's scope; a token for those "
                           "cameras must release it")
    reason = parse_release_reason(request[QUERY]["reason"])
    await svc.holds.release(hid, reason, who.actor)
    return web.Response(status=204)


# ---------------------------------------------------------------------- schemas, table

_WITHHELD = {"type": ["string", "null"], "description": "null on a redacted hold"}
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
        "id": {"type": "string"}, "case_id": _WITHHELD, "cameras": {"type": ["array", "null"]}, "start": TIME_SCHEMA,
        "end": _NULLABLE_TIME, "reason": _WITHHELD, "expires": _NULLABLE_TIME,
        "state": {"enum": ["active", "expired", "released"]}, "created": TIME_SCHEMA,
        "created_by": {"type": "string"}, "released": _NULLABLE_TIME, "released_by": {"type": ["string", "null"]},
        "release_reason": {"type": ["string", "null"]}, "legal_holds": {"type": "object"},
        "redacted": {"type": "boolean", "description": "cut to the token's cameras; case_id and reasons withheld"}}},
    "HoldList": {"type": "object", "required": ["holds"], "properties": {
        "holds": {"type": "array", "items": {"$ref": "#/components/schemas/Hold"}}}},
}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/holds", place_hold, "evidence",
          "Place a hold: footage it covers is never deleted (S3 legal hold where object lock is on)",
          tag="holds", body="HoldCreate", responses={201: "Hold"}),
    Route("GET", "/api/v1/holds", list_holds, "evidence", "Holds, newest last", tag="holds",
          query=(Param("state", Choice(STATES), "Only holds in this state", default="all"),),
          responses={200: "HoldList"}),
    Route("DELETE", "/api/v1/holds/{id}", release_hold, "evidence",
          "Release a hold (reason required); legal holds no other hold needs are cleared", tag="holds",
          ids={"id": HOLD},
          query=(Param("reason", Text(1, 1000), "Why the hold is released", required=True),),
          responses={204: "", 409: "Problem"}),
)
