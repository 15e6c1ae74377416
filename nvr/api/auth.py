"""Bearer tokens with ordered roles (viewer < evidence < admin), optionally limited to cameras.

A token is 32 random bytes (``nvr_`` + URL-safe base64); only its SHA-256 is
stored. A fast hash is enough because the token is random, not a password.
``auth_middleware`` checks the role each route declares and leaves the
token's ``Principal`` for the handler (``principal_of``). Failed
authentication (a malformed, unknown or revoked token; not a missing one) is
limited and audited per client address by ``nvr.api.guard``.

On routes that allow it (``Route.url_token``) a signed URL token in the query
(``token``, ``nvr.api.urltokens``) stands for the bearer token, and decides
when both are sent: the principal is the API token that signed it, looked up
on every request (so revoking that token stops its links), and the request
also carries the token's ``Grant`` (``url_grant``), which the handler holds
its camera and range to. An expired link is a 401 that does not count as a
failed attempt (its signature is good: nobody is guessing).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from nvr.api.deps import INDEX, URL_SIGNER
from nvr.api.guard import AUTH_GUARD
from nvr.api.problem import Problem
from nvr.api.sessions import COOKIE, SESSION, SESSION_POLICY, SessionEnded, check_csrf, session_of
from nvr.api.spec import URL_TOKEN, route_of
from nvr.api.urltokens import BadUrlToken, Grant, UrlSigner
from nvr.base.times import now_ms
from storage.index import Index
from storage.index.people import UserRow

ROLES = {"viewer": 1, "evidence": 2, "admin": 3}
USER_SIGNER = "user:"  # a URL token signed for a person names its signer so (token names can't hold ':')
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    cameras: frozenset[str] | None  # None: every camera
    kind: str = "token"  # "token" (a machine's API token) or "user" (a person logged in to the console)

    def has(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]

    def sees(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras

    @property
    def actor(self) -> tuple[str, str]:
        return f"{self.kind}:{self.name}", self.role


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(index: Index, *, name: str, role: str, cameras: list[str] | None) -> str:
    """Create a token, store its hash, return the token (shown once)."""
    if not TOKEN_NAME_RE.match(name):
        raise ValueError(f"token name {name!r}: 1-64 of letters, digits, '_', '.', '@', '-'")
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    token = "nvr_" + secrets.token_urlsafe(32)
    index.add_token(name=name, role=role, cameras=cameras, token_sha256=token_sha256(token))
    return token


class Unauthenticated(Problem):
    """A 401; ``reason`` names a failed attempt (malformed, unknown, revoked), None when no token was sent."""

    def __init__(self, detail: str, reason: str | None):
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="nvr"'})
        self.reason = reason


async def authenticate(request: web.Request, index: Index) -> Principal:
    """The principal of the request's bearer token; 401 when missing, unknown or revoked."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthenticated("send Authorization: Bearer <token> (create one with `nvr token create`)", None)
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'", "malformed")
    # Looked up by hash: the stored value never equals what the client sends, so timing leaks nothing usable.
    found = await asyncio.to_thread(index.token_by_hash, token_sha256(token.strip()))
    if found is None:
        raise Unauthenticated("unknown token", "unknown")
    name, role, cameras, revoked = found
    if revoked is not None:
        raise Unauthenticated(f"token {name!r} was revoked", "revoked")
    return Principal(name=name, role=role, cameras=frozenset(cameras) if cameras is not None else None)


def user_principal(user: UserRow) -> Principal:
    if user.disabled_ms is not None:
        raise Unauthenticated(f"user {user.name!r} is disabled", "revoked")
    return Principal(user.name, user.role, frozenset(user.cameras) if user.cameras is not None else None, "user")


async def authenticate_session(request: web.Request, index: Index) -> Principal | None:
    """The person whose session cookie the request carries (CSRF checked), None without a cookie."""
    try:
        row = await session_of(request, index, request.app[SESSION_POLICY])
    except SessionEnded as e:
        raise Unauthenticated(e.detail, e.reason) from None
    if row is None:
        return None
    user = await asyncio.to_thread(index.people.user, row.user)
    if user is None:
        raise Unauthenticated(f"user {row.user!r} no longer exists", "unknown")
    check_csrf(request, row)
    request[SESSION] = row
    return user_principal(user)


async def reauthenticate(request: web.Request) -> None:
    """Check again what authorized ``request`` (its link, bearer token or session): ``Unauthenticated`` if gone."""
    index = request.app[INDEX]
    link = request.query.get(URL_TOKEN) if url_grant(request) is not None else None
    if link is not None:
        await authenticate_url(link, index, request.app[URL_SIGNER])
    elif request.get(SESSION) is not None:
        try:
            await session_of(request, index, request.app[SESSION_POLICY])
        except SessionEnded as e:
            raise Unauthenticated(e.detail, e.reason) from None
    else:
        await authenticate(request, index)


async def authenticate_url(token: str, index: Index, signer: UrlSigner) -> tuple[Principal, Grant]:
    """The principal that signed a URL token, and its grant; 401 when bad, expired, or its signer is gone."""
    try:
        grant = signer.verify(token, now_ms())
    except BadUrlToken as e:
        raise Unauthenticated(e.detail, None if e.reason == "expired" else e.reason) from None
    if grant.signer.startswith(USER_SIGNER):  # a person's link: the same user (by creation time), not disabled
        user = await asyncio.to_thread(index.people.user, grant.signer.removeprefix(USER_SIGNER))
        if user is None or user.created_ms != grant.signer_created_ms:
            raise Unauthenticated(f"the user who made this link ({grant.signer}) no longer exists", "unknown")
        return user_principal(user), grant
    # By name and creation time: a token made later under a revoked one's name is another token.
    tokens = await asyncio.to_thread(index.tokens)
    found = next((t for t in tokens if t[0] == grant.signer and t[3] == grant.signer_created_ms), None)
    if found is None:
        raise Unauthenticated(f"the token {grant.signer!r} that signed this link no longer exists", "unknown")
    name, role, cameras, _, revoked = found
    if revoked is not None:
        raise Unauthenticated(f"token {name!r}, which signed this link, was revoked", "revoked")
    return Principal(name=name, role=role, cameras=frozenset(cameras) if cameras is not None else None), grant


async def token_created_ms(index: Index, name: str) -> int | None:
    """When the live token ``name`` was created (what a URL token names its signer by), None if there is none."""
    tokens = await asyncio.to_thread(index.tokens)
    return next((created for n, _, _, created, revoked in tokens if n == name and revoked is None), None)


async def new_url_token(request: web.Request, who: Principal, camera: str, start: int, end: int) -> tuple[str, Grant]:
    """A URL token for ``camera`` over ``[start, end)``, signed for ``who`` (a playback or live link)."""
    if who.kind == "user":
        user = await asyncio.to_thread(request.app[INDEX].people.user, who.name)
        created, name = (user.created_ms if user is not None else None), USER_SIGNER + who.name
    else:
        created, name = await token_created_ms(request.app[INDEX], who.name), who.name
    if created is None:  # revoked since this request was authorized
        raise Unauthenticated(f"{who.kind} {who.name!r} was revoked", "revoked")
    signer = request.app[URL_SIGNER]
    grant = signer.grant(signer=name, signer_created_ms=created, camera=camera, start_ms=start, end_ms=end,
                         now_ms=now_ms())
    return signer.sign(grant), grant


def require(principal: Principal, role: str) -> None:
    if not principal.has(role):
        raise Problem(403, f"this needs the {role} role; {principal.kind} {principal.name!r} has {principal.role}")


PRINCIPAL = web.RequestKey("nvr.principal", Principal)
URL_GRANT = web.RequestKey("nvr.url_grant", Grant)


def principal_of(request: web.Request) -> Principal:
    """Who sent the request (set by ``auth_middleware`` on every route that needs a token)."""
    return request[PRINCIPAL]


def url_grant(request: web.Request) -> Grant | None:
    """The grant of the URL token the request was authorized by, None when it sent a bearer token."""
    return request.get(URL_GRANT)


def refuse_scoped(who: Principal, what: str) -> None:
    """403 for a camera-scoped token: ``what`` concerns every camera."""
    if who.cameras is not None:
        raise Problem(403, f"a camera-scoped token can't {what}; use a token for every camera")


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """401 without a valid token, 429 after too many failed ones, 403 below the route's role; no role: pass."""
    route = route_of(request)
    if route is not None and route.role is not None:
        guard, address = request.app[AUTH_GUARD], request.remote or "unknown"
        wait = guard.retry_after(address)
        if wait is not None:
            raise Problem(429, f"too many failed authentications from {address}; retry in {wait} s",
                          headers={"Retry-After": str(wait)})
        link = request.query.get(URL_TOKEN) if route.url_token else None
        try:
            if link is not None:
                who, grant = await authenticate_url(link, request.app[INDEX], request.app[URL_SIGNER])
                request[URL_GRANT] = grant
            elif "Authorization" not in request.headers and COOKIE in request.cookies:
                who = await authenticate_session(request, request.app[INDEX])  # never None: the cookie is there
                assert who is not None
            else:
                who = await authenticate(request, request.app[INDEX])
        except Unauthenticated as e:
            if e.reason is not None:
                guard.failed(address, e.reason)
            raise
        require(who, route.role)
        request[PRINCIPAL] = who
    return await handler(request)
