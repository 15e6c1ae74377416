"""Routes of the ``audit`` tag: the hash-chained audit log, filtered and paged."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.deps import INDEX
from nvr.api.shared import json_reply
from nvr.api.spec import CURSOR, END, LIMIT, QUERY, START, Param, Route, Text
from nvr.base.times import ms_to_rfc3339


async def audit_log(request: web.Request) -> web.Response:
    q = request[QUERY]
    limit = q["limit"]
    rows = await asyncio.to_thread(
        request.app[INDEX].audit_entries, actor=q["actor"], action=q["action"],
        start_ms=q["start"], end_ms=q["end"], after_id=q["cursor"], limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_reply({"entries": [{
        "id": e.id, "time": ms_to_rfc3339(e.ts_ms), "actor": e.actor, "role": e.role, "action": e.action,
        "target": e.target, "detail": e.detail, "prev": e.prev, "hash": e.hash,
    } for e in rows], "next_cursor": str(rows[-1].id) if more else None})


SCHEMAS: dict[str, Any] = {}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/audit", audit_log, "evidence", "The audit log, filtered and paged", tag="audit",
          query=(START, END, Param("actor", Text(1, 128), "Only this actor"),
                 Param("action", Text(1, 128), "Only this action"), LIMIT, CURSOR)),
)
