"""The audit log over HTTP: chained, filtered, paged (a real server)."""

from __future__ import annotations

import json

import pytest

from nvr.api import audit
from nvr.base.times import ms_to_rfc3339
from tests.api.conftest import A, B
from tests.api.support import problem_of

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def viewer_reads(api, n: int) -> None:
    """``n`` audited requests by the viewer token (segment content reads)."""
    row = api.srv.backend.index.segments(A)[0]
    for _ in range(n):
        assert (await api.get(f"/api/v1/segments/{row.id}/content", "viewer")).status == 200


async def test_audit_log_is_chained_and_filterable(api):
    await viewer_reads(api, 1)
    resp = await api.get("/api/v1/audit?actor=token:viewer&limit=1000", "evidence")
    entries = (await resp.json())["entries"]
    assert entries and all(e["actor"] == "token:viewer" for e in entries)
    about = await api.json("GET", f"/api/v1/audit?target={entries[-1]['target']}&limit=1000", "evidence")
    assert about["entries"] and all(e["target"] == entries[-1]["target"] for e in about["entries"])
    assert {e["id"] for e in about["entries"]} >= {entries[-1]["id"]}
    everything = api.srv.backend.index.audit_entries()
    for prev, cur in zip(everything, everything[1:], strict=False):
        assert cur.prev == prev.hash


async def test_audit_pages_with_the_cursor_of_the_previous_page(api):
    await viewer_reads(api, 3)
    first = await api.json("GET", "/api/v1/audit?limit=2", "evidence")
    assert len(first["entries"]) == 2 and first["next_cursor"] == str(first["entries"][-1]["id"])
    second = await api.json("GET", f"/api/v1/audit?limit=2&cursor={first['next_cursor']}", "evidence")
    assert second["entries"][0]["id"] > first["entries"][-1]["id"]


BAD_INPUT = [
    ("/api/v1/audit?limit=5000", 400, "between 1 and 1000"),
    ("/api/v1/audit?actor=", 400, "1-128"),
    ("/api/v1/audit?cursor=-1", 400, "next_cursor"),
]


@pytest.mark.parametrize(("path", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_precise_problem(api, path, status, fragment):
    await problem_of(await api.get(path, "admin"), status, fragment)


# ---------------------------------------------------------------------- camera scope (issue 12)

SECRETS = ("case-ab-12", "reason-ab-12", "case-b-12", "reason-b-12", "closed-ab-12", "case-exp-12", "reason-exp-12")


async def pages(api, token: str, limit: int) -> list[dict]:
    """Every entry ``token`` sees, page by page; each page within ``limit``, the cursor followed to its end."""
    entries, cursor = [], None
    for _ in range(10_000):
        page = await api.json("GET", f"/api/v1/audit?limit={limit}" + (f"&cursor={cursor}" if cursor else ""), token)
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("the cursor never ended")


async def entries_about_a_b_both_and_none(api) -> tuple[dict, dict, dict]:
    """Content reads of A and B, a hold over A and B (placed, released), one over B, an export over A and B,
    and an entry about no camera; returns the two holds and the export."""
    srv = api.srv
    seg_a, seg_b = srv.backend.index.segments(A)[0], srv.backend.index.segments(B)[0]
    for seg in (seg_a, seg_b):
        assert (await api.get(f"/api/v1/segments/{seg.id}/content", "viewer")).status == 200
    rng = {"start": ms_to_rfc3339(seg_a.start_ms), "end": ms_to_rfc3339(seg_a.end_ms)}
    both = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-ab-12", "cameras": [A, B], **rng, "reason": "reason-ab-12"})
    only_b = await api.json("POST", "/api/v1/holds", "evidence", status=201, json={
        "case_id": "case-b-12", "cameras": [B], **rng, "reason": "reason-b-12"})
    for hold, why in ((both, "closed-ab-12"), (only_b, "closed-b-12")):
        assert (await api.request("DELETE", f"/api/v1/holds/{hold['id']}?reason={why}", "evidence")).status == 204
    export = await api.json("POST", "/api/v1/exports", "evidence", status=201, json={
        "cameras": [A, B], **rng, "case_id": "case-exp-12", "reason": "reason-exp-12"})
    assert (await srv.exports.wait(export["id"], timeout=90)).state == "done"
    await srv.audit.record("token.create", "someone", {"role": "admin", "cameras": None})
    return both, only_b, export


async def test_a_scoped_token_reads_only_what_is_about_its_cameras(api):
    both, only_b, export = await entries_about_a_b_both_and_none(api)
    seen = await pages(api, "scoped-admin", 7)
    text = json.dumps(seen)
    assert B not in text and only_b["id"] not in text, [e for e in seen if B in json.dumps(e)]
    assert not [s for s in SECRETS if s in text]
    assert not [e for e in seen if e["action"] == "token.create"]  # about no camera: hidden
    read_a = [e for e in seen if e["action"] == "segment.content" and e["target"].startswith(f"{A}:")]
    assert read_a and all(e["hash"] and not e.get("redacted") for e in read_a)  # about A only: whole
    for target, actions in ((both["id"], ["hold.place", "hold.release"]),
                            (export["id"], ["export.create", "export.done"])):
        cut_ = [e for e in seen if e["target"] == target]
        assert [e["action"] for e in cut_] == actions, cut_
        for e in cut_:  # about A and B: cut to A, nothing of the case
            assert e["redacted"] is True and e["hash"] is None and e["prev"] is None
            assert e["detail"]["cameras"] == [A] and set(e["detail"]) <= {"cameras", "start", "end", "expires"}
    # The whole entries are still there for a token of every camera.
    full = [e for e in await pages(api, "evidence", 1000) if e["target"] == both["id"]]
    assert [e["action"] for e in full] == ["hold.place", "hold.release"]
    assert full[0]["detail"]["reason"] == "reason-ab-12" and full[0]["hash"] and "redacted" not in full[0]


async def test_scoped_pages_skip_nothing_and_repeat_nothing(api, monkeypatch):
    await viewer_reads(api, 2)
    whole = [e["id"] for e in await pages(api, "scoped-admin", 1000)]
    assert whole == sorted(set(whole))
    assert [e["id"] for e in await pages(api, "scoped-admin", 3)] == whole
    monkeypatch.setattr(audit, "MAX_SCAN", 4)  # pages end early, often empty: the cursor still covers everything
    assert [e["id"] for e in await pages(api, "scoped-admin", 2)] == whole
    # A token of every camera pages as it always did: one query, the cursor the last id of a full page.
    first = await api.json("GET", "/api/v1/audit?limit=3", "evidence")
    assert len(first["entries"]) == 3 and first["next_cursor"] == str(first["entries"][-1]["id"])
