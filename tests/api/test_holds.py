"""Holds over HTTP against a real server (``retention_api``: a recording camera, S3 with object lock)."""

from __future__ import annotations

import pytest

from nvr.base.times import ms_to_rfc3339, now_ms
from tests.api.conftest import DOCK, YARD, old_rows
from tests.api.support import problem_of, refused_without_change

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

DAY = "2026-11-29T10:00:00Z"
HOLD = {"case_id": "c-1", "cameras": [YARD], "start": DAY, "reason": "incident"}

BAD_INPUT = [
    ("POST", "/api/v1/holds", "evidence", {k: v for k, v in HOLD.items() if k != "case_id"}, 400, "case_id: is required"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": []}, 400, "cameras: must be a non-empty list"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": YARD}, 400, "cameras: must be a non-empty list"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": ["nope"]}, 404, "camera 'nope' does not exist"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "cameras": ["Bad Id"]}, 400, "not a camera id"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": "yesterday"}, 400, "start: 'yesterday' is not an RFC 3339"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": "2026-11-29T10:00:00"}, 400, "no UTC offset"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": DAY + "\n"}, 400, "start: "),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "start": "2026-W48-7T10:00:00Z"}, 400, "start: "),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "reason": "incident\u0000"}, 400, "reason: "),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "end": "2026-11-29T09:00:00Z"}, 400, "end: must be after start"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "end": DAY}, 400, "end: must be after start"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "expires": "2001-01-01T00:00:00Z"}, 400,
     "expires: must be in the future"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "reason": ""}, 400, "reason: must be a non-empty string"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "reason": "x" * 1001}, 400, "at most 1000 characters"),
    ("POST", "/api/v1/holds", "evidence", {**HOLD, "until": DAY}, 400, "until: unknown key"),
    ("POST", "/api/v1/holds", "viewer", HOLD, 403, "needs the evidence role"),
    ("POST", "/api/v1/holds", "scoped-evidence", HOLD, 404, f"camera '{YARD}' does not exist"),
    ("GET", "/api/v1/holds?state=weird", "evidence", None, 400, "state must be one of"),
    ("GET", "/api/v1/holds", "viewer", None, 403, "needs the evidence role"),
    ("DELETE", "/api/v1/holds/hold-999999?reason=x", "evidence", None, 404, "hold 'hold-999999' does not exist"),
    ("DELETE", "/api/v1/holds/not-a-hold?reason=x", "evidence", None, 404, "does not exist"),
    ("DELETE", "/api/v1/holds/hold-1?reason=x&force=1", "evidence", None, 400, "unknown query parameter 'force'"),
    ("DELETE", "/api/v1/holds/hold-1?reason=x", "viewer", None, 403, "needs the evidence role"),
]


@pytest.mark.parametrize(("method", "path", "token", "body", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(retention_api, method, path, token, body, status, fragment):
    await refused_without_change(retention_api, method, path, token, body, status, fragment)


async def test_hold_place_list_release(retention_api):
    api, index = retention_api, retention_api.srv.backend.index
    rows = old_rows(api)
    body = {"case_id": "2026-0042", "cameras": [YARD, DOCK], "start": ms_to_rfc3339(rows[0].start_ms),
            "end": ms_to_rfc3339(rows[1].end_ms), "reason": "assault at the gate",
            "expires": ms_to_rfc3339(now_ms() + 86_400_000)}
    hold = await api.json("POST", "/api/v1/holds", "evidence", status=201, json=body)
    assert hold["state"] == "active" and hold["cameras"] == sorted([YARD, DOCK])
    assert hold["legal_holds"]["enabled"] and hold["legal_holds"]["set"] == 2
    listed = await api.json("GET", "/api/v1/holds?state=active", "evidence")
    assert hold["id"] in [h["id"] for h in listed["holds"]]
    scoped = await api.json("GET", "/api/v1/holds", "scoped-evidence")  # sees it through DOCK, only DOCK listed
    assert [h["cameras"] for h in scoped["holds"] if h["id"] == hold["id"]] == [[DOCK]]
    forbidden = await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=mine", "scoped-evidence")
    assert forbidden.status == 403  # it also covers YARD, outside that token's scope

    no_reason = await api.request("DELETE", f"/api/v1/holds/{hold['id']}", "evidence")
    assert no_reason.status == 400 and "reason" in (await no_reason.json())["detail"]
    assert (await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=case%20closed", "evidence")).status == 204
    again = await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason=again", "evidence")
    assert again.status == 409
    released = await api.json("GET", "/api/v1/holds?state=released", "evidence")
    [h] = [h for h in released["holds"] if h["id"] == hold["id"]]
    assert (h["released_by"], h["release_reason"]) == ("token:evidence", "case closed")
    assert not api.srv.backend.store.stat(rows[0].object_key, rows[0].version_id).legal_hold
    acts = [(e.action, e.actor) for e in index.audit_entries(target=hold["id"])]
    assert acts == [("hold.place", "token:evidence"), ("hold.release", "token:evidence")]


async def test_a_scoped_token_sees_a_hold_over_other_cameras_cut_and_without_its_case(retention_api):
    api = retention_api
    rows = old_rows(api)
    rng = {"start": ms_to_rfc3339(rows[0].start_ms), "end": ms_to_rfc3339(rows[1].end_ms)}
    both = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-yd-12", "cameras": [YARD, DOCK], **rng, "reason": "reason-yd-12"})
    yard = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-y-12", "cameras": [YARD], **rng, "reason": "reason-y-12"})
    try:
        listed = await api.json("GET", "/api/v1/holds", "scoped-evidence")
        text = str(listed)
        assert YARD not in text and yard["id"] not in text  # a hold on none of its cameras: not there
        assert not [s for s in ("case-yd-12", "reason-yd-12", "case-y-12", "reason-y-12") if s in text]
        [mine] = [h for h in listed["holds"] if h["id"] == both["id"]]
        assert mine["cameras"] == [DOCK] and mine["redacted"] is True
        assert (mine["case_id"], mine["reason"], mine["release_reason"]) == (None, None, None)
        assert (mine["start"], mine["end"], mine["state"]) == (rng["start"], rng["end"], "active")
        gone = await api.request("DELETE", f"/api/v1/holds/{yard['id']}?reason=mine", "scoped-evidence")
        await problem_of(gone, 404, f"hold {yard['id']!r} does not exist")
        full = [h for h in (await api.json("GET", "/api/v1/holds", "evidence"))["holds"] if h["id"] == both["id"]]
        assert full[0]["reason"] == "reason-yd-12" and full[0]["cameras"] == sorted([YARD, DOCK])
        assert "redacted" not in full[0]
    finally:
        for h in (both, yard):
            await api.request("DELETE", f"/api/v1/holds/{h['id']}?reason=closed-12", "evidence")
    released = await api.json("GET", "/api/v1/holds?state=released", "scoped-evidence")
    [mine] = [h for h in released["holds"] if h["id"] == both["id"]]
    assert mine["release_reason"] is None and mine["released_by"] == "token:evidence"
