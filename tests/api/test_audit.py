"""The audit log over HTTP: chained, filtered, paged (a real server)."""

from __future__ import annotations

import pytest

from tests.api.conftest import A
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
