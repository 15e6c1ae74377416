"""HTTP routes of retention and holds; ``nvr.api.all_routes()`` serves ``ROUTES``.

Roles: reading the rules and holds, placing and releasing holds need
``evidence``; changing rules, previewing and running a sweep need ``admin``.
A camera-scoped token sees and holds only its cameras: it can't change the
default rules or the quota (403), it gets 404 for another camera's override,
and it lists only holds touching its cameras (with the camera list cut to its
scope); it can release only a hold whose cameras are all in its scope.

Errors are problem+json naming the field (``field``: ``default.max_age``,
``cameras.gate.min_age``, ``start``...). A rule set is validated as a whole:
units are explicit (``"30d"``, ``"500GiB"``), ``max_age`` 0 or below
``min_age`` is refused, no ``min_age`` may be under the config's
``retention.min_age``. Unknown cameras are 404, like everywhere in the API.

The service is ``srv.retention`` (a :class:`retention.service.RetentionService`
started by the server). Until the server wires one in, the first request
creates one without the periodic job, so the routes still answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api import params
from nvr.api.openapi import QUERY, SCHEMAS, TIME
from nvr.api.problem import Problem, not_found
from nvr.api.routes import Route, json_reply, principal_of, srv_of, visible_camera
from nvr.base.ids import CAMERA_ID
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.base.units import format_duration
from nvr.config.retention import ResolvedRule, RetentionRuleError, Rule, RuleSet, rules_to_dict
from retention.holds import HoldInputError, hold_json, parse_hold_request, parse_release_reason
from retention.service import RetentionService
from retention.store import HoldAlreadyReleased, HoldNotFound
from retention.sweep import preview_json

# ---------------------------------------------------------------------- the service


def service_of(request: web.Request) -> RetentionService:
    return srv_of(request).retention


def _field_problem(e: RetentionRuleError | HoldInputError) -> Problem:
    return Problem(400, str(e), field=e.field)


def _rule_json(r: ResolvedRule | Rule) -> dict[str, str]:
    return rules_to_dict(RuleSet(default=Rule(r.max_age, r.max_bytes, r.min_age)))["default"]


async def _check_cameras(request: web.Request, cameras) -> None:
    for cam in sorted(cameras):
        await visible_camera(request, cam, footage=True)


def _refuse_scoped(request: web.Request, what: str) -> None:
    who = principal_of(request)
    if who.cameras is not None:
        raise Problem(403, f"a camera-scoped token can't {what}; use a token for every camera")


async def _rules_view(request: web.Request, svc: RetentionService) -> dict[str, Any]:
    srv, who = srv_of(request), principal_of(request)
    st = svc.stored
    data = rules_to_dict(st.rules)
    data["cameras"] = {c: r for c, r in data["cameras"].items() if who.sees(c)}
    cams = {c.id for c in srv.cameras.all()} | set(st.rules.cameras)
    return {
        "rules": data, "version": st.version, "source": st.source, "changed": ms_to_rfc3339(st.changed_ms),
        "changed_by": st.actor, "min_age_floor": format_duration(svc.settings.min_age_floor),
        "effective": {c: _rule_json(st.rules.for_camera(c)) for c in sorted(cams) if who.sees(c)},
        "sweep": svc.status(),
    }


# ---------------------------------------------------------------------- rules


async def get_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    svc = service_of(request)
    return json_reply(await _rules_view(request, svc))


async def put_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    _refuse_scoped(request, "change the retention rules of every camera")
    body = await params.json_body(request)
    svc = service_of(request)
    try:
        rules = svc.parse_rules(body)
    except RetentionRuleError as e:
        raise _field_problem(e) from None
    await _check_cameras(request, rules.cameras)
    await svc.set_rules(rules, principal_of(request).actor)
    return json_reply(await _rules_view(request, svc))


async def put_camera_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"], footage=True)
    body = await params.json_body(request)
    svc = service_of(request)
    try:
        st = await svc.set_camera_rule(cid, body, principal_of(request).actor)
    except RetentionRuleError as e:
        raise _field_problem(e) from None
    return json_reply({"camera": cid, "rule": rules_to_dict(st.rules)["cameras"][cid],
                  "effective": _rule_json(st.rules.for_camera(cid)), "version": st.version})


async def delete_camera_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    cid = await visible_camera(request, request.match_info["id"], footage=True)
    svc = service_of(request)
    try:
        await svc.delete_camera_rule(cid, principal_of(request).actor)
    except KeyError:
        raise Problem(404, f"camera {cid!r} has no retention override (it follows the default)") from None
    except RetentionRuleError as e:
        raise _field_problem(e) from None
    return web.Response(status=204)


async def preview_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    body = await params.json_body(request)
    unknown = sorted(k for k in body if k != "rules")
    if unknown:
        raise params.bad_request(f"unknown key {unknown[0]!r}; the body is {{\"rules\": {{...}}}} (omit rules "
                                 "to preview the rules in force)", field=unknown[0])
    svc = service_of(request)
    rules = None
    if "rules" in body:
        try:
            rules = svc.parse_rules(body["rules"])
        except RetentionRuleError as e:
            raise Problem(400, f"rules.{e}", field=f"rules.{e.field}") from None
        await _check_cameras(request, rules.cameras)
    pv = await svc.preview(rules)
    out = preview_json(pv, principal_of(request).sees)
    out["rules"] = rules_to_dict(pv.rules)
    return json_reply(out)


async def run_retention(request: web.Request) -> web.Response:
    params.query(request, ())
    _refuse_scoped(request, "run the sweep of every camera")
    svc, who = service_of(request), principal_of(request)
    await srv_of(request).audit.record("retention.run", "retention", {"trigger": "api"}, actor=who.actor)
    report = await svc.run_now("api")
    return json_reply(report.as_dict())


# ---------------------------------------------------------------------- holds


def _hold_view(h, who, now: int) -> dict[str, Any]:
    out = hold_json(h, now)
    if who.cameras is not None and out["cameras"] is not None:
        out["cameras"] = [c for c in out["cameras"] if who.sees(c)]
    return out


def _sees_hold(who, h) -> bool:
    return who.cameras is None or h.cameras is None or any(who.sees(c) for c in h.cameras)


async def place_hold(request: web.Request) -> web.Response:
    params.query(request, ())
    body = await params.json_body(request)
    now = now_ms()
    try:
        req = parse_hold_request(body, now)
    except HoldInputError as e:
        raise _field_problem(e) from None
    await _check_cameras(request, req.cameras)
    svc, who = service_of(request), principal_of(request)
    change = await svc.holds.place(req, who.actor)
    out = _hold_view(change.hold, who, now)
    out["legal_holds"] = change.legal_holds.as_dict() | {"enabled": svc.holds.legal_holds_enabled}
    return json_reply(out, status=201)


_HOLD_STATES = ("active", "expired", "released", "all")


async def list_holds(request: web.Request) -> web.Response:
    q = params.query(request, ("state",))
    state = q.get("state", "all")
    if state not in _HOLD_STATES:
        raise params.bad_request(f"state must be one of {', '.join(_HOLD_STATES)}, got {state!r}", parameter="state")
    svc, who = service_of(request), principal_of(request)
    now = now_ms()
    holds = [h for h in await svc.holds.holds() if _sees_hold(who, h) and state in ("all", h.state(now))]
    return json_reply({"holds": [_hold_view(h, who, now) for h in holds]})


async def release_hold(request: web.Request) -> web.Response:
    q = params.query(request, ("reason",))
    hid = request.match_info["id"]
    svc, who = service_of(request), principal_of(request)
    hold = await asyncio.to_thread(svc.rstore.hold, hid)
    if hold is None or not _sees_hold(who, hold):
        raise not_found(f"hold {hid!r}")
    if who.cameras is not None and (hold.cameras is None or not set(hold.cameras) <= who.cameras):
        raise Problem(403, f"hold {hid} also covers cameras outside this token's scope; a token for those "
                           "cameras must release it")
    try:
        reason = parse_release_reason(q.get("reason"))
    except HoldInputError as e:
        raise Problem(400, f"{e}: DELETE /api/v1/holds/{hid}?reason=...", parameter="reason") from None
    try:
        await svc.holds.release(hid, reason, who.actor)
    except HoldNotFound:
        raise not_found(f"hold {hid!r}") from None
    except HoldAlreadyReleased:
        raise Problem(409, f"hold {hid} is already released") from None
    return web.Response(status=204)


# ---------------------------------------------------------------------- OpenAPI, table

_DURATION = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$",
             "description": "a number and a unit: ms, s, m, h, d, w (e.g. 30d)"}
_SIZE = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTP]i?B|B)\s*$",
         "description": "a number and a unit: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB (e.g. 500GiB)"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time", "description": TIME["description"]}

SCHEMAS.update({
    "RetentionRule": {
        "type": "object", "additionalProperties": False,
        "description": "Limits of the default or one camera; an omitted key inherits (or means no limit)",
        "properties": {"max_age": _DURATION, "max_bytes": _SIZE, "min_age": _DURATION},
    },
    "RetentionRules": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "default": {"$ref": "#/components/schemas/RetentionRule"},
            "cameras": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/RetentionRule"}},
            "quota_bytes": _SIZE,
            "high_watermark": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "low_watermark": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        },
    },
    "RetentionPreviewRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {"rules": {"$ref": "#/components/schemas/RetentionRules"}},
        "description": "Omit rules to preview the rules in force",
    },
    "RetentionPreview": {"type": "object", "properties": {
        "at": TIME, "delete_count": {"type": "integer"}, "delete_bytes": {"type": "integer"},
        "held_bytes": {"type": "integer"}, "usage_before": {"type": "integer"}, "usage_after": {"type": "integer"},
        "cameras": {"type": "object"}, "rules": {"$ref": "#/components/schemas/RetentionRules"}}},
    "RetentionRun": {"type": "object", "properties": {
        "run": {"type": "integer"}, "deleted_segments": {"type": "integer"}, "deleted_bytes": {"type": "integer"},
        "cameras": {"type": "object"}, "failed": {"type": "array"}, "pending_left": {"type": "integer"}}},
    "HoldCreate": {
        "type": "object", "additionalProperties": False, "required": ["case_id", "cameras", "start", "reason"],
        "properties": {
            "case_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "cameras": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                                  "pattern": f"^{CAMERA_ID}$"}},
            "start": TIME, "end": _NULLABLE_TIME, "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "expires": _NULLABLE_TIME,
        },
    },
    "Hold": {"type": "object", "properties": {
        "id": {"type": "string"}, "case_id": {"type": "string"}, "cameras": {"type": "array"}, "start": TIME,
        "end": _NULLABLE_TIME, "reason": {"type": "string"}, "expires": _NULLABLE_TIME,
        "state": {"enum": ["active", "expired", "released"]}, "created": TIME, "created_by": {"type": "string"},
        "released": _NULLABLE_TIME, "released_by": {"type": ["string", "null"]},
        "release_reason": {"type": ["string", "null"]}, "legal_holds": {"type": "object"}}},
})
QUERY.setdefault("reason", {"schema": {"type": "string", "minLength": 1, "maxLength": 1000},
                            "description": "Why the hold is released (required)"})
QUERY.setdefault("state", {"schema": {"enum": list(_HOLD_STATES)}, "description": "Only holds in this state"})

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/retention", get_retention, "evidence",
          "Retention rules in force, effective rule per camera, sweep status", tag="retention"),
    Route("PUT", "/api/v1/retention", put_retention, "admin", "Replace the retention rules (audited)",
          body="RetentionRules", tag="retention"),
    Route("PUT", "/api/v1/retention/cameras/{id}", put_camera_retention, "admin",
          "Set one camera's retention override (audited)", body="RetentionRule", tag="retention"),
    Route("DELETE", "/api/v1/retention/cameras/{id}", delete_camera_retention, "admin",
          "Remove one camera's retention override (audited)", responses={204: ""}, tag="retention"),
    Route("POST", "/api/v1/retention/preview", preview_retention, "admin",
          "What a sweep would delete now under the given (or current) rules; deletes nothing",
          body="RetentionPreviewRequest", responses={200: "RetentionPreview"}, tag="retention"),
    Route("POST", "/api/v1/retention/run", run_retention, "admin", "Run a retention sweep now",
          responses={200: "RetentionRun"}, tag="retention"),
    Route("POST", "/api/v1/holds", place_hold, "evidence",
          "Place a hold: footage it covers is never deleted (S3 legal hold where object lock is on)",
          body="HoldCreate", responses={201: "Hold"}, tag="holds"),
    Route("GET", "/api/v1/holds", list_holds, "evidence", "Holds, newest last", query=("state",), tag="holds"),
    Route("DELETE", "/api/v1/holds/{id}", release_hold, "evidence",
          "Release a hold (reason required); legal holds no other hold needs are cleared",
          query=("reason",), responses={204: "", 409: "Problem"}, tag="holds"),
)
