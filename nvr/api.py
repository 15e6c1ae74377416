"""The HTTP API (aiohttp). This first cut serves health and recording status; footage routes follow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import NvrServer

SERVER_KEY = web.AppKey("nvr", object)


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus the alarms an operator must see (no auth, no footage, no credentials)."""
    srv: NvrServer = request.app[SERVER_KEY]  # type: ignore[assignment]
    status = srv.status()
    return web.json_response({"ok": not status["alarms"], "alarms": status["alarms"]})


async def status(request: web.Request) -> web.Response:
    srv: NvrServer = request.app[SERVER_KEY]  # type: ignore[assignment]
    return web.json_response(srv.status())


def build_app(srv: NvrServer) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SERVER_KEY] = srv
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/status", status)
    return app
