"""JSON as RFC 8259 has it, for input nvr must not misread: API bodies and evidence manifests.

Python's ``json.loads`` accepts ``NaN`` and ``Infinity``, turns ``1e999`` into
infinity and keeps the last of a repeated key; a limit of ``NaN`` disables it and
a repeated key lets two readers see two documents. Here each is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any


class JsonRefused(ValueError):
    """Strict JSON refused it; ``key`` names the repeated key, when that is why."""

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {raw[:40]} is too large for a JSON number")
    return value


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JsonRefused(f"key {key!r} given more than once", key=key)
        obj[key] = value
    return obj


def loads(raw: bytes | str) -> Any:
    """``raw`` parsed strictly; JsonRefused for the above, ValueError/RecursionError as ``json.loads`` raises."""
    return json.loads(raw, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_no_repeats)
