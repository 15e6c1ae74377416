"""Pure rules of the lease protocol: how many cameras a node should hold, and how long it may trust a lease."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def fair_share(cameras: int, nodes: Sequence[tuple[str, int]], me: str) -> int:
    """How many of ``cameras`` node ``me`` should hold, given the live ``nodes`` as (id, capacity).

    Water-filling: every node gets an equal share capped by its capacity, what the capped
    ones can't take is spread over the others; the remainder of an uneven split goes to the
    first nodes by id, so every node computes the same split without talking to the others.
    A node not (yet) among ``nodes`` computes its share as if it were.
    """
    caps = dict(nodes)
    caps.setdefault(me, 0)
    if caps[me] == 0:
        caps.pop(me)
        return 0
    share: dict[str, int] = dict.fromkeys(caps, 0)
    left = cameras
    open_ = sorted(caps)
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        given = 0
        for i, node in enumerate(open_):
            want = each + (1 if i < extra else 0)
            take = min(want, caps[node] - share[node])
            share[node] += take
            given += take
        left -= given
        open_ = [n for n in open_ if share[n] < caps[n]]
        if given == 0:
            break
    return share[me]


@dataclass
class TrustWindow:
    """How long a node may act on its leases without hearing from the database.

    A renewal sent at monotonic time ``t`` extends every lease to at least ``t + ttl`` on the
    database's clock (the statement runs after it was sent). The node trusts its leases until
    ``t + ttl - margin`` and must have stopped recording by then; ``margin`` covers stopping
    ffmpeg and clock-rate drift. Nothing here reads a wall clock.
    """

    ttl: float
    margin: float
    sent: float | None = None  # monotonic time the last successful renewal was sent

    def renewed(self, sent: float) -> None:
        if self.sent is None or sent > self.sent:
            self.sent = sent

    def lost(self) -> None:
        self.sent = None

    def deadline(self) -> float | None:
        """Monotonic time by which recording must have stopped (None: nothing is trusted)."""
        return None if self.sent is None else self.sent + self.ttl - self.margin

    def trusted(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and now < d
