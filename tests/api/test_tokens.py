"""API tokens over the API: made by an admin, shown once, listed without the token, revoked for good."""

from __future__ import annotations

import pytest

from tests.api.conftest import A
from tests.api.support import problem_of

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def test_an_admin_makes_a_token_that_works_until_revoked(api):
    made = await api.json("POST", "/api/v1/tokens", json={"name": "door-bot", "role": "viewer", "cameras": [A]},
                          status=201)
    token = made.pop("token")
    assert token.startswith("nvr_") and made["role"] == "viewer" and made["cameras"] == [A] and made["revoked"] is None
    api.tokens["door-bot"] = token
    cams = await api.json("GET", "/api/v1/cameras", token="door-bot")
    assert [c["id"] for c in cams["cameras"]] == [A]
    listed = await api.json("GET", "/api/v1/tokens")
    row = next(t for t in listed["tokens"] if t["name"] == "door-bot")
    assert row == made and token not in str(listed)
    audit = api.srv.backend.index.audit_entries(action="token.create", target="door-bot")
    assert audit and audit[-1].actor == "token:admin" and token not in str(audit[-1].detail)
    # A name is never reused, even once revoked: the audit log names tokens by it.
    await problem_of(await api.request("POST", "/api/v1/tokens", json={"name": "door-bot", "role": "admin"}), 409)
    resp = await api.request("DELETE", "/api/v1/tokens/door-bot")
    assert resp.status == 204
    assert (await api.get("/api/v1/cameras", token="door-bot")).status == 401
    await problem_of(await api.request("DELETE", "/api/v1/tokens/door-bot"), 404, "no live token")
    assert api.srv.backend.index.audit_entries(action="token.revoke", target="door-bot")


@pytest.mark.parametrize(("token", "status"), [("evidence", 403), ("scoped-admin", 403), (None, 401)])
async def test_only_an_admin_for_every_camera_manages_tokens(api, token, status):
    for method, path in (("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/viewer")):
        body = {"json": {"name": "x-bot", "role": "admin"}} if method == "POST" else {}
        await problem_of(await api.request(method, path, token=token, **body), status)
    assert api.srv.backend.index.token_by_name("x-bot") is None


@pytest.mark.parametrize(("body", "field"), [({"name": "a b", "role": "viewer"}, "name"),
                                             ({"name": "ok", "role": "root"}, "role"),
                                             ({"name": "ok", "role": "viewer", "cameras": []}, "cameras"),
                                             ({"name": "ok", "role": "viewer", "token": "x"}, "token")])
async def test_a_bad_token_request_names_its_field(api, body, field):
    problem = await problem_of(await api.request("POST", "/api/v1/tokens", json=body), 400)
    assert field in (problem.get("parameter"), problem.get("field")) or field in problem["detail"], problem
