"""One writer at a time per camera ledger chain: within a process, and across the nodes of a cluster.

Ingest reads a camera's chain head, PUTs the object with a record linked to
that head, then inserts the record; the retention sweep appends tombstones to
the same chain, and exports append their records. If another record landed
between ingest's head read and its insert, the index would refuse the insert
and the object in the bucket would carry a record that no longer fits the
chain (a ``ChainConflict`` on retry). So every writer of a camera's chain holds
that camera's lock from reading the head to committing the record: ingest
around one segment (its lane is sequential, so the lock is uncontended by
ingest itself), the sweep around the tombstones of one batch.

Within a process that is an :class:`asyncio.Lock` per camera. Nodes of a
cluster share one PostgreSQL index: there the lock is also the index's
``hold("chain:<camera>")``, a session advisory lock, so a node that returns
with a spool of old segments and the node recording the camera now take turns.
A node cut off from PostgreSQL while it holds the lock loses it after
``CHAIN_LAPSE_S`` (the server ends the silent session), so the camera's new holder
waits that long at most; a healthy holder that outlasts it (a PUT retried against
a slow S3) only risks a refused insert, which its retry settles.
On a single node with SQLite, a ``nvr retention run`` from the CLI is kept
out by the retention lock file instead (see ``retention/scheduler.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

# Longer than a healthy seal + PUT + insert of one segment, shorter than the index's statement timeout (30 s),
# so the new holder's wait for a cut-off node's lock ends before its own statement gives up.
CHAIN_LAPSE_S = 15.0


class ChainLocks:
    """``async with locks(camera): ...``: the camera's chain is this caller's alone for the block."""

    def __init__(self, index: Any = None) -> None:
        # Only an index shared by several processes needs the database's lock as well.
        self._index = index if index is not None and getattr(index, "dialect", "") == "postgresql" else None
        self._locks: dict[str, asyncio.Lock] = {}

    def local(self, camera: str) -> asyncio.Lock:
        lock = self._locks.get(camera)
        if lock is None:
            lock = self._locks[camera] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def __call__(self, camera: str) -> AsyncIterator[None]:
        async with self.local(camera):
            if self._index is None:
                yield
                return
            held = self._index.hold(f"chain:{camera}", lapse_s=CHAIN_LAPSE_S)
            loop = asyncio.get_running_loop()
            entering = loop.run_in_executor(None, held.__enter__)
            try:
                await asyncio.shield(entering)
            except asyncio.CancelledError:
                # The thread still takes the lock: give it back once it has, or the chain stays locked.
                entering.add_done_callback(
                    lambda f: f.cancelled() or f.exception() or loop.run_in_executor(None, held.__exit__,
                                                                                      None, None, None))
                raise
            try:
                yield
            finally:
                await asyncio.shield(asyncio.to_thread(held.__exit__, None, None, None))
