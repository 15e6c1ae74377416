"""Capped exponential back-off with jitter that resets after a healthy run (pure logic).

A run is healthy when it lasted ``healthy_after`` seconds or delivered a good segment: a camera that
flaps (away 10 s every 30 s) comes back each time within the initial delay, not after a delay that
grew because its good runs were short.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float
    maximum: float
    healthy_after: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, ran_for: float, *, delivered: bool = False) -> float:
        """Seconds to wait before restarting a process that ran ``ran_for`` seconds (``delivered``: it produced)."""
        if delivered or ran_for >= self.healthy_after:
            self.attempt = 0
        base = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        # "Equal jitter": at least half the delay, so a flapping fleet spreads out but never hammers.
        return base / 2 + self.rng.uniform(0, base / 2)
