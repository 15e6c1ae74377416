"""The one exception hierarchy: every failure is an ``NvrError`` with a kind and the context to act on.

The kind says whose move it is (the caller's, the operator's, a dependency's)
and is all an interface needs: the API maps kinds to HTTP statuses in one
place (``nvr.api.problem``), the CLI to exit codes in one place
(``nvr.cli.exits``). Domain code never raises an HTTP error.
"""

from __future__ import annotations

import enum
from typing import Any


class Kind(enum.StrEnum):
    """What went wrong, in terms of who can fix it."""

    INVALID = "invalid"              # the input is wrong: the caller fixes it
    NOT_FOUND = "not_found"          # no such thing (or not visible to this caller)
    CONFLICT = "conflict"            # the current state forbids it (exists already, busy, released)
    FORBIDDEN = "forbidden"          # this caller may not do it
    LIMITED = "limited"              # too many at once: retry later
    UNAVAILABLE = "unavailable"      # a dependency can't answer now (S3 down, index locked): retry later
    REFUSED = "refused"              # a dependency answered no (S3 denied a request)
    DATA_LOSS = "data_loss"          # stored bytes or records don't match the ledger
    MISCONFIGURED = "misconfigured"  # the server lacks what it needs (a missing key): the operator fixes it
    INTERNAL = "internal"            # a bug or an unexpected state


class NvrError(Exception):
    """Base of every nvr failure; ``kind`` defaults to the class's, ``context`` holds named details."""

    kind: Kind = Kind.INTERNAL

    def __init__(self, message: str, *, kind: Kind | None = None, **context: Any):
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.context = context


class InvalidInput(NvrError):
    """Input that breaks a rule; ``field`` names the offending field when there is one."""

    kind = Kind.INVALID

    def __init__(self, message: str, *, field: str | None = None, **context: Any):
        super().__init__(message, **({"field": field} if field else {}), **context)
        self.field = field


class FieldError(InvalidInput):
    """Input whose ``field`` breaks a rule, told as ``"<field>: <message>"``; ``message`` alone for re-wording."""

    def __init__(self, field: str, message: str):
        self.message = message
        super().__init__(f"{field}: {message}", field=field)


class NotFound(NvrError):
    """The thing asked for does not exist, or the caller may not see it (the same answer either way)."""

    kind = Kind.NOT_FOUND


class Conflict(NvrError):
    """The current state forbids the request."""

    kind = Kind.CONFLICT


class ConfigError(NvrError):
    """The configuration is invalid; ``key`` names the offending TOML key."""

    kind = Kind.INVALID

    def __init__(self, key: str, message: str, *, source: str | None = None):
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}", key=key)
