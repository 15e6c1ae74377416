"""The ingest pipeline against real S3: a crash at each step, re-run, gives exactly one object, row and record."""

from __future__ import annotations

import hashlib
import os

import pytest

from nvr.ingest.pipeline import ChainConflict, Ingestor, object_key
from storage.ledger import verify_chain
from storage.objectstore import ObjectStore
from storage.retrieve import open_segment
from storage.spool import ClosedSegment, Spool

pytestmark = pytest.mark.integration

T0 = 1_764_421_200_000


class Crash(Exception):
    """Stands for the process dying at this point."""


def spool_segment(spool: Spool, camera: str, n: int, payload: bytes | None = None) -> ClosedSegment:
    seg = ClosedSegment(camera=camera, file=f"r{T0:013d}-{n:06d}.mp4", run=f"r{T0:013d}", n=n,
                        start_ms=T0 + n * 2000, end_ms=T0 + (n + 1) * 2000, partial=False, closed_ms=T0)
    spool.path(seg).parent.mkdir(parents=True, exist_ok=True)
    spool.path(seg).write_bytes(payload if payload is not None else os.urandom(3000) + bytes([n]))
    spool.write_ticket(seg)
    return seg


def versions(store: ObjectStore, prefix: str) -> list:
    return list(store.client.list_objects(store.bucket, prefix=prefix, recursive=True, include_version=True))


@pytest.mark.parametrize("crash_at", ["put", "index", "spool_remove"])
async def test_crash_at_any_step_then_rerun_gives_exactly_one_of_each(storage_parts, crash_at, monkeypatch):
    ing = storage_parts.ingestor()
    first = spool_segment(ing.spool, "cam", 0)
    await ing.ingest(first)
    seg = spool_segment(ing.spool, "cam", 1)

    target = {"put": (ing.store, "put"), "index": (ing.index, "insert_segment"),
              "spool_remove": (ing.spool, "remove")}[crash_at]
    real = getattr(*target)

    def crash_after(*a, **kw):
        real(*a, **kw)  # the step completes, then the process "dies"
        raise Crash(crash_at)

    monkeypatch.setattr(*target, crash_after)
    with pytest.raises(Crash):
        await ing.ingest(seg)
    monkeypatch.setattr(*target, real)

    # Restart: the ticket is still in the spool, so the lane re-runs the whole job.
    left = ing.spool.next_ticket("cam")
    if crash_at != "spool_remove":
        assert left == seg
    if left is not None:
        await ing.ingest(left)
    rows = ing.index.segments("cam")
    assert [r.seq for r in rows] == [0, 1]
    assert len(versions(ing.store, "cam/")) == 2
    assert verify_chain("cam", ing.index.ledger_records("cam")) == []
    assert ing.spool.next_ticket("cam") is None and not ing.spool.path(seg).exists()
    plain = await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, rows[1])
    assert hashlib.sha256(plain).hexdigest() == rows[1].sha256


async def test_head_only_for_tickets_an_earlier_process_or_attempt_wrote(storage_parts, monkeypatch):
    ing = storage_parts.ingestor()
    heads = []
    real_stat = ing.store.stat
    monkeypatch.setattr(ing.store, "stat", lambda key, *a: heads.append(key) or real_stat(key, *a))

    fresh = await ing.ingest(spool_segment(ing.spool, "cam", 0))
    assert heads == []  # written by this process, first attempt: nothing can be in S3 under its key

    left = spool_segment(ing.spool, "cam", 1)
    # The next process: same spool directory, index and bucket, but it did not write this ticket.
    restarted = Ingestor(store=ing.store, index=ing.index, keyring=ing.keyring, spool=Spool(ing.spool.root),
                         node_id="test")
    row = await restarted.ingest(left)
    assert heads == [row.object_key]

    # A retry in the same process HEADs too: the failed attempt's PUT may have landed.
    retry = spool_segment(ing.spool, "cam", 2)
    real_put, puts = ing.store.put, []

    def put_then_fail(*a, **kw):
        puts.append(a[0])
        real_put(*a, **kw)
        raise Crash("connection reset after the body was sent")

    monkeypatch.setattr(ing.store, "put", put_then_fail)
    with pytest.raises(Crash):
        await ing.ingest(retry)
    monkeypatch.setattr(ing.store, "put", lambda *a, **kw: puts.append(a[0]) or real_put(*a, **kw))
    again = await ing.ingest(retry)
    assert heads == [row.object_key, again.object_key]
    assert puts == [again.object_key]  # the landed PUT was found and reused, not repeated
    assert [r.seq for r in ing.index.segments("cam")] == [fresh.seq, row.seq, again.seq] == [0, 1, 2]


async def test_a_put_whose_index_commit_never_happened_is_stored_again_where_the_chain_is_now(
        storage_parts, monkeypatch):
    # A node cut off from its index after the PUT: meanwhile the chain went on (another node's segment).
    ing, events = storage_parts.ingestor(), []

    async def sink(kind, target, details):
        events.append((kind, target, details))

    ing.on_event = sink
    await ing.ingest(spool_segment(ing.spool, "cam", 0))
    late = spool_segment(ing.spool, "cam", 1)
    real_insert = ing.index.insert_segment

    def cut_off(*a, **kw):
        raise Crash("the index stopped answering")

    monkeypatch.setattr(ing.index, "insert_segment", cut_off)
    with pytest.raises(Crash):
        await ing.ingest(late)
    monkeypatch.setattr(ing.index, "insert_segment", real_insert)
    stale = versions(ing.store, object_key(late))
    assert len(stale) == 1
    took_its_seq = await ing.ingest(spool_segment(ing.spool, "cam", 2))
    assert took_its_seq.seq == 1

    row = await ing.ingest(late)
    assert row.seq == 2
    assert verify_chain("cam", ing.index.ledger_records("cam")) == []
    plain = await ing.store.run(open_segment, ing.store, ing.index, ing.keyring, row)
    assert hashlib.sha256(plain).hexdigest() == row.sha256
    # The bucket here keeps no versions ("null"): the stale record was overwritten; a versioned one keeps both.
    assert [(k, d["seq"], d["seq_now"], d["object_key"]) for k, _, d in events if k == "segment.rechained"] == [
        ("segment.rechained", 1, 2, row.object_key)]
    assert (await ing.store.run(ing.store.stat, row.object_key)).record["seq"] == 2


async def test_an_object_with_other_bytes_under_the_key_is_a_conflict(storage_parts, monkeypatch):
    ing = storage_parts.ingestor()
    seg = spool_segment(ing.spool, "cam", 0)
    monkeypatch.setattr(ing.index, "insert_segment", lambda *a, **kw: (_ for _ in ()).throw(Crash("cut")))
    with pytest.raises(Crash):
        await ing.ingest(seg)
    monkeypatch.undo()
    ing.spool.path(seg).write_bytes(b"other bytes" * 300)  # not what was stored under its key
    with pytest.raises(ChainConflict, match="other bytes"):
        await ing.ingest(seg)
    assert ing.index.segments("cam") == [] and ing.spool.next_ticket("cam") == seg
