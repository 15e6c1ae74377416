"""Waiting on events: a level-free change signal (stages fire it, waiters re-check their condition), and a
bounded wait on an :class:`asyncio.Event` that makes no task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Pulse:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake every current waiter; later waiters wait for the next fire."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._event  # taken before the check, so a fire in between is not missed
                if predicate():
                    return
                await event.wait()


async def wait_set(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set, or ``timeout`` s pass, when a timer sets it: the caller tells the two apart by
    its own state. A timer, not ``asyncio.wait_for``, which makes a task per wait: the live path waits once
    a fragment per feed and per viewer."""
    timer = asyncio.get_running_loop().call_later(timeout, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
