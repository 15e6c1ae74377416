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


class RecorderError(NvrError):
    """A camera's recorder failed in a way its supervisor cannot mend."""

    def __init__(self, camera: str, message: str):
        self.camera = camera
        super().__init__(f"camera {camera}: {message}")
