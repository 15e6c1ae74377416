"""Console sessions: a person's login as an HttpOnly cookie, checked on every request, with CSRF tokens.

A session id is 32 random bytes in the ``nvr_session`` cookie (HttpOnly,
SameSite=Strict, Secure when the request came over TLS); the index keeps only
its SHA-256. It ends at logout, after ``server.session_idle`` without a
request, at ``server.session_max`` after login, or when the user's password,
role, cameras or state change. Every state-changing request made with the
cookie carries the session's CSRF token in ``X-CSRF-Token``: SameSite already
keeps other sites' forms out, the header keeps out what SameSite doesn't
(a same-site sibling application, an old browser).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from nvr.api.problem import Problem
from nvr.base.times import now_ms
from storage.index import Index
from storage.index.people import SessionRow

COOKIE = "nvr_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOUCH_EVERY_MS = 60_000  # a session's last-seen time is written at most this often


@dataclass(frozen=True)
class SessionPolicy:
    idle_ms: int = 30 * 60_000
    max_ms: int = 12 * 3_600_000


SESSION_POLICY = web.AppKey("nvr.session_policy", SessionPolicy)
SESSION = web.RequestKey("nvr.session", SessionRow)


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class SessionEnded(Exception):
    """The cookie names no live session (``nvr.api.auth`` answers it 401); ``reason`` as for a bad token."""

    def __init__(self, detail: str, reason: str | None):
        super().__init__(detail)
        self.detail, self.reason = detail, reason


async def session_of(request: web.Request, index: Index, policy: SessionPolicy) -> SessionRow | None:
    """The live session the request's cookie names, None without a cookie; ``SessionEnded`` for one that ended."""
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    row = await asyncio.to_thread(index.people.session, session_hash(sid))
    now = now_ms()
    if row is None:
        raise SessionEnded("this session is unknown: log in again", "unknown")
    if row.revoked_ms is not None:
        raise SessionEnded("this session ended (logged out, or the user was changed): log in again", "revoked")
    if now >= row.expires_ms or now - row.seen_ms >= policy.idle_ms:
        raise SessionEnded("this session expired: log in again", None)
    if now - row.seen_ms >= TOUCH_EVERY_MS:
        await asyncio.to_thread(index.people.touch_session, row.id_sha256, now)
    return row


def check_csrf(request: web.Request, row: SessionRow) -> None:
    """403 for a state-changing request whose CSRF header is not the session's."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), row.csrf.encode()):
        raise Problem(403, f"a request that changes something needs the session's {CSRF_HEADER} header "
                           "(GET /api/v1/session tells it)")


def set_cookie(request: web.Request, resp: web.StreamResponse, session_id: str, max_age_s: int) -> None:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    resp.set_cookie(COOKIE, session_id, max_age=max_age_s, path="/", httponly=True, samesite="Strict",
                    secure=secure)


def clear_cookie(resp: web.StreamResponse) -> None:
    resp.del_cookie(COOKIE, path="/")
