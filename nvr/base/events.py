"""The event sink stages report through: (action, target, detail), written to the audit log by the wiring."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

EventSink = Callable[[str, str, dict[str, Any]], Awaitable[None]]


async def no_event(action: str, target: str, detail: dict[str, Any]) -> None:
    """The sink of a stage run without an audit log (tests, one-off tools)."""
