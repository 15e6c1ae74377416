"""The service's lifecycle: the scheduled sweep, and one sweeper per data dir."""

from __future__ import annotations

import pytest

from nvr.base.times import now_ms
from retention.service import RetentionBusy
from tests.retention.conftest import H

pytestmark = pytest.mark.integration


async def test_scheduler_runs_the_sweep_and_stops_cleanly(env):
    now = now_ms()
    svc = await env.service(first_run_delay=0.1, sweep_interval=3600.0)
    await env.add("a", now - 2 * H, 2, svc=svc)
    await svc.start()
    await svc.pulse.wait_until(lambda: svc.last_report is not None, timeout=30)
    assert svc.last_report.trigger == "schedule" and svc.last_report.deleted_segments == 2
    assert svc.status()["next_run"] is not None and svc.runs["schedule"] == 1
    await svc.stop()
    assert svc.status()["next_run"] is None


async def test_lock_file_allows_one_sweeper_per_data_dir(env):
    await env.service()
    with pytest.raises(RetentionBusy):
        await env.service()
