"""The OpenAPI 3.1 document, generated from the route table and its specs so it can't drift from what is served.

Path ids, query parameters (required, default, schema) and request bodies
come from the same ``Route`` objects the validation middleware checks; each
routes module adds the schemas of its bodies and answers (``SCHEMAS``). The
problem answers every route can give are added from what the route is
(``_problems``): 400 and 404 always; with a token 401, 403, 429 (failed
authentication, ``nvr.api.guard``) and 503 (the index can't answer); with a
body 408, 413 and 415.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nvr import __version__
from nvr.api.spec import Param, Route

PROBLEM_SCHEMA = {
    "type": "object", "description": "RFC 9457 problem details",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "instance": {"type": "string"}},
    "required": ["title", "status", "detail"],
}
_SUCCESS = {"GET": 200, "POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}


def _query_param(p: Param) -> dict[str, Any]:
    schema = p.kind.schema()
    if p.default is not None:
        schema["default"] = p.default
    return {"name": p.name, "in": "query", "required": p.required, "schema": schema, "description": p.description}


def _response(kind: str) -> dict[str, Any]:
    if kind == "":
        return {"description": "No content"}
    if kind == "object":
        return {"description": "OK", "content": {"application/json": {}}}
    if kind.startswith("text/"):
        return {"description": "Text", "content": {kind: {"schema": {"type": "string"}}}}
    if "/" in kind:
        return {"description": "Media", "content": {kind: {"schema": {"type": "string", "format": "binary"}}}}
    media = "application/problem+json" if kind == "Problem" else "application/json"
    return {"description": kind, "content": {media: {"schema": {"$ref": f"#/components/schemas/{kind}"}}}}


def _operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": r.handler.__name__,
        "summary": r.summary,
        "tags": [r.tag],
        "parameters": [{"name": name, "in": "path", "required": True, "schema": kind.schema()}
                       for name, kind in r.ids.items()] + [_query_param(p) for p in r.query],
        "responses": {},
    }
    if r.role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs a token with role {r.role} or higher."
    if r.body:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{r.body}"}}}}
    # A route that names its own success answers replaces the method's default.
    declared_ok = any(200 <= code < 300 for code in r.responses)
    for status, kind in (({} if declared_ok else {_SUCCESS[r.method]: "object"}) | dict(r.responses)).items():
        op["responses"][str(status)] = _response(kind)
    for status in _problems(r):
        op["responses"].setdefault(str(status), _response("Problem"))
    return op


def _problems(r: Route) -> tuple[int, ...]:
    """The problem statuses ``r`` can answer whatever its handler does."""
    statuses = [400, 404]
    if r.role is not None:
        statuses += [401, 403, 429, 503]
    if r.body is not None:
        statuses += [408, 413, 415]
    return tuple(sorted(statuses))


def build_openapi(routes: Iterable[Route], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The document for ``routes`` (the API's route table) and the component ``schemas`` they name."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {"title": "nvr", "version": __version__,
                 "description": "Evidence-grade NVR: cameras, footage by time range, segments, audit."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA, **schemas},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
