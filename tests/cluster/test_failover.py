"""A recording cluster for real: several `nvr serve` processes, one PostgreSQL index, one bucket, RTSP cameras.

The nodes share one cluster for the module (three nodes, six cameras); every
test first brings it back to three balanced nodes, does its fault, and checks
what the stored segments say: who recorded each one (its ledger record's node
and epoch) and when. A short lease TTL (6 s, renewed every 2 s) and 2-s
segments keep the whole file within a few minutes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nvr.base.times import ms_to_rfc3339
from tests.support.checks import cli
from tests.support.cluster import Cluster, Seg

pytestmark = pytest.mark.integration

TTL = 6.0
INTERVAL = TTL / 3  # each node looks at the leases this often (renewal period)
SEGMENT = 2  # seconds per segment
SEGMENT_MS = SEGMENT * 1000
# From a claim to the new node's first segment start: spawning ffmpeg and its first frame, on a
# 2-core machine running three nodes (a camera's RTSP handshake would add ~1 s).
FFMPEG_START = 3.0
# Two runs' segment times are each the wall clock at their own cut: a few ms apart at most.
OVERLAP_MS = 10
CAMERAS = tuple(f"cam{i}" for i in range(1, 7))
# Synthetic sources, one per recorder: the RTSP simulator's clip mounts are shared and seekable, so a
# second client's PLAY restarts the mount for every client and ends the first one's ffmpeg, which
# would hide exactly the double recording the partition test looks for. (And six of them are cheap.)
SOURCE = "lavfi:testsrc=size=160x120:rate=10"
BASE = ("node-a", "node-b", "node-c")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres, s3):
    c = Cluster(tmp_path_factory.mktemp("cluster"), postgres, s3, f"cl{os.getpid()}-1",
                dict.fromkeys(CAMERAS, SOURCE), ttl=TTL, segment_seconds=SEGMENT)
    try:
        c.start(*BASE)
        yield c
    finally:
        c.close()


def recording_under_lease(c: Cluster) -> dict[str, tuple[str, int]] | None:
    """The live leases, once every camera has a stored segment of its current holder under its current epoch."""
    leases = c.leases()
    if set(leases) != set(CAMERAS):
        return None
    for camera, (node, epoch) in leases.items():
        if not any(s.node == node and s.epoch == epoch for s in c.segments(camera)):
            return None
    return leases


def balanced(c: Cluster, timeout: float = 90) -> dict[str, tuple[str, int]]:
    """Three base nodes up, two cameras each, each recording (the state every test starts from)."""
    for n in c.running():
        if n.id not in BASE:
            n.terminate()
    down = [i for i in BASE if not c.node(i).running]
    if down:
        c.start(*down)

    def even() -> dict[str, tuple[str, int]] | None:
        held = c.held()
        if sorted(held) != list(BASE) or any(len(v) != 2 for v in held.values()):
            return None
        return recording_under_lease(c)

    return c.wait(even, timeout=timeout, what="three nodes holding two recording cameras each")


def new_segment_by_other(c: Cluster, camera: str, node: str, after_epoch: int) -> Seg | None:
    """``camera``'s first stored segment recorded by another node than ``node`` under a later epoch."""
    return next((s for s in c.segments(camera) if s.node != node and (s.epoch or 0) > after_epoch), None)


def overlaps(c: Cluster) -> list[str]:
    """Pairs of stored segments of one camera, recorded under different (node, epoch), overlapping in time."""
    return c.overlaps(CAMERAS, OVERLAP_MS)


# ---------------------------------------------------------------------- 1. balance


def test_three_nodes_record_two_cameras_each(cluster):
    leases = balanced(cluster)
    assert {n: len(cams) for n, cams in cluster.held().items()} == dict.fromkeys(BASE, 2)
    for camera, (node, epoch) in leases.items():
        mine = [s for s in cluster.segments(camera) if s.epoch == epoch]
        assert mine and {s.node for s in mine} == {node}, f"{camera}: epoch {epoch} is {node}'s, segments {mine}"
        assert cluster.epochs(camera)[epoch][0] == node
    assert not overlaps(cluster)


# ---------------------------------------------------------------------- 2. kill -9


def test_a_killed_nodes_cameras_are_recorded_elsewhere_within_the_ttl(cluster):
    leases = balanced(cluster)
    victim = cluster.node("node-b")
    theirs = {cam: epoch for cam, (node, epoch) in leases.items() if node == victim.id}
    killed_ms = victim.kill()

    def taken_over() -> dict[str, Seg] | None:
        got = {cam: new_segment_by_other(cluster, cam, victim.id, epoch) for cam, epoch in theirs.items()}
        return got if all(got.values()) else None

    first = cluster.wait(taken_over, timeout=45, what=f"{sorted(theirs)} recorded by another node")
    # The lease lapses at most TTL after the kill (its last renewal came before it); a survivor claims
    # it at its next look (every TTL/3 = one segment here); then ffmpeg starts (FFMPEG_START).
    bound_ms = (TTL + INTERVAL + FFMPEG_START) * 1000
    late = {cam: s.start_ms - killed_ms for cam, s in first.items() if s.start_ms - killed_ms > bound_ms}
    assert not late, f"recording resumed more than {bound_ms} ms after the kill (ms): {late}\n{cluster.tails()}"
    for cam, epoch in theirs.items():
        node, _, ended = cluster.epochs(cam)[epoch]
        assert node == victim.id and ended is not None and ended <= killed_ms + TTL * 1000 + 500, (cam, ended)
    survivors = cluster.wait(lambda: (h := cluster.held()) and sorted(h) == ["node-a", "node-c"] and h,
                             timeout=30, what="the survivors holding every camera")
    assert {n: len(cams) for n, cams in survivors.items()} == {"node-a": 3, "node-c": 3}


# ---------------------------------------------------------------------- 3. graceful stop


def test_a_stopped_nodes_cameras_move_with_no_gap_beyond_one_segment(cluster):
    leases = balanced(cluster)
    victim = cluster.node("node-c")
    theirs = {cam: epoch for cam, (node, epoch) in leases.items() if node == victim.id}
    code, took = victim.terminate()
    assert code == 0, victim.tail()
    assert took < 15, f"stop took {took:.1f} s\n{victim.tail()}"
    # Graceful: every segment it recorded landed before it exited, none waits in its spool.
    assert {cam: victim.spooled(cam) for cam in theirs} == dict.fromkeys(theirs, 0), victim.tail()

    def moved() -> dict[str, Seg] | None:
        got = {cam: new_segment_by_other(cluster, cam, victim.id, epoch) for cam, epoch in theirs.items()}
        return got if all(got.values()) else None

    first = cluster.wait(moved, timeout=30, what=f"{sorted(theirs)} recorded by another node")
    holes = {}
    for cam, epoch in theirs.items():
        last_old = max((s for s in cluster.segments(cam) if s.epoch == epoch), key=lambda s: s.end_ms)
        holes[cam] = first[cam].start_ms - last_old.end_ms
    assert all(-OVERLAP_MS <= h <= SEGMENT_MS for h in holes.values()), (
        f"holes between the stopped node's last segment and the next node's first (ms): {holes}\n{cluster.tails()}")
    assert not overlaps(cluster)


# ---------------------------------------------------------------------- 4. cut off from the index


def test_a_node_cut_off_from_the_index_stops_before_its_lease_expires_and_no_camera_is_recorded_twice(cluster):
    leases = balanced(cluster)
    victim = cluster.node("node-a")
    theirs = {cam: epoch for cam, (node, epoch) in leases.items() if node == victim.id}
    victim.cut_index()
    try:
        cluster.wait(lambda: any("can't renew camera leases" in a for a in (victim.healthz() or {}).get("alarms", [])),
                     timeout=20, what=f"{victim.id}'s alarm about its lease renewal")

        def taken_over() -> dict[str, Seg] | None:
            got = {cam: new_segment_by_other(cluster, cam, victim.id, epoch) for cam, epoch in theirs.items()}
            return got if all(got.values()) else None

        cluster.wait(taken_over, timeout=40, what=f"{sorted(theirs)} recorded by another node")
    finally:
        victim.heal_index()
    # Back on the index: what it recorded before it stopped lands, and it takes its share again.
    cluster.wait(lambda: all(victim.spooled(cam, epoch) == 0 for cam, epoch in theirs.items()), timeout=60,
                 what=f"{victim.id}'s spooled segments to land")
    balanced(cluster)
    for cam, epoch in theirs.items():
        node, _, ended = cluster.epochs(cam)[epoch]
        assert node == victim.id and ended is not None
        mine = [s for s in cluster.segments(cam) if s.epoch == epoch]
        assert mine, f"{cam}: nothing stored under {victim.id}'s epoch {epoch}"
        last_end = max(s.end_ms for s in mine)
        assert last_end <= ended, (f"{cam}: {victim.id} recorded until {last_end}, {last_end - ended} ms past its "
                                   f"lease's end {ended}\n{victim.tail()}")
    fenced = [p for n in cluster.nodes.values() for p in n.fenced()]
    assert not fenced, f"segments recorded past a lease and refused by the fence: {fenced}"
    assert not overlaps(cluster), overlaps(cluster)


# ---------------------------------------------------------------------- 5. kill -9 and restart


def test_a_killed_node_restarted_lands_its_spool_under_its_old_epochs_and_every_camera_verifies(cluster):
    leases = balanced(cluster)
    victim = cluster.node("node-c")
    theirs = {cam: epoch for cam, (node, epoch) in leases.items() if node == victim.id}
    # S3 hangs for it alone: its closed segments wait in its spool, then it dies with them there.
    victim.cut_s3()
    waiting = cluster.wait(lambda: (t := {cam: victim.tickets(cam) for cam in theirs}) and min(t.values()) >= 2 and t,
                           timeout=30, what=f"segments of {sorted(theirs)} waiting in {victim.id}'s spool")
    victim.kill()
    victim.heal_s3()
    spooled = {cam: victim.spooled(cam) for cam in theirs}
    assert all(spooled[cam] >= waiting[cam] for cam in theirs), (spooled, waiting)

    def taken_over() -> dict[str, Seg] | None:
        got = {cam: new_segment_by_other(cluster, cam, victim.id, epoch) for cam, epoch in theirs.items()}
        return got if all(got.values()) else None

    first = cluster.wait(taken_over, timeout=45, what=f"{sorted(theirs)} recorded by another node")
    cluster.start(victim.id)
    cluster.wait(lambda: all(victim.spooled(cam, epoch) == 0 for cam, epoch in theirs.items()), timeout=60,
                 what=f"{victim.id}'s spool of its old epochs to empty after its restart")
    for cam, epoch in theirs.items():
        old = [s for s in cluster.segments(cam) if s.epoch == epoch]
        assert {s.node for s in old} == {victim.id}
        # Its spool (the closed segments and the one in flight at the kill) landed under the old epoch,
        # after the segments of the node that took the camera over: late records, higher seqs.
        late = [s for s in old if s.seq > first[cam].seq]
        assert len(late) >= waiting[cam], f"{cam}: {len(late)} late segment(s) of epoch {epoch}, {waiting[cam]} spooled"
        assert any(s.partial for s in late), f"{cam}: the segment in flight at the kill did not land"
    assert not [p for n in cluster.nodes.values() for p in n.fenced()]
    balanced(cluster)
    assert not overlaps(cluster), overlaps(cluster)

    # `nvr verify` over the whole run, once a checkpoint covers every camera's chain as it is now.
    heads = {cam: max(s.seq for s in cluster.segments(cam)) for cam in CAMERAS}
    cluster.wait(lambda: all((cluster.index.latest_checkpoint_seq(cam) or -1) >= heads[cam] for cam in CAMERAS),
                 timeout=30, what="checkpoints covering every camera's chain")
    spans = {cam: (min(s.start_ms for s in segs), max(s.end_ms for s in segs if s.seq <= heads[cam]))
             for cam in CAMERAS if (segs := cluster.segments(cam))}
    config = str(cluster.node("node-a").config)

    def verify(cam: str):
        start, end = spans[cam]
        return cam, cli("verify", "--camera", cam, "--start", ms_to_rfc3339(start - 1000), "--end",
                        ms_to_rfc3339(end), "--config", config)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(verify, CAMERAS))
    failed = {cam: p.stdout[-1500:] + p.stderr[-1500:] for cam, p in results if p.returncode != 0}
    assert not failed, failed


# ---------------------------------------------------------------------- 6. a node joins


def test_a_joining_node_takes_its_fair_share(cluster):
    balanced(cluster)
    t0 = time.monotonic()
    (joiner,) = cluster.start("node-d")
    try:
        # Six cameras over four nodes: one each, the remainder to the first ids.
        want = {"node-a": 2, "node-b": 2, "node-c": 1, "node-d": 1}

        def rebalanced() -> dict[str, tuple[str, int]] | None:
            if {n: len(cams) for n, cams in cluster.held().items()} != want:
                return None
            return recording_under_lease(cluster)

        leases = cluster.wait(rebalanced, timeout=60, what=f"the cameras spread as {want}")
        took = time.monotonic() - t0
        (cam,) = [c for c, (n, _) in leases.items() if n == joiner.id]
        assert any(s.node == joiner.id for s in cluster.segments(cam))
        assert took < 30, f"rebalancing took {took:.1f} s\n{cluster.tails()}"
        assert not overlaps(cluster), overlaps(cluster)
    finally:
        joiner.terminate()
