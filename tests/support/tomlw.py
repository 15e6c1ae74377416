"""A minimal TOML writer for test configs (strings, numbers, booleans, tables, arrays of tables)."""

from __future__ import annotations

import json
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    raise TypeError(f"unsupported TOML value {v!r}")


def dumps(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, val in data.items():
        if not isinstance(val, dict | list):
            lines.append(f"{key} = {_value(val)}")
    for key, val in data.items():
        if isinstance(val, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_value(v)}" for k, v in val.items()]
        elif isinstance(val, list):
            for table in val:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
