"""RFC 9457 problem details: every API error is ``application/problem+json`` with a detail that says what to fix."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from nvr.base.errors import Kind, NvrError

log = logging.getLogger("nvr.api")

PROBLEM_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 410: "Gone", 413: "Content too large", 415: "Unsupported media type", 416: "Range not satisfiable",
    500: "Internal server error", 502: "Storage error", 503: "Service unavailable",
}


_STATUS = {
    Kind.INVALID: 400, Kind.NOT_FOUND: 404, Kind.CONFLICT: 409, Kind.FORBIDDEN: 403, Kind.LIMITED: 429,
    Kind.UNAVAILABLE: 503, Kind.REFUSED: 502, Kind.DATA_LOSS: 502, Kind.MISCONFIGURED: 500, Kind.INTERNAL: 500,
}


class Problem(Exception):
    """An HTTP error to answer as problem+json."""

    def __init__(self, status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, detail: str, *, title: str | None = None, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title or _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE, headers=headers)


def bad_request(detail: str, **extra: Any) -> Problem:
    return Problem(400, detail, **extra)


def not_found(what: str) -> Problem:
    return Problem(404, f"{what} does not exist (or this token may not see it)")


def storage_unavailable(e: Exception) -> Problem:
    """503 with a retry hint: S3 did not answer (TransientStorageError)."""
    return Problem(503, f"object storage unavailable: {e}", headers={"Retry-After": "10"})


@web.middleware
async def problem_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into problem+json; an unexpected one is logged and answered 500 without internals."""
    try:
        return await handler(request)
    except Problem as p:
        return problem_response(p.status, p.detail, title=p.title, instance=request.path, headers=p.headers, **p.extra)
    except NvrError as e:
        status = _STATUS.get(e.kind, 500)
        detail = f"{e} (or this token may not see it)" if e.kind is Kind.NOT_FOUND else str(e)
        return problem_response(status, detail, instance=request.path, **e.context)
    except web.HTTPRequestEntityTooLarge as e:
        limit = request.app._client_max_size  # what the app was built with
        return problem_response(413, f"request body too large: at most {limit} bytes are accepted ({e.text})",
                                instance=request.path)
    except web.HTTPMethodNotAllowed as e:
        allowed = ", ".join(sorted(e.allowed_methods))
        return problem_response(405, f"{request.method} is not allowed here; use {allowed}", instance=request.path,
                                headers={"Allow": allowed})
    except web.HTTPNotFound:
        return problem_response(404, f"no route {request.path}; see /api/v1/openapi.json", instance=request.path)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return problem_response(e.status, e.text or e.reason, instance=request.path)
    except (ConnectionResetError, TimeoutError) as e:  # the client went away
        log.info("%s %s: client disconnected (%s)", request.method, request.path, type(e).__name__)
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem_response(500, "the server failed to answer this request; the error is in its log",
                                instance=request.path)
