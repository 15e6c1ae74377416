"""``GET /api/v1/cluster``: the recording cluster from the shared index (admins only)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.deps import INDEX, STATUS
from nvr.api.shared import json_reply
from nvr.api.spec import Route
from nvr.base.errors import NotFound
from nvr.cluster.view import cluster_view


async def get_cluster(request: web.Request) -> web.Response:
    me = request.app[STATUS]().get("cluster")
    if me is None:
        raise NotFound("this server is a single node, not part of a cluster ([cluster] enabled = false)")
    view = await asyncio.to_thread(cluster_view, request.app[INDEX], ttl_ms=round(me["lease_ttl_seconds"] * 1000))
    return json_reply({"answered_by": me["node"], **view})


_NODE = {"type": "object", "properties": {
    "id": {"type": "string"}, "address": {"type": "string"}, "capacity": {"type": "integer"},
    "version": {"type": "string"}, "state": {"enum": ["up", "left"]}, "live": {"type": "boolean"},
    "last_heartbeat": {"type": "string", "format": "date-time"}, "heartbeat_seconds_ago": {"type": "number"},
    "cameras": {"type": "array", "items": {"type": "object", "properties": {
        "camera": {"type": "string"}, "epoch": {"type": "integer"}, "held_seconds": {"type": "number"},
        "renewed_seconds_ago": {"type": "number"}, "expires_in_seconds": {"type": "number"}}}}}}
SCHEMAS: dict[str, Any] = {
    "Cluster": {"type": "object", "properties": {
        "answered_by": {"type": "string"}, "now": {"type": "string", "format": "date-time"},
        "nodes": {"type": "array", "items": _NODE}, "unassigned": {"type": "array", "items": {"type": "string"}},
        "jobs": {"type": "array"}, "signing_keys": {"type": "array"}}},
}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/cluster", get_cluster, "admin", "Nodes of the cluster, their cameras and leases",
          tag="cluster", responses={200: "Cluster"}),
)
