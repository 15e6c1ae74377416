"""People over the API: login and its limits, sessions and their ends, CSRF, users managed by an admin."""

from __future__ import annotations

import aiohttp
import pytest

from nvr.api.people import LOGIN_FAILURES
from nvr.api.sessions import COOKIE, CSRF_HEADER
from nvr.base.times import now_ms
from tests.api.support import problem_of
from tests.console.conftest import CLIP, PASSWORD, TC
from tests.support.rawsql import tampering

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def _session(console, name: str, password: str = PASSWORD) -> tuple[aiohttp.ClientSession, dict]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies of 127.0.0.1
    resp = await http.post(f"{console.base}/api/v1/login", json={"name": name, "password": password})
    me = await resp.json()
    assert resp.status == 200, me
    return http, me


async def test_the_session_cookie_is_httponly_strict_and_stands_for_the_person(console):
    resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "alice", "password": PASSWORD})
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    me = await resp.json()
    assert me["name"] == "alice" and me["role"] == "viewer" and len(me["csrf"]) >= 40
    assert "password" not in str(me)
    http, me = await _session(console, "alice")
    try:
        who = await (await http.get(f"{console.base}/api/v1/session")).json()
        assert who["kind"] == "user" and who["csrf"] == me["csrf"]
        # A person's link plays like a token's: signed for the user, scoped the same.
        resp = await http.post(f"{console.base}/api/v1/cameras/{TC}/live-links", json={"seconds": 30},
                               headers={CSRF_HEADER: me["csrf"]})
        link = await resp.json()
        assert resp.status == 201, link
        async with aiohttp.ClientSession() as anon:
            r = await anon.head(f"{console.base}{link['mp4']}")
            assert r.status == 200
        # Without the CSRF header a change is refused, with a reason.
        resp = await http.post(f"{console.base}/api/v1/cameras/{TC}/live-links", json={"seconds": 30})
        await problem_of(resp, 403, CSRF_HEADER)
    finally:
        await http.close()


async def test_failed_logins_are_audited_and_limited_per_user(console):
    index = console.srv.backend.index
    for _ in range(LOGIN_FAILURES):
        resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "guesser", "password": "nope"})
        await problem_of(resp, 401, "wrong name or password")
    resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "guesser", "password": PASSWORD})
    await problem_of(resp, 429, "too many failed logins")
    assert int(resp.headers["Retry-After"]) > 0
    assert len(index.audit_entries(action="login.failed", target="guesser")) == LOGIN_FAILURES
    assert index.audit_entries(action="login.refused", target="guesser")
    # An unknown name is answered exactly as a wrong password (nothing tells which names exist).
    resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "nobody", "password": "nope"})
    await problem_of(resp, 401, "wrong name or password")


async def test_a_session_ends_when_idle_when_logged_out_and_when_the_user_changes(console):
    index = console.srv.backend.index
    http, me = await _session(console, "alice")
    try:
        with tampering(index) as db:  # nothing for 31 minutes
            db.execute("UPDATE sessions SET seen_ms = ? WHERE user_name = 'alice'", (now_ms() - 31 * 60_000,))
        await problem_of(await http.get(f"{console.base}/api/v1/session"), 401, "expired")
    finally:
        await http.close()
    http, me = await _session(console, "alice")
    admin = {"Authorization": f"Bearer {console.tokens['admin']}"}
    try:
        resp = await console.http.patch(f"{console.base}/api/v1/users/alice", json={"password": PASSWORD + "!"},
                                        headers=admin)
        assert resp.status == 200, await resp.text()
        await problem_of(await http.get(f"{console.base}/api/v1/session"), 401, "ended")
    finally:
        await http.close()
        await console.http.patch(f"{console.base}/api/v1/users/alice", json={"password": PASSWORD}, headers=admin)


async def test_an_admin_manages_users_and_a_disabled_one_cannot_log_in(console):
    admin = {"Authorization": f"Bearer {console.tokens['admin']}"}
    base = f"{console.base}/api/v1/users"
    resp = await console.http.post(base, json={"name": "carol", "role": "evidence", "cameras": [CLIP],
                                               "password": "a long enough one"}, headers=admin)
    made = await resp.json()
    assert resp.status == 201 and made["cameras"] == [CLIP] and "password" not in str(made), made
    await problem_of(await console.http.post(base, json={"name": "carol", "role": "viewer", "password": "x" * 12},
                                             headers=admin), 409, "exists")
    await problem_of(await console.http.post(base, json={"name": "dan", "role": "viewer", "password": "short"},
                                             headers=admin), 400, "password")
    await problem_of(await console.http.post(base, json={"name": "dan", "role": "root", "password": "x" * 12},
                                             headers=admin), 400, "role")
    listed = await (await console.http.get(base, headers=admin)).json()
    assert {"alice", "bob", "carol"} <= {u["name"] for u in listed["users"]}
    resp = await console.http.patch(f"{base}/carol", json={"disabled": True}, headers=admin)
    assert (await resp.json())["disabled"] is True
    resp = await console.http.post(f"{console.base}/api/v1/login", json={"name": "carol", "password": "a long enough one"})
    await problem_of(resp, 401)
    # A viewer manages nobody; the audit names who changed whom.
    http, me = await _session(console, "bob")
    try:
        resp = await http.get(base)
        await problem_of(resp, 403, "admin")
    finally:
        await http.close()
    entries = console.srv.backend.index.audit_entries(action="user.update", target="carol")
    assert entries[-1].actor == "token:admin" and entries[-1].detail["changed"] == {"disabled": True}
