"""Routes of the ``people`` tag: console users, login and logout (sessions: ``nvr.api.sessions``).

People log in with a name and a password (hashed with Argon2id, ``argon2-cffi``);
roles and camera scopes are exactly those of API tokens, which stay for
machines. A failed login is audited (``login.failed``, with the client's
address) and limited twice: per address by the same guard as bad tokens
(``nvr.api.guard``), and per user name (``LOGIN_FAILURES`` in
``LOGIN_WINDOW_S``), so neither one address nor a spread of addresses can keep
guessing one person's password. Beyond either limit: 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nvr.api.auth import ROLES, TOKEN_NAME_RE, principal_of, refuse_scoped, user_principal
from nvr.api.deps import AUDIT, INDEX
from nvr.api.guard import AUTH_GUARD
from nvr.api.problem import Problem
from nvr.api.sessions import (
    SESSION,
    SESSION_POLICY,
    clear_cookie,
    new_session_id,
    session_hash,
    set_cookie,
)
from nvr.api.shared import client_of, json_reply
from nvr.api.spec import BODY, IDS, Id, Route
from nvr.base.errors import Conflict, InvalidInput, NotFound
from nvr.base.ids import is_camera_id
from nvr.base.times import ms_to_rfc3339, now_ms
from storage.index.people import UserRow

HASHER = PasswordHasher()  # Argon2id, the library's defaults (RFC 9106's second recommendation)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
LOGIN_FAILURES = 5  # failed logins of one user name ...
LOGIN_WINDOW_S = 300.0  # ... within this many seconds before its next attempts wait
# Failed logins by user name; made by build_app (a started application takes no new keys).
LOGIN_FAILURES_BY_NAME: web.AppKey[dict[str, collections.deque[float]]] = web.AppKey("nvr.login_failures")
USER = Id("user", r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", "1-64 letters, digits, '_', '.', '@' or '-'",
          check=lambda v: TOKEN_NAME_RE.match(v) is not None, max_length=64)


def hash_password(password: str) -> str:
    """The Argon2id hash of a new password (CPU-heavy: call it in a thread)."""
    check_password(password)
    return HASHER.hash(password)


def check_password(password: Any, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"{field}: {MIN_PASSWORD} to {MAX_PASSWORD} characters", field=field)
    return password


def _verify(stored: str | None, password: str) -> bool:
    try:
        # A name that does not exist is checked against a hash of its own, so it takes as long as one that does.
        return HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


_DUMMY = HASHER.hash("not a password of anyone's")


def user_json(u: UserRow) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "cameras": u.cameras, "disabled": u.disabled_ms is not None,
            "created": ms_to_rfc3339(u.created_ms), "updated": ms_to_rfc3339(u.updated_ms)}


def _failures(request: web.Request, name: str) -> collections.deque[float]:
    table = request.app[LOGIN_FAILURES_BY_NAME]
    if len(table) > 10_000:
        table.clear()
    found = table.setdefault(name, collections.deque(maxlen=LOGIN_FAILURES))
    while found and time.monotonic() - found[0] > LOGIN_WINDOW_S:
        found.popleft()
    return found


# ---------------------------------------------------------------------- login, logout, session


async def login(request: web.Request) -> web.Response:
    body, audit, address = request[BODY], request.app[AUDIT], client_of(request)
    unknown = sorted(set(body) - {"name", "password"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: name, password", field=unknown[0])
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise InvalidInput("name: the user's name is required", field="name")
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        raise InvalidInput("password is required", field="password")
    guard = request.app[AUTH_GUARD]
    wait = guard.retry_after(address)
    failures = _failures(request, name)
    if wait is None and len(failures) >= LOGIN_FAILURES:
        wait = max(1, int(LOGIN_WINDOW_S - (time.monotonic() - failures[0])))
    if wait is not None:
        await audit.system("login.refused", name, {"client": address, "retry_after": wait})
        raise Problem(429, f"too many failed logins; retry in {wait} s", headers={"Retry-After": str(wait)})
    index = request.app[INDEX]
    user = await asyncio.to_thread(index.people.user, name)
    ok = await asyncio.to_thread(_verify, user.password_hash if user is not None else None, password)
    if not ok or user is None or user.disabled_ms is not None:
        failures.append(time.monotonic())
        guard.failed(address, "unknown")
        why = "disabled" if ok and user is not None else "wrong name or password"
        await audit.system("login.failed", name, {"client": address, "reason": why})
        raise Problem(401, "wrong name or password, or the user is disabled")
    failures.clear()
    policy = request.app[SESSION_POLICY]
    sid, csrf = new_session_id(), new_session_id()
    row = await asyncio.to_thread(index.people.add_session, id_sha256=session_hash(sid), user=name, csrf=csrf,
                                  address=address, expires_ms=now_ms() + policy.max_ms)
    who = user_principal(user)
    await audit.record("login", name, {"client": address, "expires": ms_to_rfc3339(row.expires_ms)}, actor=who.actor)
    resp = json_reply({**user_json(user), "csrf": csrf, "expires": ms_to_rfc3339(row.expires_ms)})
    set_cookie(request, resp, sid, policy.max_ms // 1000)
    return resp


async def logout(request: web.Request) -> web.Response:
    row = request.get(SESSION)
    if row is None:  # a token, not a session: nothing to end (a token is revoked with `nvr token revoke`)
        return json_reply({"ended": False})
    await asyncio.to_thread(request.app[INDEX].people.end_session, row.id_sha256)
    await request.app[AUDIT].record("logout", row.user, {"client": client_of(request)},
                                    actor=principal_of(request).actor)
    resp = json_reply({"ended": True})
    clear_cookie(resp)
    return resp


async def whoami(request: web.Request) -> web.Response:
    who, row = principal_of(request), request.get(SESSION)
    out = {"name": who.name, "kind": who.kind, "role": who.role,
           "cameras": sorted(who.cameras) if who.cameras is not None else None}
    if row is not None:
        out |= {"csrf": row.csrf, "expires": ms_to_rfc3339(row.expires_ms)}
    return json_reply(out)


# ---------------------------------------------------------------------- users (admin)


def role_of(value: Any) -> str:
    """A role of the request body, checked (users and tokens)."""
    if value not in ROLES:
        raise InvalidInput(f"role: one of {', '.join(ROLES)}", field="role")
    return value


def camera_list(value: Any) -> list[str] | None:
    """A camera scope of the request body: sorted ids, or None for every camera."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and is_camera_id(c) for c in value):
        raise InvalidInput("cameras: a non-empty list of camera ids, or null for every camera", field="cameras")
    return sorted(set(value))


async def list_users(request: web.Request) -> web.Response:
    refuse_scoped(principal_of(request), "list users")
    users = await asyncio.to_thread(request.app[INDEX].people.users)
    return json_reply({"users": [user_json(u) for u in users]})


async def create_user(request: web.Request) -> web.Response:
    who, body = principal_of(request), request[BODY]
    refuse_scoped(who, "create users")
    unknown = sorted(set(body) - {"name", "role", "cameras", "password"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: name, role, cameras, password", field=unknown[0])
    name = USER.parse("name", body.get("name") if isinstance(body.get("name"), str) else "")
    role, cameras = role_of(body.get("role")), camera_list(body.get("cameras"))
    digest = await asyncio.to_thread(hash_password, check_password(body.get("password")))
    try:
        user = await asyncio.to_thread(request.app[INDEX].people.add_user, name=name, role=role, cameras=cameras,
                                       password_hash=digest)
    except Exception as e:
        if "exists" in str(e):
            raise Conflict(f"a user named {name!r} exists") from None
        raise
    await request.app[AUDIT].record("user.create", name, {"role": role, "cameras": cameras}, actor=who.actor)
    return json_reply(user_json(user), status=201)


async def update_user(request: web.Request) -> web.Response:
    who, body, name = principal_of(request), request[BODY], request[IDS]["name"]
    refuse_scoped(who, "change users")
    unknown = sorted(set(body) - {"role", "cameras", "password", "disabled"})
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field; accepted: role, cameras, password, disabled",
                           field=unknown[0])
    changes: dict[str, Any] = {}
    if "role" in body:
        changes["role"] = role_of(body["role"])
    if "cameras" in body:
        changes["cameras"] = camera_list(body["cameras"])
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise InvalidInput("disabled: true or false", field="disabled")
        changes["disabled"] = body["disabled"]
    if "password" in body:
        changes["password_hash"] = await asyncio.to_thread(hash_password, check_password(body["password"]))
    user = await asyncio.to_thread(request.app[INDEX].people.update_user, name, **changes)
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    shown = {k: ("(changed)" if k == "password_hash" else v) for k, v in changes.items()}
    await request.app[AUDIT].record("user.update", name, {"changed": shown}, actor=who.actor)
    return json_reply(user_json(user))


_LOGIN = {"type": "object", "additionalProperties": False, "required": ["name", "password"],
          "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64},
                         "password": {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD}}}
_USER_FIELDS = {"role": {"enum": list(ROLES)},
                "cameras": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1},
                "password": {"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD}}
SCHEMAS: dict[str, Any] = {
    "Login": _LOGIN,
    "UserCreate": {"type": "object", "additionalProperties": False, "required": ["name", "role", "password"],
                   "properties": {"name": USER.schema(), **_USER_FIELDS}},
    "UserPatch": {"type": "object", "additionalProperties": False,
                  "properties": {**_USER_FIELDS, "disabled": {"type": "boolean"}}},
    "User": {"type": "object", "properties": {
        "name": {"type": "string"}, "role": {"type": "string"}, "cameras": {"type": ["array", "null"]},
        "disabled": {"type": "boolean"}, "created": {"type": "string"}, "updated": {"type": "string"}}},
}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/login", login, None, "Log a person in: sets the session cookie, answers the CSRF token",
          tag="people", body="Login", responses={200: "User", 401: "Problem", 429: "Problem"}),
    Route("POST", "/api/v1/logout", logout, "viewer", "End this console session", tag="people",
          responses={200: ""}),
    Route("GET", "/api/v1/session", whoami, "viewer", "Who is asking (person or token), and the session's CSRF token",
          tag="people"),
    Route("GET", "/api/v1/users", list_users, "admin", "Console users", tag="people"),
    Route("POST", "/api/v1/users", create_user, "admin", "Add a console user (role and cameras as for tokens)",
          tag="people", body="UserCreate", responses={201: "User", 409: "Problem"}),
    Route("PATCH", "/api/v1/users/{name}", update_user, "admin",
          "Change a user's role, cameras or password, or disable it (ends its sessions)",
          tag="people", ids={"name": USER}, body="UserPatch", responses={200: "User"}),
)
