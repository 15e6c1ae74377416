"""Owned tasks: an end is reported and restarted, a task that may not restart fails its owner, stop awaits all."""

from __future__ import annotations

import asyncio

import pytest

from nvr.base.tasks import TaskOwner
from tests.support.wait import until


class Events(list):
    async def __call__(self, action, target, detail):
        self.append((action, target, detail))


async def test_a_failing_task_is_reported_and_restarted_until_it_runs():
    events, runs = Events(), []

    async def flaky():
        runs.append(1)
        if len(runs) < 3:
            raise OSError("No space left on device")
        await asyncio.Event().wait()  # then runs until cancelled

    owner = TaskOwner("rec", on_event=events)
    owner.spawn("cam1", flaky, initial=0.01, maximum=0.02)
    await until(lambda: len(runs) == 3, timeout=5)
    st = owner.states()["cam1"]
    assert st.running and st.restarts == 2 and "No space left" in st.last_error
    assert [e[0] for e in events] == ["task.ended", "task.ended"] and events[0][1] == "rec:cam1"
    assert not owner.failed.is_set()
    await owner.stop()
    assert not owner.states()["cam1"].running
    assert len(events) == 2  # a stop is not an end to report


async def test_a_task_that_may_not_restart_fails_the_owner_loudly():
    events = Events()

    async def returns():
        return None

    owner = TaskOwner("s3", on_event=events)
    owner.spawn("watch", returns, restart=False)
    await asyncio.wait_for(owner.failed.wait(), 5)
    assert "watch" in owner.failure and owner.states()["watch"].gave_up
    assert events[0][2]["restart"] is False
    await owner.stop()


async def test_give_up_after_n_failures_in_a_row():
    owner = TaskOwner("lane")

    async def boom():
        raise RuntimeError("disk is full")

    owner.spawn("x", boom, initial=0.01, maximum=0.01, give_up_after=2)
    await asyncio.wait_for(owner.failed.wait(), 5)
    assert owner.states()["x"].failures_in_a_row == 3
    await owner.stop()


async def test_a_failing_event_sink_does_not_stop_the_restarts():
    runs = []

    async def sink(*a):
        raise OSError("database or disk is full")

    async def flaky():
        runs.append(1)
        if len(runs) < 2:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    owner = TaskOwner("lane", on_event=sink)
    owner.spawn("x", flaky, initial=0.01)
    await until(lambda: len(runs) == 2, timeout=5)
    await owner.stop()


async def test_spawn_twice_is_refused():
    owner = TaskOwner("o")
    owner.spawn("x", lambda: asyncio.Event().wait())
    with pytest.raises(RuntimeError):
        owner.spawn("x", lambda: asyncio.Event().wait())
    await owner.stop()


async def test_a_once_task_is_retried_until_it_succeeds_then_done():
    events, runs = Events(), []

    async def start_job():
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionRefusedError("S3 not up yet")

    owner = TaskOwner("start", on_event=events)
    owner.spawn("ledger", start_job, once=True, initial=0.01)
    await until(lambda: owner.states()["ledger"].done, timeout=5)
    assert len(runs) == 3 and len(events) == 2 and not owner.failed.is_set()
    await owner.stop()
