"""Concurrency limits on heavy footage requests (clips): per requester and in total, answered 429.

A clip holds a writer thread and up to two decrypted segments while it streams; twenty one-hour clips by
one viewer once took the server from 0.3 to 1.9 GiB. Beyond the limits a request is refused at once with
``Retry-After`` rather than queued: a player retries, and a queue would hide the overload.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from nvr.api.problem import Problem

RETRY_AFTER_S = 5


@dataclass
class ConcurrencyLimit:
    """At most ``total`` at once, and ``per_key`` for any one key (a token's name); 0 means no limit."""

    what: str
    total: int
    per_key: int
    active: Counter[str] = field(default_factory=Counter)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Count one request of ``key`` while the block runs; Problem 429 when a limit is reached."""
        if self.total and sum(self.active.values()) >= self.total:
            raise Problem(429, f"the server is serving {self.total} {self.what} already (the limit of "
                               f"server.{self.what.replace(' ', '_')}); retry in {RETRY_AFTER_S} s",
                          headers={"Retry-After": str(RETRY_AFTER_S)})
        if self.per_key and self.active[key] >= self.per_key:
            raise Problem(429, f"{key} has {self.per_key} {self.what} in progress already (the limit of "
                               f"server.{self.what.replace(' ', '_')}_per_token); retry when one ends",
                          headers={"Retry-After": str(RETRY_AFTER_S)})
        self.active[key] += 1
        try:
            yield
        finally:
            self.active[key] -= 1
            if self.active[key] <= 0:
                del self.active[key]
