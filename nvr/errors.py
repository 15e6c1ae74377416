"""Exception hierarchy of the nvr package."""

from __future__ import annotations


class NvrError(Exception):
    """Base of every nvr server failure."""


class ConfigError(NvrError):
    """The configuration is invalid; ``key`` names the offending TOML key."""

    def __init__(self, key: str, message: str, *, source: str | None = None):
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")
