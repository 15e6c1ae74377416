"""Failed authentication, per client address: a token bucket that answers 429, and one audit entry per window.

Each address may fail ``AuthLimits.burst`` times at once and earns back
``per_second`` failures a second. An address with nothing left is answered
429 with ``Retry-After`` on every route that needs a token, without its token
being looked at (so a guesser learns nothing while refused, and a flood costs
no index lookup); other addresses, and so their working tokens, are not
affected. Behind a reverse proxy every client has the proxy's address: the
proxy then shares one bucket, so it should limit failures itself.

Failures are summed per address over ``window`` seconds from the first one:
one ``auth.failed`` audit entry (target: the address; detail: count, reasons,
how many were refused) and one log line per address and window, so a flood
can't fill the log. Open windows are written when the app shuts down
(``close``); at most ``max_addresses`` are tracked, the quietest forgotten
first (its open window written at once).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from nvr.base.times import ms_to_rfc3339, now_ms
from storage.audit import AuditLog

log = logging.getLogger("nvr.api.auth")


@dataclass(frozen=True)
class AuthLimits:
    """How many failed authentications an address may make, and how they are summed up."""

    burst: int = 10  # failures an address may make at once
    per_second: float = 1.0  # failures an address earns back each second
    window: float = 60.0  # seconds one audit entry and log line sum up
    max_addresses: int = 10_000  # addresses tracked at once


@dataclass
class _Window:
    started_ms: int
    failures: Counter[str] = field(default_factory=Counter)  # reason -> count
    refused: int = 0  # answered 429 without a look at the token
    timer: asyncio.TimerHandle | None = None

    @property
    def count(self) -> int:
        return sum(self.failures.values()) + self.refused


@dataclass
class _Address:
    tokens: float
    stamp: float  # when ``tokens`` was reckoned (monotonic)
    window: _Window | None = None


class AuthGuard:
    """The failure buckets and windows of every address (one per app)."""

    def __init__(self, limits: AuthLimits, audit: AuditLog, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.audit = audit
        self.clock = clock
        self._addresses: dict[str, _Address] = {}  # least recently active first
        self._writes: set[asyncio.Task] = set()

    def _state(self, address: str) -> _Address:
        now, lim = self.clock(), self.limits
        st = self._addresses.pop(address, None)
        if st is None:
            st = _Address(tokens=float(lim.burst), stamp=now)
        else:
            st.tokens = min(float(lim.burst), st.tokens + (now - st.stamp) * lim.per_second)
            st.stamp = now
        self._addresses[address] = st  # now the most recently active
        return st

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try a token again (counted as refused), or None when it may now."""
        st = self._addresses.get(address)
        if st is None:
            return None
        st = self._state(address)
        if st.tokens >= 1:
            return None
        self._window(address, st).refused += 1
        return max(1, math.ceil((1 - st.tokens) / self.limits.per_second))

    def failed(self, address: str, reason: str) -> None:
        """Count one failed authentication of ``address`` (``reason``: unknown, revoked, malformed)."""
        st = self._state(address)
        st.tokens = max(0.0, st.tokens - 1)
        self._window(address, st).failures[reason] += 1
        self._forget_quietest()

    def forget(self, address: str) -> None:
        """Drop ``address``'s bucket (its open window is written first)."""
        st = self._addresses.pop(address, None)
        if st is not None and st.window is not None:
            self._write_soon(address, st)

    def _window(self, address: str, st: _Address) -> _Window:
        if st.window is None:
            st.window = _Window(started_ms=now_ms())
            loop = asyncio.get_running_loop()
            st.window.timer = loop.call_later(self.limits.window, self._window_over, address)
        return st.window

    def _window_over(self, address: str) -> None:
        st = self._addresses.get(address)
        if st is not None and st.window is not None:
            self._write_soon(address, st)

    def _forget_quietest(self) -> None:
        while len(self._addresses) > self.limits.max_addresses:
            self.forget(next(iter(self._addresses)))

    def _write_soon(self, address: str, st: _Address) -> None:
        window, st.window = st.window, None
        assert window is not None
        if window.timer is not None:
            window.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._write(address, window))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, address: str, w: _Window) -> None:
        seconds = (now_ms() - w.started_ms) / 1000
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(w.failures.items()))
        log.warning("auth: %d failed authentication(s) from %s in %.0f s (%s; %d answered 429 unchecked)",
                    w.count, address, seconds, reasons or "none checked", w.refused)
        try:
            await self.audit.record("auth.failed", address, {
                "count": w.count, "failures": dict(sorted(w.failures.items())), "refused": w.refused,
                "start": ms_to_rfc3339(w.started_ms), "end": ms_to_rfc3339(now_ms())})
        except Exception as e:  # the index may be what fails; the log line above tells the story
            log.error("auth: can't audit the failed authentications from %s: %s: %s", address, type(e).__name__, e)

    async def close(self) -> None:
        """Write every open window (the app is shutting down)."""
        for address, st in list(self._addresses.items()):
            if st.window is not None:
                self._write_soon(address, st)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


AUTH_GUARD = web.AppKey("nvr.auth_guard", AuthGuard)


async def close_guard(app: web.Application) -> None:
    """``on_cleanup`` hook: the open windows are audited before the server stops."""
    await app[AUTH_GUARD].close()
