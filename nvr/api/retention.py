"""Routes of the ``retention`` tag: the rules in force, one camera's override, a preview, a sweep now.

Reading the rules needs ``evidence``; changing them, previewing and running a
sweep need ``admin``. A camera-scoped token can't change the default rules or
the quota (403), gets 404 for another camera's override, and sees only its
cameras in every answer: the sweep's state without its totals over every camera
(``SCOPED_SWEEP``), a preview's usage summed over its cameras only.

A rule set is validated as a whole by the retention service, whose errors name
the field (``default.max_age``, ``cameras.gate.min_age``...): units are
explicit (``"30d"``, ``"500GiB"``), ``max_age`` 0 or below ``min_age`` is
refused, no ``min_age`` may be under the config's ``retention.min_age``.
Unknown cameras are 404, like everywhere in the API.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nvr.api.auth import Principal, principal_of, refuse_scoped
from nvr.api.deps import AUDIT, CAMERAS, RETENTION
from nvr.api.shared import json_reply, visible_camera, visible_cameras
from nvr.api.spec import BODY, CAMERA, IDS, TIME_SCHEMA, Route
from nvr.base.errors import InvalidInput
from nvr.base.times import ms_to_rfc3339
from nvr.base.units import format_duration
from nvr.config.retention import ResolvedRule, RetentionRuleError, Rule, RuleSet, rules_to_dict
from retention.sweep import preview_json


def _rule_json(r: ResolvedRule | Rule) -> dict[str, str]:
    return rules_to_dict(RuleSet(default=Rule(r.max_age, r.max_bytes, r.min_age)))["default"]


async def _rules_view(request: web.Request) -> dict[str, Any]:
    svc, who = request.app[RETENTION], principal_of(request)
    st = svc.stored
    data = rules_to_dict(st.rules)
    data["cameras"] = {c: r for c, r in data["cameras"].items() if who.sees(c)}
    cams = {c.id for c in request.app[CAMERAS].all()} | set(st.rules.cameras)
    return {
        "rules": data, "version": st.version, "source": st.source, "changed": ms_to_rfc3339(st.changed_ms),
        "changed_by": st.actor, "min_age_floor": format_duration(svc.settings.min_age_floor),
        "effective": {c: _rule_json(st.rules.for_camera(c)) for c in sorted(cams) if who.sees(c)},
        "sweep": _sweep_view(svc.status(), who),
    }


SCOPED_SWEEP = ("rules_version", "rules_source", "sweep_interval", "running", "next_run", "object_lock",
                "min_age_floor")


def _sweep_view(status: dict[str, Any], who: Principal) -> dict[str, Any]:
    """The sweep's status; for a camera-scoped token without the counts over every camera."""
    return status if who.cameras is None else {k: v for k, v in status.items() if k in SCOPED_SWEEP}


async def get_retention(request: web.Request) -> web.Response:
    return json_reply(await _rules_view(request))


async def put_retention(request: web.Request) -> web.Response:
    refuse_scoped(principal_of(request), "change the retention rules of every camera")
    svc = request.app[RETENTION]
    rules = svc.parse_rules(request[BODY])
    await visible_cameras(request, sorted(rules.cameras), name="cameras")
    await svc.set_rules(rules, principal_of(request).actor)
    return json_reply(await _rules_view(request))


async def put_camera_retention(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    st = await request.app[RETENTION].set_camera_rule(cid, request[BODY], principal_of(request).actor)
    return json_reply({"camera": cid, "rule": rules_to_dict(st.rules)["cameras"][cid],
                       "effective": _rule_json(st.rules.for_camera(cid)), "version": st.version})


async def delete_camera_retention(request: web.Request) -> web.Response:
    cid = await visible_camera(request, request[IDS]["id"], footage=True)
    await request.app[RETENTION].delete_camera_rule(cid, principal_of(request).actor)
    return web.Response(status=204)


async def preview_retention(request: web.Request) -> web.Response:
    body = request[BODY]
    unknown = sorted(k for k in body if k != "rules")
    if unknown:
        raise InvalidInput(f"unknown key {unknown[0]!r}; the body is {{\"rules\": {{...}}}} (omit rules "
                           "to preview the rules in force)", field=unknown[0])
    svc = request.app[RETENTION]
    rules = None
    if "rules" in body:
        try:
            rules = svc.parse_rules(body["rules"])
        except RetentionRuleError as e:  # the rules sit under "rules" in this body: say so in the field
            raise InvalidInput(f"rules.{e}", field=f"rules.{e.field}") from None
        await visible_cameras(request, sorted(rules.cameras), name="cameras")
    pv = await svc.preview(rules)
    who = principal_of(request)
    out = preview_json(pv, who.sees)
    if who.cameras is not None:  # the plan's totals are over every camera: sum the token's cameras instead
        for key in ("usage_before", "usage_after"):
            out[key] = sum(c[key] for c in out["cameras"].values())
        out["pending_bytes"], out["quota_unmet"] = None, None
    out["rules"] = rules_to_dict(pv.rules)
    out["rules"]["cameras"] = {c: r for c, r in out["rules"]["cameras"].items() if who.sees(c)}
    return json_reply(out)


async def run_retention(request: web.Request) -> web.Response:
    who = principal_of(request)
    refuse_scoped(who, "run the sweep of every camera")
    await request.app[AUDIT].record("retention.run", "retention", {"trigger": "api"}, actor=who.actor)
    report = await request.app[RETENTION].run_now("api")
    return json_reply(report.as_dict())


# ---------------------------------------------------------------------- schemas, table

_DURATION = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$",
             "description": "a number and a unit: ms, s, m, h, d, w (e.g. 30d)"}
_SIZE = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTP]i?B|B)\s*$",
         "description": "a number and a unit: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB (e.g. 500GiB)"}

SCHEMAS: dict[str, Any] = {
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
        "at": TIME_SCHEMA, "delete_count": {"type": "integer"}, "delete_bytes": {"type": "integer"},
        "held_bytes": {"type": "integer"}, "usage_before": {"type": "integer"}, "usage_after": {"type": "integer"},
        "cameras": {"type": "object"}, "rules": {"$ref": "#/components/schemas/RetentionRules"}}},
    "RetentionRun": {"type": "object", "properties": {
        "run": {"type": "integer"}, "deleted_segments": {"type": "integer"}, "deleted_bytes": {"type": "integer"},
        "cameras": {"type": "object"}, "failed": {"type": "array"}, "pending_left": {"type": "integer"}}},
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/retention", get_retention, "evidence",
          "Retention rules in force, effective rule per camera, sweep status", tag="retention"),
    Route("PUT", "/api/v1/retention", put_retention, "admin", "Replace the retention rules (audited)",
          tag="retention", body="RetentionRules"),
    Route("PUT", "/api/v1/retention/cameras/{id}", put_camera_retention, "admin",
          "Set one camera's retention override (audited)", tag="retention", ids={"id": CAMERA},
          body="RetentionRule"),
    Route("DELETE", "/api/v1/retention/cameras/{id}", delete_camera_retention, "admin",
          "Remove one camera's retention override (audited)", tag="retention", ids={"id": CAMERA},
          responses={204: ""}),
    Route("POST", "/api/v1/retention/preview", preview_retention, "admin",
          "What a sweep would delete now under the given (or current) rules; deletes nothing", tag="retention",
          body="RetentionPreviewRequest", responses={200: "RetentionPreview"}),
    Route("POST", "/api/v1/retention/run", run_retention, "admin", "Run a retention sweep now", tag="retention",
          responses={200: "RetentionRun"}),
)
