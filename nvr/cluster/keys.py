"""The cluster's signing keys: each node enrolls its own; a key other nodes trust is in the index *and* the bucket.

The trust rule (docs/custody.md, "Keys in a cluster"): a checkpoint key is
trusted when it is in the local keyring. A node puts its own public keys in
the index (``cluster_keys``) and the bucket (``ledger/keys/``); another node's
key is added to the local keyring, as a public-only key, only when both copies
exist and are the same key. Planting a key therefore takes write access to
the index and to the bucket; every key added is an audit entry naming its
fingerprint, which an officer compares with the fingerprints the operator
publishes (``nvr cluster status``).
"""

from __future__ import annotations

import asyncio
import logging

from nvr.base.events import EventSink
from nvr.custody.checkpoint import fingerprint, load_public_pem
from nvr.custody.checkpoint.store import get_bytes, key_object_key
from storage.index import Index
from storage.keyring import Keyring
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.cluster")


class KeySync:
    """Enroll this node's keys once; trust other nodes' keys as they appear (one S3 GET per new key)."""

    def __init__(self, index: Index, store: ObjectStore, keyring: Keyring, node_id: str, on_event: EventSink):
        self.index, self.store, self.keyring, self.node_id, self.on_event = index, store, keyring, node_id, on_event
        self._enrolled = False
        self._settled: set[str] = set()  # key ids trusted, or refused for good

    async def sync(self) -> list[str]:
        """One pass; returns the key ids newly trusted."""
        if not self._enrolled:
            for key in self.keyring.signing_keys:
                await asyncio.to_thread(self.index.cluster.add_key, key_id=key.key_id, node_id=self.node_id,
                                        public_pem=key.public_pem().decode("ascii"), fingerprint=fingerprint(key.public))
                self._settled.add(key.key_id)
            self._enrolled = True
        added = []
        for key_id, node, pem, fp, _ in await asyncio.to_thread(self.index.cluster.keys):
            if key_id in self._settled:
                continue
            try:
                in_index = load_public_pem(pem.encode("ascii"))
            except ValueError as e:
                await self._refuse(key_id, node, f"the index's copy is not an Ed25519 public key: {e}")
                continue
            if fingerprint(in_index) != fp:
                await self._refuse(key_id, node, "the index's fingerprint does not match its key")
                continue
            raw = await self.store.run(get_bytes, self.store, key_object_key(key_id))
            if raw is None:
                continue  # not published yet: its node publishes with its first checkpoint; look again later
            try:
                in_bucket = load_public_pem(raw)
            except ValueError:
                await self._refuse(key_id, node, "the bucket's copy is not an Ed25519 public key")
                continue
            if fingerprint(in_bucket) != fp:
                await self._refuse(key_id, node, "the bucket's copy is another key than the index's")
                continue
            if await asyncio.to_thread(self.keyring.add_public, key_id, raw):
                log.info("cluster: trusting node %s's signing key %s (SHA-256 %s)", node, key_id, fp)
                await self.on_event("cluster.key_trusted", key_id, {"node": node, "fingerprint_sha256": fp})
                added.append(key_id)
            self._settled.add(key_id)
        return added

    async def _refuse(self, key_id: str, node: str, why: str) -> None:
        self._settled.add(key_id)
        log.error("cluster: signing key %s of node %s not trusted: %s", key_id, node, why)
        await self.on_event("cluster.key_refused", key_id, {"node": node, "error": why})
