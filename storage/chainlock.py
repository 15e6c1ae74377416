"""One writer at a time per camera ledger chain, within a process.

Ingest reads a camera's chain head, PUTs the object with a record linked to
that head, then inserts the record; the retention sweep appends tombstones to
the same chain. If a tombstone landed between ingest's head read and its
insert, the index would refuse the insert and the object in the bucket would
carry a record that no longer fits the chain (a ``ChainConflict`` on retry).
So every writer of a camera's chain holds that camera's lock from reading the
head to committing the record: ingest around one segment (its lane is
sequential, so the lock is uncontended by ingest itself), the sweep around the
tombstones of one batch.

Across processes the same exclusion comes from the retention lock file: a
``nvr retention run`` from the CLI refuses to start while a server (which owns
ingest and the scheduled sweep) holds it (see ``retention/scheduler.py``).
"""

from __future__ import annotations

import asyncio


class ChainLocks:
    """An :class:`asyncio.Lock` per camera: ``async with locks(camera): ...``."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, camera: str) -> asyncio.Lock:
        lock = self._locks.get(camera)
        if lock is None:
            lock = self._locks[camera] = asyncio.Lock()
        return lock
