"""The lease protocol's statements (storage/index/cluster.py) against the real databases: both backends."""

from __future__ import annotations

import pytest

from storage.index.cluster import Fenced, NodeEvicted
from storage.ledger import GENESIS
from tests.support import indexdb

TTL = 5_000


@pytest.fixture
def index(index_backend, tmp_path):
    idx = indexdb.open_index(tmp_path)
    yield idx
    idx.close()


def join(index, node, instance="i1", **kw):
    return index.cluster.join(node_id=node, instance=instance, address=f"http://{node}", capacity=10,
                              version="t", keks={"k1": "c1"}, stale_ms=kw.get("stale_ms", TTL))


def camera(index, cid, *, enabled=True, priority=0):
    index.put_camera(cid, {"id": cid, "url": "lavfi:testsrc", "enabled": enabled, "priority": priority},
                     source="api")


def segment(camera_id, seq, prev, *, epoch, node, start="2026-12-01T10:00:00Z", end="2026-12-01T10:00:02Z"):
    return {"v": 1, "type": "segment", "camera": camera_id, "seq": seq, "prev": prev, "start": start, "end": end,
            "partial": False, "size": 1, "sha256": "0" * 64, "object_key": f"{camera_id}/{seq}.seg",
            "object_size": 1, "object_sha256": "0" * 64, "key_id": "k", "node": node, "epoch": epoch}


def test_claims_follow_priority_and_each_claim_is_a_new_epoch(index):
    for cid, prio in (("a", 0), ("b", 5), ("c", 0)):
        camera(index, cid, priority=prio)
    camera(index, "off", enabled=False)
    join(index, "n1")
    got = index.cluster.claim(node_id="n1", ttl_ms=TTL, limit=2)
    assert [(c.camera, c.epoch, c.previous_node) for c in got] == [("b", 1, None), ("a", 1, None)]
    assert index.cluster.claim(node_id="n2", ttl_ms=TTL, limit=5)[0].camera == "c"  # a and b are held
    assert index.cluster.claim(node_id="n2", ttl_ms=TTL, limit=5) == []  # "off" is never claimed
    tick = index.cluster.tick(node_id="n1", instance="i1", ttl_ms=TTL)
    assert tick.held == {"a": 1, "b": 1}
    assert index.cluster.release(node_id="n1", cameras=[("a", 1)]) == 1
    assert index.cluster.tick(node_id="n1", instance="i1", ttl_ms=TTL).held == {"b": 1}
    again = index.cluster.claim(node_id="n2", ttl_ms=TTL, limit=5)
    assert [(c.camera, c.epoch, c.previous_node) for c in again] == [("a", 2, "n1")]
    (e1, n1, _, ended1), (e2, n2, _, ended2) = index.cluster.epochs("a")
    assert (e1, n1, e2, n2) == (1, "n1", 2, "n2") and ended1 is not None and ended2 is None


def test_an_expired_lease_is_not_renewed_and_goes_to_whoever_claims_it(index):
    camera(index, "a")
    join(index, "n1")
    index.cluster.claim(node_id="n1", ttl_ms=1, limit=1)
    now = index.cluster.now_ms()
    while index.cluster.now_ms() < now + 5:
        pass
    assert index.cluster.tick(node_id="n1", instance="i1", ttl_ms=TTL).held == {}
    assert [c.epoch for c in index.cluster.claim(node_id="n2", ttl_ms=TTL, limit=1)] == [2]


def test_disabling_a_camera_ends_its_renewal(index):
    camera(index, "a")
    join(index, "n1")
    index.cluster.claim(node_id="n1", ttl_ms=TTL, limit=1)
    camera(index, "a", enabled=False)
    assert index.cluster.tick(node_id="n1", instance="i1", ttl_ms=TTL).held == {}
    camera(index, "a")
    index.delete_camera("a")
    assert index.cluster.claim(node_id="n1", ttl_ms=TTL, limit=1) == []


def test_one_node_id_runs_once(index):
    join(index, "n1", "first")
    with pytest.raises(NodeEvicted):
        join(index, "n1", "second")
    join(index, "n1", "second", stale_ms=0)  # the first stopped heartbeating (killed): taken over
    with pytest.raises(NodeEvicted):
        index.cluster.tick(node_id="n1", instance="first", ttl_ms=TTL)


def test_the_index_refuses_an_append_under_a_stale_or_foreign_epoch(index):
    camera(index, "a")
    join(index, "n1")
    (c,) = index.cluster.claim(node_id="n1", ttl_ms=TTL, limit=1)
    rec = segment("a", 0, GENESIS, epoch=c.epoch, node="n1")
    row = index.insert_segment(rec, version_id=None)
    with pytest.raises(Fenced, match="belongs to node n1"):
        index.insert_segment(segment("a", 1, row.record_hash, epoch=c.epoch, node="n2"), version_id=None)
    with pytest.raises(Fenced, match="never granted"):
        index.insert_segment(segment("a", 1, row.record_hash, epoch=9, node="n1"), version_id=None)
    index.cluster.release(node_id="n1", cameras=[("a", c.epoch)])
    # A segment begun before the epoch ended still lands (a returning node's spool); one after, never.
    late = segment("a", 1, row.record_hash, epoch=c.epoch, node="n1", start="2026-12-01T10:00:02Z",
                   end="2026-12-01T10:00:04Z")
    row2 = index.insert_segment(late, version_id=None)
    after = segment("a", 2, row2.record_hash, epoch=c.epoch, node="n1", start="2099-01-01T00:00:00Z",
                    end="2099-01-01T00:00:02Z")
    with pytest.raises(Fenced, match="after lease epoch 1 of node n1 ended"):
        index.insert_segment(after, version_id=None)
    assert index.cluster.fence_problem(after, 0) is not None
    no_epoch = dict(after)
    del no_epoch["epoch"]
    index.insert_segment(no_epoch, version_id=None)  # a single node's record carries none: not fenced


def test_one_node_holds_a_job_at_a_time(index):
    assert index.cluster.hold_job(name="retention", node_id="n1", ttl_ms=TTL)
    assert not index.cluster.hold_job(name="retention", node_id="n2", ttl_ms=TTL)
    assert index.cluster.hold_job(name="retention", node_id="n1", ttl_ms=TTL)  # renewed
    join(index, "n1")
    index.cluster.leave(node_id="n1", instance="i1")
    assert index.cluster.hold_job(name="retention", node_id="n2", ttl_ms=TTL)  # left: free at once


def test_leaving_releases_every_lease_and_wakes_nobody_stale(index):
    for cid in "abc":
        camera(index, cid)
    join(index, "n1")
    index.cluster.claim(node_id="n1", ttl_ms=TTL, limit=3)
    index.cluster.leave(node_id="n1", instance="i1")
    assert [c.camera for c in index.cluster.claim(node_id="n2", ttl_ms=TTL, limit=3)] == ["a", "b", "c"]
    assert {n.id: n.state for n in index.cluster.nodes()} == {"n1": "left"}
    assert index.cluster.live_capacity(TTL) == []


def test_a_migrated_index_has_a_lease_row_per_registered_camera(index):
    camera(index, "a")
    assert [(r.camera, r.enabled, r.epoch) for r in index.cluster.leases()] == [("a", True, 0)]
