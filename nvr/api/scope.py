"""The one rule for what a camera-scoped token sees of a record about cameras (audit entries, holds).

A record is about a set of cameras: ``None`` means every camera, an empty set
means none (system, token and configuration events). For a token scoped to
the cameras S:

* ``FULL`` when every camera the record is about is in S;
* ``CUT`` when only some are (or it is about every camera): the record is
  shown with the cameras outside S cut out, and everything that belongs to
  the record as a whole is withheld (case id, reason, counts, hashes: all a
  caller's allow-list does not name);
* ``HIDDEN`` when none is, and for every record about no camera.

A token for every camera sees every record ``FULL``.

Why cut rather than hide a record about A and B from a token for A: a hold
over A and B protects A's footage, and an export over A and B carried A's
footage out. Whoever answers for A must be able to see that it happened,
when, by whom and over which of their cameras (and why releasing that hold
needs another token); what would say something about B (its id, the case
id, the reason, counts and hashes over both) is withheld. An export itself
stays unreachable unless the token sees all its cameras, because its bundle
holds B's footage.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

from nvr.api.auth import Principal


class Visibility(Enum):
    FULL = "full"
    CUT = "cut"
    HIDDEN = "hidden"


def visibility(who: Principal, cameras: Collection[str] | None) -> Visibility:
    """How much of a record about ``cameras`` (None: every camera) ``who`` may see."""
    if who.cameras is None:
        return Visibility.FULL
    if cameras is None:
        return Visibility.CUT
    seen = [c for c in cameras if who.sees(c)]
    if not seen:
        return Visibility.HIDDEN
    return Visibility.FULL if len(seen) == len(cameras) else Visibility.CUT


def cut(who: Principal, cameras: Collection[str] | None) -> list[str]:
    """The cameras of a record that ``who`` may see, sorted (for every camera: the token's own)."""
    if cameras is None:
        return sorted(who.cameras) if who.cameras is not None else []
    return sorted(c for c in cameras if who.sees(c))
