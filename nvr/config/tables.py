"""A TOML table read key by key, strictly: typed reads, and every leftover key refused by name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nvr.base.errors import ConfigError
from nvr.base.units import parse_duration, parse_size


class Section:
    """Typed, strict reads from one TOML table; reports leftovers as unknown keys."""

    def __init__(self, table: Any, path: str, source: str | None):
        if not isinstance(table, dict):
            raise ConfigError(path, f"must be a table, got {tname(table)}", source=source)
        self.table = dict(table)
        self.path = path
        self.source = source

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.key(name), message, source=self.source)

    def take(self, name: str, types: type | tuple[type, ...], default: Any) -> Any:
        if name not in self.table:
            return default
        value = self.table.pop(name)
        types_t = types if isinstance(types, tuple) else (types,)
        # TOML booleans are ints in Python; never let true pass as a number.
        if isinstance(value, bool) and bool not in types_t:
            raise self.error(name, f"must be {_names(types_t)}, got a boolean")
        if not isinstance(value, types_t):
            raise self.error(name, f"must be {_names(types_t)}, got {tname(value)}")
        # TOML has nan and inf; as a limit or a timeout either silently disables it.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value}")
        return value

    def duration(self, name: str, default: float, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
        raw = self.take(name, (int, float, str), None)
        if raw is None:
            return default
        try:
            seconds = parse_duration(raw)
        except ValueError as e:
            raise self.error(name, str(e)) from None
        if seconds < minimum or (minimum > 0 and seconds == 0):
            raise self.error(name, f"must be at least {minimum:g} s, got {seconds:g} s")
        if seconds > maximum:
            raise self.error(name, f"must be at most {maximum:g} s, got {seconds:g} s")
        return seconds

    def count(self, name: str, default: int) -> int:
        """A whole number of things, 0 or more (0 often means "no limit": the key's comment says)."""
        value = self.take(name, int, default)
        if value < 0:
            raise self.error(name, f"must not be negative, got {value}")
        return value

    def size(self, name: str, default: int) -> int:
        raw = self.take(name, (int, str), None)
        if raw is None:
            return default
        try:
            return parse_size(raw)
        except ValueError as e:
            raise self.error(name, str(e)) from None

    def path_(self, name: str, default: Path | None, base: Path) -> Path | None:
        raw = self.take(name, str, None)
        if raw is None or raw == "":
            return default
        p = Path(raw).expanduser()
        return p if p.is_absolute() else base / p

    def finish(self) -> None:
        if self.table:
            name = sorted(self.table)[0]
            raise self.error(name, "unknown key (check the spelling against config.example.toml)")


def tname(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


def _names(types: tuple[type, ...]) -> str:
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
             list: "an array of tables"}
    return " or ".join(words.get(t, t.__name__) for t in types)
