"""The checkpoint writer: signs each camera's chain head when it moved, on an interval and at stop.

:class:`CheckpointWriter` signs every camera whose head moved, every
``interval`` seconds and once more when stopped (after ingest drained). Before
signing it checks that the records since the previous checkpoint link to it, so
it never attests a chain that was edited behind its back; a refusal is an
audit event (``ledger.checkpoint_refused``, or ``ledger.rollback`` when the
index chain is shorter than what was already signed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nvr.base.errors import Kind
from nvr.base.events import EventSink, no_event
from nvr.custody.checkpoint.document import (
    Checkpoint,
    CheckpointError,
    parse_checkpoint,
    sign_checkpoint,
)
from nvr.custody.checkpoint.keys import trusted_keys
from nvr.custody.checkpoint.store import (
    checkpoint_key,
    get_bytes,
    key_object_key,
    latest_indexed_checkpoint,
    publish_keys,
    put_checkpoint,
    record_checkpoint,
)
from storage.chainlock import ChainLocks
from storage.errors import StorageError, TransientStorageError
from storage.index import Index
from storage.keyring import Keyring
from storage.ledger import ChainBreak, ChainHead, record_hash, verify_chain
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.checkpoint")

DEFAULT_INTERVAL = 300.0
STOP_SECONDS = 8.0  # the shutdown checkpoint's bound


class CheckpointRefused(StorageError):
    """The writer would not sign: the chain does not continue the last checkpoint, or the bucket disagrees."""

    kind = Kind.DATA_LOSS


class CheckpointWriter:
    """Signs each camera's chain head every ``interval`` seconds and at stop, when it moved."""

    def __init__(self, *, store: ObjectStore, index: Index, keyring: Keyring, node_id: str,
                 interval: float = DEFAULT_INTERVAL, on_event: EventSink | None = None):
        self.store = store
        self.index = index
        self.keyring = keyring
        self.node_id = node_id
        self.interval = interval
        self.on_event = on_event or no_event
        self.rounds = 0  # completed rounds (tests wait on it)
        self.last_error: str | None = None
        self._locks = ChainLocks()  # one signer per camera at a time (not the ledger's chain locks)
        self._published: set[str] = set()
        self._refused: dict[str, str] = {}  # camera -> last refusal message (audited once)
        self._task: asyncio.Task | None = None
        self._round = asyncio.Condition()
        # In a cluster: which of the chains this node signs (those it records, ingested or sweeps);
        # the others are signed by their own nodes.
        self.select: Callable[[list[str]], Awaitable[list[str]]] | None = None

    async def start(self) -> None:
        """Publish the public keys (best effort) and start the signing loop."""
        with contextlib.suppress(StorageError):
            await self.publish_keys()
        self._task = asyncio.create_task(self._loop(), name="ledger-checkpoints")

    async def stop(self, *, final: bool = True) -> None:
        """Stop the loop, then (``final``) sign every head that moved (call after ingest drained)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not final:
            log.warning("shutdown checkpoint skipped: S3 takes no uploads; the next start signs the heads")
            return
        try:
            # Bounded: with S3 hung, shutdown must not wait out every read timeout; the next start signs.
            written = await asyncio.wait_for(self.write_all(), STOP_SECONDS)
            log.info("shutdown checkpoint: %d camera(s) signed", len(written))
        except (StorageError, TimeoutError) as e:
            log.error("shutdown checkpoint not written (the next start signs the heads): %s",
                      e or f"S3 did not answer within {STOP_SECONDS:.0f} s")

    def alarm(self) -> str | None:
        """Why checkpoints are not being written, or None while they are."""
        if self._refused:
            camera, message = sorted(self._refused.items())[0]
            more = f" (and {len(self._refused) - 1} more camera(s))" if len(self._refused) > 1 else ""
            return f"checkpoints refused for camera {camera}{more}: {message}"
        if self.last_error:
            return f"checkpoints failing: {self.last_error}"
        return None

    async def publish_keys(self) -> None:
        """Put every trusted public key in the bucket's ``ledger/keys/`` when it is missing."""
        written = await self.store.run(publish_keys, self.store, self.keyring)
        self._published.update(trusted_keys(self.keyring))
        for key_id in written:
            log.info("published signing public key %s to %s", key_id, key_object_key(key_id))

    async def _loop(self) -> None:
        while True:
            try:
                await self.write_all()
                self.last_error = None
            except TransientStorageError as e:
                self.last_error = str(e)
                log.warning("checkpoints postponed, S3 unavailable: %s", e)
            except Exception as e:  # keep signing the other rounds; the failure is logged loudly
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("checkpoint round failed")
            await asyncio.sleep(self.interval)

    async def wait_rounds(self, count: int, timeout: float) -> None:
        """Return once ``count`` rounds completed (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout), self._round:
            await self._round.wait_for(lambda: self.rounds >= count)

    async def write_all(self) -> list[Checkpoint]:
        """Sign every camera whose head moved since its last checkpoint; returns the new checkpoints."""
        written: list[Checkpoint] = []
        try:
            cameras = await asyncio.to_thread(self.index.ledger_cameras)
            if self.select is not None:
                cameras = await self.select(cameras)
            for camera in cameras:
                try:
                    cp = await self._write(camera)
                except CheckpointRefused:
                    continue
                if cp is not None:
                    written.append(cp)
        finally:
            async with self._round:
                self.rounds += 1
                self._round.notify_all()
        return written

    async def write_now(self, camera: str) -> Checkpoint | None:
        """Make sure ``camera``'s current head is covered; returns the covering checkpoint (None: empty chain).

        Raises :class:`CheckpointRefused` when the chain can't be signed.
        """
        await self._write(camera)
        head = await asyncio.to_thread(self.index.chain_head, camera)
        last = await asyncio.to_thread(latest_indexed_checkpoint, self.index, camera)
        return last if last is not None and last.seq == head.seq else None

    async def _refuse(self, camera: str, message: str, action: str = "ledger.checkpoint_refused") -> None:
        if self._refused.get(camera) != message:
            self._refused[camera] = message
            log.error("camera %s: checkpoint refused: %s", camera, message)
            await self.on_event(action, camera, {"error": message})
        raise CheckpointRefused(message)

    async def _write(self, camera: str) -> Checkpoint | None:
        """Sign ``camera``'s head if it moved; returns the new checkpoint or None."""
        async with self._locks(camera):
            head = await asyncio.to_thread(self.index.chain_head, camera)
            if head.seq < 0:
                return None
            last = await asyncio.to_thread(latest_indexed_checkpoint, self.index, camera)
            if last is not None and last.seq == head.seq and last.head == head.hash:
                return None
            if last is not None and last.seq == head.seq:
                await self._refuse(camera, f"the head record {head.seq} is not the one checkpoint {last.seq} "
                                           "attests: it was edited in the index")
            if last is not None and last.seq > head.seq:
                await self._refuse(camera, f"the index chain ends at seq {head.seq} but checkpoint {last.seq} was "
                                           "already signed: records were removed or the index was rolled back",
                                   action="ledger.rollback")
            first = last.seq + 1 if last is not None else 0
            records = await asyncio.to_thread(self.index.ledger_records, camera, first, head.seq)
            start = ChainHead(camera, last.seq, last.head) if last is not None else None
            breaks = verify_chain(camera, records, start=start)
            if not breaks and (not records or record_hash(records[-1]) != head.hash
                               or records[-1].get("seq") != head.seq):
                breaks = [ChainBreak(head.seq, "the chain head does not match its last record")]
            if breaks:
                since = f"checkpoint {last.seq}" if last is not None else "genesis"
                await self._refuse(camera, f"records since {since} do not link: seq {breaks[0].seq}: "
                                           f"{breaks[0].problem}")
            key = self.keyring.signing_key
            if key.key_id not in self._published:
                await self.publish_keys()
            cp = sign_checkpoint(key, head, node=self.node_id)
            where = checkpoint_key(camera, head.seq)
            existing = await self.store.run(get_bytes, self.store, where)
            if existing is not None:
                # A crash after the PUT, or another writer: adopt it if it attests the same head.
                try:
                    found = parse_checkpoint(existing, trusted_keys(self.keyring), camera=camera, seq=head.seq)
                except CheckpointError as e:
                    await self._refuse(camera, f"{where} exists and is not a valid checkpoint: {e}")
                if found.head != head.hash:
                    await self._refuse(camera, f"{where} already attests a different record at seq "
                                               f"{head.seq}: the index and the bucket have forked (nvr reindex)")
                await asyncio.to_thread(record_checkpoint, self.index, found)
                self._refused.pop(camera, None)
                return found
            await self.store.run(put_checkpoint, self.store, cp, records)
            await asyncio.to_thread(record_checkpoint, self.index, cp)
            self._refused.pop(camera, None)
            log.debug("checkpoint %s:%d signed with %s", camera, head.seq, key.key_id)
            return cp
