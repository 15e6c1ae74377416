"""Before a camera's chain grows: is the index's chain head really the bucket's? (Never fork a chain.)

An index that is missing, empty or an old copy while the bucket holds footage
would make ingest append records that the bucket already has under the same
``seq`` with other content: a second chain. This check compares, per camera,
what the index knows with what the bucket holds beyond it:

* a checkpoint newer than the index's newest one (``ledger/<camera>/<seq>.json``
  with a seq past the index's chain head), or
* a segment object newer than the index's newest object of the camera that is
  not the object of the segment next in the spool (an interrupted ingest
  leaves exactly such an object, and ingest step 6 reuses it).

Either means the bucket is ahead: the wiring rebuilds the index from the
bucket (``nvr reindex``) before any ledger writer starts. Each camera costs two
short LISTs, both starting after what the index knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nvr.base.ids import is_camera_id
from storage.index import Index
from storage.ledger import CHECKPOINT_KEY_RE, LEDGER_PREFIX
from storage.objectstore import ObjectStore
from storage.spool import ClosedSegment, Spool


@dataclass(frozen=True)
class ChainCheck:
    """What the index and the bucket know of one camera's chain."""

    camera: str
    index_seq: int  # the index's chain head (-1: no record)
    checkpoint_seq: int | None  # the bucket's newest checkpoint past the index's, if any
    unknown_object: str | None  # a segment object past the index's newest, not waiting in the spool

    @property
    def ahead(self) -> bool:
        """True when the bucket holds ledger state the index lacks."""
        return (self.checkpoint_seq is not None and self.checkpoint_seq > self.index_seq) or (
            self.unknown_object is not None)

    def describe(self) -> str:
        if self.checkpoint_seq is not None and self.checkpoint_seq > self.index_seq:
            return (f"camera {self.camera}: the bucket holds a checkpoint at seq {self.checkpoint_seq}, "
                    f"the index's chain ends at seq {self.index_seq}")
        if self.unknown_object is not None:
            return (f"camera {self.camera}: the bucket holds {self.unknown_object}, newer than every "
                    f"segment the index knows (chain head seq {self.index_seq})")
        return f"camera {self.camera}: the index and the bucket agree (chain head seq {self.index_seq})"


def bucket_cameras(store: ObjectStore) -> set[str]:
    """Cameras with objects in the bucket: its top-level prefixes, ``ledger/`` aside (blocking)."""
    out = set()
    for key in store.list_keys(""):
        name = key.rstrip("/")
        if key.endswith("/") and key != LEDGER_PREFIX and is_camera_id(name):
            out.add(name)
    return out


def check_camera(store: ObjectStore, index: Index, spool: Spool, camera: str,
                 object_key_of: Callable[[ClosedSegment], str]) -> ChainCheck:
    """Compare one camera's chain in the index with the bucket (blocking: SQL and two LISTs).

    ``object_key_of(segment)`` is ingest's deterministic object key of a spooled segment.
    """
    head = index.chain_head(camera)
    cp_prefix = f"{LEDGER_PREFIX}{camera}/"
    known_cp = index.latest_checkpoint_seq(camera)
    after = f"{cp_prefix}{known_cp:012d}.json" if known_cp is not None else None
    newest_cp = None
    for key in store.list_keys(cp_prefix, start_after=after):
        m = CHECKPOINT_KEY_RE.match(key)
        if m and m.group("camera") == camera:
            newest_cp = max(newest_cp or -1, int(m.group("seq")))
    # A lane ingests one ticket at a time, in order, so only the oldest ticket can have been stored
    # without its row (a crash between PUT and index, lifecycle step 8).
    oldest = spool.next_ticket(camera)
    waiting = {object_key_of(oldest)} if oldest is not None else set()
    unknown = None
    last = index.last_object_key(camera)
    for key in store.list_keys(f"{camera}/", recursive=True, start_after=last, limit=len(waiting) + 1):
        if key not in waiting:
            unknown = key
            break
    return ChainCheck(camera, head.seq, newest_cp, unknown)
