"""Storage full: the low-disk sweep frees the oldest footage across cameras, then alarms when nothing is left."""

from __future__ import annotations

import pytest

from nvr.base.times import now_ms
from nvr.config.retention import Rule, RuleSet
from retention.holds import HoldRequest
from tests.retention.conftest import H, metrics_text

pytestmark = pytest.mark.integration


async def test_storage_full_deletes_oldest_across_cameras_then_alarms_when_nothing_is_left(env):
    now = now_ms()
    floor = 20_000
    svc = await env.service(RuleSet(default=Rule(min_age=60.0)), min_free_bytes=floor, low_disk_cooldown=0.0)
    a = await env.add("a", now - 3 * H, 3, svc=svc)
    b = await env.add("b", now - 2 * H, 3, svc=svc)
    young = await env.add("a", now - 5_000, 2, svc=svc)
    await svc.holds.place(HoldRequest("c", ("b",), b[1].start_ms, None, "r", None), ("token:o", "evidence"))

    need = floor + floor // 4 - (floor - 1000)  # 6000 bytes: two of these ~3 KB objects
    task = await svc.on_spool_check(floor - 1000)
    report = await task
    assert report.trigger == "low_disk" and report.free_needed == need
    gone = [r.id for r in env.rows("a") + env.rows("b") if r.state == "deleted"]
    assert gone == [a[0].id, a[1].id]  # the oldest first, across cameras, just enough
    assert report.deleted_bytes >= need and svc.storage_full is None

    # Still low (the disk has not caught up): this episode already freed what was missing, nothing more goes.
    report = await (await svc.on_spool_check(floor - 1000))
    assert report.deleted_segments == 0 and svc.storage_full is None
    # The disk got fuller: only what is neither held nor young can go, then the server says it is full.
    report = await (await svc.on_spool_check(1000))
    assert {r.id for r in env.rows("a") + env.rows("b") if r.state == "stored"} == {
        b[1].id, b[2].id, *(r.id for r in young)}
    assert svc.storage_full and "held or younger than min_age" in svc.storage_full
    assert svc.alarm == svc.storage_full
    assert "nvr_retention_storage_full 1" in metrics_text(svc).splitlines()
    assert len(env.actions("retention.storage_full")) == 1
    assert await svc.on_spool_check(floor) is None  # back above the floor
    assert svc.storage_full is None and len(env.actions("retention.storage_full_cleared")) == 1
    env.assert_consistent("a", "b")
