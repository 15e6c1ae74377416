"""A recording cluster of real ``nvr serve`` processes on one PostgreSQL index and one bucket.

Checked on what is stored (the ledger's records: which node recorded what, under which epoch,
when), never on the nodes' logs: kill -9 and graceful stops move cameras within their bounds,
a node cut off from PostgreSQL stops recording before its leases can expire, no two nodes ever
record one camera at once, a killed node's spool lands when it returns and ``nvr verify`` passes.
"""

from __future__ import annotations

import uuid

import pytest

from nvr.base.times import ms_to_rfc3339, now_ms
from tests.support.checks import cli
from tests.support.loopthread import LoopThread
from tests.support.nodes import Cluster
from tests.support.s3proxy import S3Proxy

TTL = 6.0
SEGMENT = 2.0
# ffmpeg's start and the first segment's close after a claim: the lavfi source is up in well under this.
START_ALLOWANCE = 4.0
# Real-time RTSP cameras (the simulator): a synthetic lavfi source runs ahead of the wall clock when the
# machine is busy, and footage timed ahead of its lease is what the fence must refuse.
CAMERAS = [{"id": f"k{i}", "mount": f"cam{i + 1}"} for i in range(6)]


@pytest.fixture
def cluster(postgres, s3, rtsp, tmp_path):
    url = postgres.create_database()
    cameras = [{"id": x["id"], "url": rtsp.url(x["mount"])} for x in CAMERAS]
    c = Cluster(tmp_path, url, postgres.password_file, s3, f"cl{uuid.uuid4().hex[:16]}", cameras, ttl=TTL)
    try:
        yield c
    finally:
        c.close()
        postgres.drop_database(url)


def fair(c: Cluster, nodes: set[str], share: int) -> bool:
    held = c.holders()
    return len(held) == len(CAMERAS) and all(list(held.values()).count(n) == share for n in nodes)


def recorded_after(c: Cluster, camera: str, t_ms: int, by_other_than: str) -> bool:
    return any(s >= t_ms - SEGMENT * 1000 and node != by_other_than for s, _, node, _ in c.segments_by(camera))


def assert_never_two_at_once(c: Cluster) -> None:
    for cam in (x["id"] for x in CAMERAS):
        segs = c.segments_by(cam)
        for (_s1, e1, n1, ep1), (s2, _e2, n2, ep2) in zip(segs, segs[1:], strict=False):
            assert ep1 == ep2 or s2 >= e1 - 50, (
                f"{cam}: {n1} (epoch {ep1}) recorded until {ms_to_rfc3339(e1)}, {n2} (epoch {ep2}) from "
                f"{ms_to_rfc3339(s2)}: both at once")


def test_kill_stop_restart_and_join_move_cameras_within_their_bounds_and_lose_nothing(cluster):
    c = cluster
    for name in ("a", "b", "c"):
        c.add(name).start()
    c.wait(lambda: fair(c, {"a", "b", "c"}, 2), 60, "three nodes did not hold two cameras each")
    c.wait(lambda: all(len({n for _, _, n, _ in c.segments_by(x["id"])}) >= 1 for x in CAMERAS), 30,
           "not every camera recorded")

    # kill -9: each of c's cameras records elsewhere within one TTL and one segment (plus ffmpeg's start).
    mine = [cam for cam, n in c.holders().items() if n == "c"]
    c.wait(lambda: all(any(n == "c" for *_, n, _ in c.segments_by(cam)) for cam in mine), 30,
           "node c did not record its cameras")
    killed_at = now_ms()
    c.nodes["c"].kill()
    for cam in mine:
        c.wait(lambda cam=cam: recorded_after(c, cam, killed_at + int(SEGMENT * 1000), "c"),
               TTL + SEGMENT + START_ALLOWANCE + TTL / 3,
               f"camera {cam} of the killed node was not recorded elsewhere")
    assert set(c.holders().values()) == {"a", "b"}

    # SIGTERM: b drains; the hole in each of its cameras is at most one segment (plus ffmpeg's start).
    moving = [cam for cam, n in c.holders().items() if n == "b"]
    assert c.nodes["b"].stop() == 0, c.why()
    for cam in moving:
        c.wait(lambda cam=cam: any(n == "a" and s > e_b for s, _, n, _ in c.segments_by(cam)
                                   for e_b in [max(e for _, e, nb, _ in c.segments_by(cam) if nb == "b")]),
               30, f"camera {cam} of the stopped node did not move")
        segs = c.segments_by(cam)
        last_b = max(e for _, e, n, _ in segs if n == "b")
        first_a = min(s for s, _, n, _ in segs if n == "a" and s >= last_b)
        assert (first_a - last_b) / 1000 <= SEGMENT + START_ALLOWANCE, (cam, last_b, first_a)

    # The killed node returns: what it spooled lands under its old epochs, then it takes its share back.
    before = {x["id"]: sum(1 for *_, n, _ in c.segments_by(x["id"]) if n == "c") for x in CAMERAS}
    c.nodes["c"].start()
    c.wait(lambda: fair(c, {"a", "c"}, 3), 60, "the returning node did not take its share")
    c.wait(lambda: c.nodes["c"].spooled(before_ms=killed_at) == 0, 30, "the returning node's spool did not land")
    landed = {x["id"]: sum(1 for s, _, n, _ in c.segments_by(x["id"]) if n == "c" and s < killed_at) for x in CAMERAS}
    # Everything left the spool (above) and nothing recorded before the kill is missing or fenced; the
    # segment a camera was in when the node died lands as a partial (or, empty, is an audited loss).
    assert all(landed[cam] >= before[cam] >= 1 for cam in mine), (mine, before, landed)

    # A node joining: the cameras rebalance to two each.
    c.add("d").start()
    c.wait(lambda: fair(c, {"a", "c", "d"}, 2), 60, "cameras did not rebalance onto the joining node")
    assert_never_two_at_once(c)
    for name in ("a", "c", "d"):
        assert c.nodes[name].stop() == 0, c.why()
    end = ms_to_rfc3339(now_ms() + 1000)
    for x in CAMERAS:
        res = cli("verify", "--config", str(c.nodes["a"].config), "--camera", x["id"], "--start",
                  "2020-01-01T00:00:00Z", "--end", end)
        assert res.returncode in (0, 2), f"{x['id']}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
        assert "tampered" not in res.stdout and "lease_epoch" not in res.stdout, res.stdout[-2000:]


def test_a_node_cut_off_from_postgresql_stops_before_its_leases_expire(cluster, postgres):
    c = cluster
    loop = LoopThread("pg-proxy")
    proxy = S3Proxy(f"127.0.0.1:{postgres.port}")
    loop.run(proxy.start())
    try:
        cut_url = c.index_url.replace(f":{postgres.port}/", f":{proxy.port}/")
        c.add("a").start()
        c.add("b", index_url=cut_url).start()
        c.wait(lambda: fair(c, {"a", "b"}, 3), 60, "two nodes did not hold three cameras each")
        held_b = [cam for cam, n in c.holders().items() if n == "b"]
        cut_at = now_ms()
        proxy.mode = "hang"  # b's database stops answering: connections open, never a reply
        for cam in held_b:
            c.wait(lambda cam=cam: c.holders().get(cam) == "a", TTL * 3, f"{cam} did not fail over to a")
        c.wait(lambda: all(any(n == "a" and s > max((e for _, e, nb, _ in c.segments_by(cam) if nb == "b"), default=0)
                               for s, _, n, _ in c.segments_by(cam)) for cam in held_b), 30,
               "node a did not record b's cameras")
        proxy.mode = "pass"
        proxy.break_connections()
        # b is back: its segments from before the cut land, and none is from after its epochs ended.
        c.wait(lambda: c.nodes["b"].spooled(before_ms=cut_at) == 0, 60, "b's spool did not land after the cut")
        for cam in held_b:
            ended = {e: d for e, n, _, d in c.index.cluster.epochs(cam) if n == "b"}
            for s, _, n, ep in c.segments_by(cam):
                if n == "b" and ended.get(ep) is not None:
                    assert s < ended[ep], f"{cam}: b recorded from {ms_to_rfc3339(s)}, after its epoch {ep} ended"
        assert_never_two_at_once(c)
    finally:
        loop.run(proxy.stop())
        loop.close()
