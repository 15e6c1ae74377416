"""Routes of the ``tokens`` tag: the API's bearer tokens for machines, made and revoked by an admin.

The same tokens as ``nvr token create|revoke|list``: the index keeps only a
token's SHA-256; the token itself is in the one answer that creates it and
never again (not in a list, not in the audit log).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from nvr.api.auth import ROLES, create_token, principal_of, refuse_scoped
from nvr.api.deps import AUDIT, INDEX
from nvr.api.people import USER, camera_list, role_of
from nvr.api.shared import json_reply
from nvr.api.spec import BODY, IDS, Id, Route
from nvr.base.errors import Conflict, InvalidInput, NotFound
from nvr.base.times import ms_to_rfc3339

TOKEN = Id("token", USER.pattern, USER.hint, check=USER.check, max_length=USER.max_length)


def _token_json(name: str, role: str, cameras: list[str] | None, created: int, revoked: int | None) -> dict[str, Any]:
    return {"name": name, "role": role, "cameras": cameras, "created": ms_to_rfc3339(created),
            "revoked": ms_to_rfc3339(revoked) if revoked is not None else None}


async def list_tokens(request: web.Request) -> web.Response:
    refuse_scoped(principal_of(request), "list tokens")
    rows = await asyncio.to_thread(request.app[INDEX].tokens)
    return json_reply({"tokens": [_token_json(*r) for r in rows]})


async def create_token_route(request: web.Request) -> web.Response:
    who, body = principal_of(request), request[BODY]
    refuse_scoped(who, "create tokens")
    unknown = sorted(set(body) - {"name", "role", "cameras"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: name, role, cameras", field=unknown[0])
    name = TOKEN.parse("name", body.get("name") if isinstance(body.get("name"), str) else "")
    role, cameras = role_of(body.get("role")), camera_list(body.get("cameras"))
    index = request.app[INDEX]
    if await asyncio.to_thread(index.token_by_name, name) is not None:
        raise Conflict(f"a token named {name!r} exists (revoked names are not reused: the audit log names them)")
    token = await asyncio.to_thread(create_token, index, name=name, role=role, cameras=cameras)
    await request.app[AUDIT].record("token.create", name, {"role": role, "cameras": cameras}, actor=who.actor)
    row = next(r for r in await asyncio.to_thread(index.tokens) if r[0] == name)
    return json_reply(_token_json(*row) | {"token": token}, status=201)


async def revoke_token_route(request: web.Request) -> web.Response:
    who, name = principal_of(request), request[IDS]["name"]
    refuse_scoped(who, "revoke tokens")
    if not await asyncio.to_thread(request.app[INDEX].revoke_token, name):
        raise NotFound(f"no live token named {name!r}")
    await request.app[AUDIT].record("token.revoke", name, {}, actor=who.actor)
    return web.Response(status=204)


_TOKEN_FIELDS = {"role": {"enum": list(ROLES)},
                 "cameras": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1}}
SCHEMAS: dict[str, Any] = {
    "TokenCreate": {"type": "object", "additionalProperties": False, "required": ["name", "role"],
                    "properties": {"name": TOKEN.schema(), **_TOKEN_FIELDS}},
    "Token": {"type": "object", "properties": {
        "name": {"type": "string"}, "role": {"type": "string"}, "cameras": {"type": ["array", "null"]},
        "created": {"type": "string"}, "revoked": {"type": ["string", "null"]},
        "token": {"type": "string", "description": "only in the answer that creates it"}}},
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/tokens", list_tokens, "admin", "API tokens, live and revoked (never the tokens)",
          tag="tokens"),
    Route("POST", "/api/v1/tokens", create_token_route, "admin", "Create an API token; the answer shows it once",
          tag="tokens", body="TokenCreate", responses={201: "Token", 409: "Problem"}),
    Route("DELETE", "/api/v1/tokens/{name}", revoke_token_route, "admin", "Revoke a live API token",
          tag="tokens", ids={"name": TOKEN}, responses={204: ""}),
)
