"""Routes of the ``service`` tag: liveness, metrics, this API's document, the server's status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nvr.api.auth import principal_of
from nvr.api.deps import METRICS, STATUS
from nvr.api.metrics import render_metrics
from nvr.api.shared import json_reply
from nvr.api.spec import Route

OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("nvr.openapi")  # the document, built once by build_app


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus the alarms an operator must see (no footage, no credentials)."""
    status = request.app[STATUS]()
    return json_reply({"ok": not status["alarms"], "alarms": status["alarms"]})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(request.app[METRICS]), content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return json_reply(request.app[OPENAPI])


async def status(request: web.Request) -> web.Response:
    who, data = principal_of(request), request.app[STATUS]()
    data["cameras"] = {k: v for k, v in data["cameras"].items() if who.sees(k)}
    return json_reply(data)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, None, "Liveness and current alarms", tag="service"),
    Route("GET", "/metrics", metrics, "viewer", "Prometheus metrics", tag="service"),
    Route("GET", "/api/v1/openapi.json", openapi, None, "This OpenAPI document", tag="service"),
    Route("GET", "/api/v1/status", status, "viewer", "Recorder, spool, storage and ingest status", tag="service"),
)
SCHEMAS: dict[str, Any] = {}
