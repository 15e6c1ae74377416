"""Waiting on a server subprocess: its answers are polled, its death noticed at once."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def until_while_running(
    proc: subprocess.Popen, check: Callable[[], T | None], *, timeout: float, log: Path, interval: float = 0.5
) -> T:
    """Return ``check()``'s first truthy value; fail if ``proc`` exits or ``timeout`` passes.

    Between checks it waits on the process itself, so a crash ends the wait
    immediately instead of after the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s; server log:\n{log.read_text()[-4000:]}")
        try:
            code = proc.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"server exited with {code}; log:\n{log.read_text()[-4000:]}")


async def until(check: Callable[[], T | None], *, timeout: float, interval: float = 0.05, what: str = "") -> T:
    """Return ``check()``'s first truthy value, polled; fail after ``timeout`` seconds.

    For state no event announces (another process's pid, a file another process writes).
    """
    deadline = time.monotonic() + timeout
    while not (value := check()):  # noqa: ASYNC110 - nothing to wait on but the state itself
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what or check}")
        await asyncio.sleep(interval)
    return value
