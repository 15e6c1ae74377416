"""The storage side of a data dir for tests: one bucket, index, keyring and spool, and a way to fill them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minio import Minio

from nvr.ingest.pipeline import Ingestor
from storage.embedded_s3 import S3Endpoint
from storage.index import Index, SegmentRow
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.spool import ClosedSegment, Spool
from tests.support import indexdb

SEG_MS = 2000  # the length of a segment put_segments makes


@dataclass
class StorageParts:
    """What ``nvr serve`` opens below its data dir (``tmp/data``), so the CLI can open the same files."""

    tmp: Path
    s3: S3Endpoint
    store: ObjectStore
    index: Index
    keyring: Keyring
    spool: Spool
    _ingestors: dict[tuple, Ingestor] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def bucket(self) -> str:
        return self.store.bucket

    def client(self) -> Minio:
        return Minio(self.s3.endpoint, access_key=self.s3.access_key, secret_key=self.s3.secret_key,
                     secure=self.s3.secure)

    def ingestor(self, *, lock_seconds: float = 0.0, **kw: Any) -> Ingestor:
        """An ingestor over these parts (one per distinct set of options, reused)."""
        key = (lock_seconds, *sorted(kw.items()))
        if key not in self._ingestors:
            self._ingestors[key] = Ingestor(store=self.store, index=self.index, keyring=self.keyring,
                                            spool=self.spool, node_id="test", lock_seconds=lock_seconds, **kw)
        return self._ingestors[key]

    async def put_segments(
        self, camera: str, start_ms: int, ns, *, payload: Callable[[int], bytes],
        closed_ms: Callable[[int, int], int] | None = None, ingestor: Ingestor | None = None,
        on_stored: Callable[[SegmentRow], Awaitable[None]] | None = None,
    ) -> list[SegmentRow]:
        """Segments number ``n`` for each n in ``ns`` (start ``start_ms + n * SEG_MS``), spooled and ingested.

        ``payload(n)`` gives the bytes; ``closed_ms(n, end_ms)`` when the segment was closed (default: its end).
        """
        run = f"r{start_ms:013d}"
        ing = ingestor or self.ingestor()
        rows = []
        for n in ns:
            s, e = start_ms + n * SEG_MS, start_ms + (n + 1) * SEG_MS
            seg = ClosedSegment(camera=camera, file=f"{run}-{n:06d}.mp4", run=run, n=n, start_ms=s, end_ms=e,
                                partial=False, closed_ms=closed_ms(n, e) if closed_ms else e)
            self.spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
            self.spool.path(seg).write_bytes(payload(n))
            self.spool.write_ticket(seg)
            row = await ing.ingest(seg)
            if on_stored is not None:
                await on_stored(row)
            rows.append(row)
        return rows

    def reopen_index(self) -> Index:
        """Close and reopen the index file (as a restart would); ingestors made here follow."""
        self.index.close()
        self.index = indexdb.open_index(self.data_dir)
        for ing in self._ingestors.values():
            ing.index = self.index
        return self.index

    def reopen_index_copy(self) -> Index:
        """A second index on the same database, as another process would open it (the caller closes it)."""
        return indexdb.open_index(self.data_dir)

    def close(self) -> None:
        self.index.close()
        self.store.close()


def open_parts(tmp: Path, s3: S3Endpoint, bucket: str, *, object_lock: bool = False) -> StorageParts:
    """A fresh bucket and a data dir's index, keyring and spool under ``tmp / "data"``."""
    store = ObjectStore(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket,
                        object_lock=object_lock)
    store.ensure_bucket()
    data = tmp / "data"
    return StorageParts(tmp, s3, store, indexdb.open_index(data), Keyring.open(data / "keyring"),
                        Spool(data / "spool"))
