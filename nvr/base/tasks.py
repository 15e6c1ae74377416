"""Owned background tasks: each has a name, its end is noticed, reported, and it is restarted or shouted.

A service that runs something forever (a lane, a watch loop, a scheduler, a
child process's watchdog) spawns it here instead of ``asyncio.create_task``.
When the coroutine returns or raises while the owner is not stopping, the end
is logged and sent to the event sink (so it is audited), and the task is
started again after a capped back-off that resets once a run lasted
``healthy_after`` seconds. A task that may not be restarted (``restart=False``)
or that keeps failing past ``give_up_after`` failures in a row marks the owner
failed: the wiring watches :attr:`TaskOwner.failed` and stops the server
loudly instead of running on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nvr.base.events import EventSink, no_event

log = logging.getLogger("nvr.tasks")

TaskFactory = Callable[[], Awaitable[None]]


@dataclass
class TaskState:
    """What status shows about one owned task."""

    name: str
    running: bool = False
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    gave_up: bool = False
    done: bool = False  # a ``once`` task that completed


@dataclass(frozen=True)
class _Spec:
    factory: TaskFactory
    restart: bool
    once: bool
    initial: float
    maximum: float
    healthy_after: float
    give_up_after: int | None


class TaskOwner:
    """The owner of a service's long-lived tasks; :meth:`stop` cancels and awaits them, newest first."""

    def __init__(self, owner: str, *, on_event: EventSink = no_event, on_change: Callable[[], None] | None = None):
        self.owner = owner
        self.on_event = on_event
        self.on_change = on_change or (lambda: None)
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._states: dict[str, TaskState] = {}
        self._stopping = False

    def spawn(self, name: str, factory: TaskFactory, *, restart: bool = True, once: bool = False,
              initial: float = 0.5, maximum: float = 30.0, healthy_after: float = 30.0,
              give_up_after: int | None = None) -> None:
        """Run ``factory()`` as task ``name`` until :meth:`stop`, restarting it as described above.

        With ``once``, a normal return is the task's success (a start-up job): only a raise is
        reported and retried.
        """
        if name in self._tasks:
            raise RuntimeError(f"{self.owner}: task {name!r} already runs")
        spec = _Spec(factory, restart, once, initial, maximum, healthy_after, give_up_after)
        self._states[name] = TaskState(name)
        self._tasks[name] = asyncio.create_task(self._keep(name, spec), name=f"{self.owner}:{name}")

    def states(self) -> dict[str, TaskState]:
        return dict(self._states)

    async def cancel(self, name: str) -> None:
        """Stop one task (not an end to report)."""
        task = self._tasks.pop(name, None)
        self._states.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Cancel every task, newest first, and wait for each; nothing they raise is dropped (it is logged)."""
        self._stopping = True
        for name in reversed(list(self._tasks)):
            task = self._tasks.pop(name)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, name: str, spec: _Spec) -> None:
        state = self._states[name]
        delay = spec.initial
        while True:
            started = time.monotonic()
            state.running = True
            error: str | None = None
            try:
                await spec.factory()
                if spec.once:
                    state.running, state.done, state.last_error = False, True, None
                    self.on_change()
                    return
                error = "ended"
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as e:  # every end of an owned task is reported, none is dropped
                error = f"{type(e).__name__}: {e}"
                log.error("%s: task %s failed: %s", self.owner, name, error, exc_info=e)
            state.running = False
            if self._stopping:
                return
            ran = time.monotonic() - started
            if ran >= spec.healthy_after:
                delay, state.failures_in_a_row = spec.initial, 0
            state.failures_in_a_row += 1
            state.last_error = error
            give_up = not spec.restart or (
                spec.give_up_after is not None and state.failures_in_a_row > spec.give_up_after)
            with contextlib.suppress(Exception):  # the report must not be what kills the owner
                await self.on_event("task.ended", f"{self.owner}:{name}",
                                    {"error": error, "restarts": state.restarts, "restart": not give_up})
            if give_up:
                state.gave_up = True
                self.failure = f"{self.owner}: task {name} {error if error != 'ended' else 'ended'}; not restarted"
                log.critical("%s", self.failure)
                self.failed.set()
                self.on_change()
                return
            self.on_change()
            wait = delay * random.uniform(0.5, 1.0)
            log.warning("%s: restarting task %s in %.1f s (%s)", self.owner, name, wait, error)
            await asyncio.sleep(wait)
            delay = min(delay * 2, spec.maximum)
            state.restarts += 1
