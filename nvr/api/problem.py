"""RFC 9457 problem details, and the one place where a failure becomes an HTTP status.

Handlers raise domain errors (``nvr.base.errors.NvrError`` and its kinds) and
let them propagate; ``problem_middleware`` maps the kind to a status
(``STATUS``), turns the error's ``context`` (``field``, ``parameter``,
``code``...) into extension members, and adds ``Retry-After`` to every 503.
``Problem`` is only for what exists in HTTP alone: 401, 403 of a token, 405,
408, 410, 413, 415, 416, and the 429 of failed authentication. A library
error that reaches the API is first given its kind (``domain_error``): SQLite
saying the index is locked or the disk full is a 503, not a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from nvr.base.errors import Kind, NvrError

log = logging.getLogger("nvr.api")

PROBLEM_TYPE = "application/problem+json"
RETRY_AFTER = "10"  # seconds; what every 503 suggests

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 410: "Gone", 413: "Content too large", 415: "Unsupported media type", 416: "Range not satisfiable",
    429: "Too many requests", 500: "Internal server error", 502: "Storage error", 503: "Service unavailable",
}

STATUS = {
    Kind.INVALID: 400, Kind.NOT_FOUND: 404, Kind.CONFLICT: 409, Kind.FORBIDDEN: 403, Kind.LIMITED: 429,
    Kind.UNAVAILABLE: 503, Kind.REFUSED: 502, Kind.DATA_LOSS: 502, Kind.MISCONFIGURED: 500, Kind.INTERNAL: 500,
}
# How the error's own message is framed for the client, by kind ("{}" is the message).
_DETAIL = {
    # The same answer for "missing" and "not yours": a scoped token learns nothing about other cameras.
    Kind.NOT_FOUND: "{} (or this token may not see it)",
    Kind.UNAVAILABLE: "{} (retry later)",
    Kind.MISCONFIGURED: "the server can't answer this until its operator fixes it: {}",
}
_KIND_TITLES = {Kind.MISCONFIGURED: "Server misconfigured", Kind.DATA_LOSS: "Integrity check failed"}
# Members of the problem body itself: a context key of the same name does not replace them.
_RESERVED = {"type", "title", "status", "detail", "instance"}


class Problem(Exception):
    """An HTTP-only error to answer as problem+json (domain failures are ``NvrError``)."""

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
    """A problem+json answer; ``extra`` become extension members."""
    body: dict[str, Any] = {"type": "about:blank", "title": title or _TITLES.get(status, "Error"), "status": status,
                            "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if k not in _RESERVED})
    return web.Response(status=status, text=json.dumps(body, default=str), content_type=PROBLEM_TYPE,
                        headers=headers)


def domain_error(exc: BaseException) -> NvrError | None:
    """``exc`` as an error of the one hierarchy: itself, a library error given its kind, or None (a bug)."""
    if isinstance(exc, NvrError):
        return exc
    return None


def error_response(e: NvrError, instance: str | None = None) -> web.Response:
    """The answer to a domain error: status by kind, context as extension members, Retry-After on 503."""
    status = STATUS.get(e.kind, 500)
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return problem_response(status, _DETAIL.get(e.kind, "{}").format(e), title=_KIND_TITLES.get(e.kind),
                            instance=instance, headers=headers, **e.context)


@web.middleware
async def problem_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into problem+json; an unexpected one is logged and answered 500 without internals."""
    try:
        return await handler(request)
    except Problem as p:
        return problem_response(p.status, p.detail, title=p.title, instance=request.path, headers=p.headers, **p.extra)
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
    except Exception as exc:
        e = domain_error(exc)
        if e is None:
            log.exception("%s %s failed", request.method, request.path)
            return problem_response(500, "the server failed to answer this request; the error is in its log",
                                    instance=request.path)
        if e.kind in (Kind.MISCONFIGURED, Kind.INTERNAL):
            log.error("%s %s: %s", request.method, request.path, e, exc_info=e.kind is Kind.INTERNAL)
        elif STATUS.get(e.kind, 500) >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return error_response(e, request.path)
