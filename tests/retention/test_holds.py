"""Holds against real S3 with object lock: legal holds reconciled on placement, new segments and release; expiry."""

from __future__ import annotations

import asyncio

import pytest

from nvr.base.times import now_ms
from retention.holds import HoldRequest
from tests.retention.conftest import H
from tests.support.rawsql import sql_rows

pytestmark = pytest.mark.integration


async def test_open_ended_hold_covers_later_segments_and_release_clears_only_unneeded_legal_holds(env):
    now = now_ms()
    svc = await env.service()
    first = await env.add("a", now - 20_000, 2, svc=svc)
    officer = ("token:officer", "evidence")
    h1 = (await svc.holds.place(HoldRequest("c1", ("a",), now - 30_000, None, "ongoing", None), officer)).hold
    h2 = (await svc.holds.place(HoldRequest("c2", ("a", "b"), first[1].start_ms, first[1].end_ms, "one", None),
                                officer)).hold
    assert all(env.legal_hold(r) for r in first)
    later = await env.add("a", now - 5_000, 2, svc=svc)  # recorded after the hold was placed
    assert all(env.legal_hold(r) for r in later)
    elsewhere = await env.add("b", now - 5_000, 1, svc=svc)  # camera b: h2's range only, so not held
    assert not env.legal_hold(elsewhere[0])

    change = await svc.holds.release(h1.id, "case closed", officer)
    assert change.legal_holds.cleared == 3  # first[0] and both later ones; first[1] is still under h2
    assert env.legal_hold(first[1]) and not env.legal_hold(first[0]) and not any(env.legal_hold(r) for r in later)
    await svc.holds.release(h2.id, "case closed", officer)
    assert not env.legal_hold(first[1])
    released = [e for e in env.actions("hold.release")]
    assert [(e.target, e.detail["reason"], e.actor) for e in released] == [
        (h1.id, "case closed", "token:officer"), (h2.id, "case closed", "token:officer")]
    assert sql_rows(env.index, "SELECT COUNT(*) FROM retention_legal_holds")[0][0] == 0


async def test_expired_hold_stops_protecting_and_its_expiry_is_audited(env):
    now = now_ms()
    svc = await env.service()
    rows = await env.add("a", now - 2 * H, 3, svc=svc)
    hold = await asyncio.to_thread(svc.rstore.add_hold, case_id="c", cameras=["a"], start_ms=rows[0].start_ms,
                                   end_ms=None, reason="r", expires_ms=now - 1, actor="x", now_ms=now - 10)
    report = await svc.run_now("test")
    assert report.deleted["a"].segments == 3
    assert [e.target for e in env.actions("hold.expire")] == [hold.id]
    await svc.run_now("test")
    assert len(env.actions("hold.expire")) == 1  # once
