"""The application factory: the route table assembled from the routes modules, the middlewares, the services.

A request passes, outermost first: ``count_requests`` (metrics), the problem
mapping, ``auth_middleware`` (the route's role; failed tokens limited per
address by ``nvr.api.guard``), ``validate_middleware`` (the
route's path ids, query and body), then the handler, which reads the services
it uses from their application keys (``nvr.api.deps``).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from nvr.api import (
    audit,
    cameras,
    cluster,
    console,
    custody,
    footage,
    hls,
    holds,
    live,
    people,
    retention,
    service,
    tokens,
)
from nvr.api.auth import auth_middleware
from nvr.api.deps import METRICS, Services, install
from nvr.api.guard import AUTH_GUARD, AuthGuard, close_guard
from nvr.api.openapi import build_openapi
from nvr.api.problem import problem_middleware
from nvr.api.spec import ROUTE_TABLE, Route, validate_middleware

MAX_BODY = 64 * 1024
# A connection is closed once it has been idle this long, and so is one whose request line and headers have
# not all arrived this long after it opened (aiohttp's keep-alive timer starts when the connection opens and
# is not reset by a header trickling in). Above the 15 s an aiohttp client keeps an idle connection, so a client
# never reuses one the server is closing. aiohttp's default is an hour.
IDLE_SECONDS = 20.0
# What the server's ``web.AppRunner`` is given (``AppRunner(app, **SERVER_OPTIONS)``); a slow body is bounded
# by ``spec.BODY_SECONDS``.
SERVER_OPTIONS: dict[str, Any] = {
    "keepalive_timeout": IDLE_SECONDS, "max_line_size": 8190, "max_field_size": 8190, "max_headers": 64,
}
# One module per OpenAPI tag (retention and holds share nothing but the service).
MODULES = (service, console, people, tokens, cameras, footage, hls, live, audit, custody, retention, holds, cluster)
ROUTES: tuple[Route, ...] = tuple(r for m in MODULES for r in m.ROUTES)
SCHEMAS: dict[str, Any] = {name: schema for m in MODULES for name, schema in m.SCHEMAS.items()}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every route served."""
    return build_openapi(ROUTES, SCHEMAS)


@web.middleware
async def count_requests(request: web.Request, handler) -> web.StreamResponse:
    """Count every answer by method, route template and status (``nvr_http_requests_total``)."""
    started = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].http.observe_request(request.method, route, status, time.perf_counter() - started)


def _table() -> dict[tuple[str, str], Route]:
    table: dict[tuple[str, str], Route] = {}
    names: set[str] = set()
    for r in ROUTES:
        if r.key in table or r.handler.__name__ in names:  # the document's operationIds must be unique
            raise ValueError(f"route {r.method} {r.path} ({r.handler.__name__}) is declared twice")
        table[r.key] = r
        names.add(r.handler.__name__)
    return table


def build_app(services: Services) -> web.Application:
    """The API over ``services``: every route of ``ROUTES``, checked and documented from its spec."""
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[count_requests, problem_middleware, auth_middleware, validate_middleware])
    install(app, services)
    app[AUTH_GUARD] = AuthGuard(services.auth_limits, services.audit)
    app[people.LOGIN_FAILURES_BY_NAME] = {}
    app.on_cleanup.append(close_guard)
    app[ROUTE_TABLE] = _table()
    app[service.OPENAPI] = openapi_document()
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
        if r.method == "GET":  # HEAD wherever GET is: the same checks and headers, no body
            app.router.add_route("HEAD", r.path, r.handler)
    return app
