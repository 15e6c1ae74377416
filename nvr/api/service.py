"""Routes of the ``service`` tag: liveness, metrics, this API's document, the server's status.

A camera-scoped token sees the status and the metrics of its own cameras only:
the status keeps the version, the node, its cameras, whether storage works and
the alarms naming its cameras (``SCOPED_STATUS``); the metrics keep the series
labelled with one of its cameras. Totals over every camera and the other
parts' state are about every camera, so they are left out, as ``nvr.api.scope``
leaves out records about no camera.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nvr.api.auth import principal_of
from nvr.api.deps import METRICS, STATUS
from nvr.api.metrics import only_cameras, render_metrics
from nvr.api.shared import json_reply
from nvr.api.spec import Route

OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("nvr.openapi")  # the document, built once by build_app


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus the alarms an operator must see (no footage, no credentials)."""
    status = request.app[STATUS]()
    return json_reply({"ok": not status["alarms"], "alarms": status["alarms"]})


async def metrics(request: web.Request) -> web.Response:
    who = principal_of(request)
    text = render_metrics(request.app[METRICS])
    if who.cameras is not None:
        text = only_cameras(text, who.sees)
    return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Prometheus-Format": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return json_reply(request.app[OPENAPI])


SCOPED_STATUS = ("version", "node", "cameras", "storage", "alarms")


async def status(request: web.Request) -> web.Response:
    who, data = principal_of(request), request.app[STATUS]()
    if who.cameras is not None:
        data = {k: v for k, v in data.items() if k in SCOPED_STATUS}
        data["cameras"] = {k: v for k, v in data.get("cameras", {}).items() if who.sees(k)}
        if isinstance(data.get("storage"), dict):
            data["storage"] = {k: v for k, v in data["storage"].items() if k in ("ok", "cause")}
        # An alarm about a camera starts "camera <id>:"; the others are about the server as a whole.
        data["alarms"] = [a for a in data.get("alarms", []) if (cam := _alarm_camera(a)) and who.sees(cam)]
    return json_reply(data)


def _alarm_camera(alarm: str) -> str | None:
    """The camera an alarm is about ("camera <id>: ..."), or None."""
    head, sep, _ = alarm.partition(":")
    return head.removeprefix("camera ") if sep and head.startswith("camera ") else None


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None, "Liveness and current alarms", tag="service"),
    Route("GET", "/metrics", metrics, "viewer", "Prometheus metrics (text exposition format 0.0.4)", tag="service",
          responses={200: "text/plain"}),
    Route("GET", "/api/v1/openapi.json", openapi, None, "This OpenAPI document", tag="service"),
    Route("GET", "/api/v1/status", status, "viewer", "Recorder, spool, storage and ingest status", tag="service"),
)
SCHEMAS: dict[str, Any] = {}
