"""9. cluster: failover time per camera over ``kill -9``s, and the control plane's cost at 1,000 cameras × 10 nodes.

* **Failover**: three ``nvr serve`` nodes (``tests/support/cluster.py``) over one
  PostgreSQL index and one bucket (the embedded SeaweedFS), six synthetic lavfi
  cameras (as in ``tests/cluster/test_failover.py``), the product's lease TTL
  (15 s) and 2-s segments. Each round waits until the three nodes hold two
  recording cameras each, waits a random 0–5 s (the renewal period, so the kill
  falls anywhere in it), kills a node with SIGKILL, waits until another node
  has stored a segment of each of its cameras, restarts it (it rejoins, lands
  its spool under its old epochs and takes its share back). Per camera:
  failover = start of the first segment another node recorded − end of the
  last segment the killed node recorded (read after its spool landed, so the
  segment the kill cut is counted). Also: the first new segment's start − the
  kill, and the footage lost at the kill (kill − that last end).
* **Control plane**: ten ``ClusterService`` instances in one child process, each
  with its own ``Index`` (connection pool, LISTEN connection), trust guard
  thread and watchdog, as ``nvr serve`` runs them, but with a stub camera
  registry (no ffmpeg: ``record``/``unrecord`` only note the camera) and a stub
  keyring (no signing keys to enroll), against one PostgreSQL with 1,000
  cameras in its catalog. All ten start at once; settle = until all 1,000
  leases are held, balanced = until each node holds its 100. Then, over a
  window (60 s quick), the child's CPU seconds per wall second ÷ 10 is the CPU
  per node; PostgreSQL's (the postmaster's process tree) ÷ 10 its cost per
  node; each round and each renewal is timed (p50/p99) by wrapping the
  service's own coroutines.

PostgreSQL runs with its own defaults (fsync, synchronous commit), as in
measurement 6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Mode,
    Row,
    fresh_dir,
    log,
    median,
    pct,
    print_rows,
    s3_server,
    save,
    tree_cpu,
)

TTL = 15.0  # the product default ([cluster] lease_ttl)
SEGMENT = 2  # seconds per segment
NODES = ("n1", "n2", "n3")
CAMERAS = tuple(f"cam{i}" for i in range(1, 7))
SOURCE = "lavfi:testsrc=size=160x120:rate=10"  # one synthetic source per recorder (see test_failover.py)

CP_NODES = 10
CP_CAMERAS = 1000
CP_CAPACITY = 120  # 10 × 120 ≥ 1,000 and 9 × 120 ≥ 1,000: every camera leased, one node may fail


# ---------------------------------------------------------------------- 1. failover


def _recording_balanced(c) -> dict[str, tuple[str, int]] | None:
    """The live leases once the three nodes hold two cameras each and each records under its lease."""
    held = c.held()
    if sorted(held) != list(NODES) or any(len(v) != len(CAMERAS) // len(NODES) for v in held.values()):
        return None
    leases = c.leases()
    for camera, (node, epoch) in leases.items():
        if not any(s.node == node and s.epoch == epoch for s in c.segments(camera)):
            return None
    return leases


def _overlaps(c) -> int:
    """Pairs of stored segments of one camera from different (node, epoch) overlapping by more than 10 ms."""
    return len(c.overlaps(CAMERAS, 10))


def failover(mode: Mode, work: Path, pg, s3) -> dict[str, Any]:
    from tests.support.cluster import Cluster

    target = mode.pick(quick=20, full=60, smoke=1)  # camera failovers
    budget = mode.pick(quick=15 * 60, full=60 * 60, smoke=5 * 60)  # seconds: stop killing after this
    c = Cluster(work / "cluster", pg, s3.endpoint, f"bench-cluster-{os.getpid()}", dict.fromkeys(CAMERAS, SOURCE),
                ttl=TTL, segment_seconds=SEGMENT)
    out: dict[str, Any] = {"ttl_s": TTL, "segment_s": SEGMENT, "nodes": len(NODES), "cameras": len(CAMERAS),
                           "kills": [], "failovers": []}
    started = time.monotonic()
    try:
        c.start(*NODES, timeout=90)
        k = 0
        while len(out["failovers"]) < target and (k == 0 or time.monotonic() - started < budget):
            t_bal = time.monotonic()
            leases = c.wait(lambda: _recording_balanced(c), timeout=180,
                            what="three nodes holding two recording cameras each")
            balance_s = time.monotonic() - t_bal
            time.sleep(random.uniform(0, TTL / 3))
            leases = c.leases()
            holders = sorted({n for n, _ in leases.values()})
            victim = c.node(holders[k % len(holders)])
            theirs = {cam: epoch for cam, (node, epoch) in leases.items() if node == victim.id}
            killed_ms = victim.kill()

            def taken_over(theirs=theirs, victim=victim):
                got = {}
                for cam, epoch in theirs.items():
                    got[cam] = next((s for s in c.segments(cam) if s.node != victim.id and (s.epoch or 0) > epoch),
                                    None)
                return got if all(got.values()) else None

            first = c.wait(taken_over, timeout=TTL * 3 + 30, what=f"{sorted(theirs)} recorded by another node")
            took_over_s = (max(s.start_ms for s in first.values()) - killed_ms) / 1000
            t_restart = time.monotonic()
            c.start(victim.id, timeout=TTL * 3 + 60)
            rejoin_s = time.monotonic() - t_restart
            c.wait(lambda theirs=theirs, victim=victim: all(victim.spooled(cam, e) == 0 for cam, e in theirs.items()),
                   timeout=90, what=f"{victim.id}'s spool of its old epochs to land")
            for cam, epoch in theirs.items():
                old = [s for s in c.segments(cam) if s.epoch == epoch and s.start_ms < killed_ms]
                last_end = max(s.end_ms for s in old) if old else None
                new = first[cam]
                f = {"kill": k, "camera": cam, "victim": victim.id, "epoch": epoch, "killed_ms": killed_ms,
                     "last_old_end_ms": last_end, "first_new_start_ms": new.start_ms, "new_node": new.node,
                     "new_epoch": new.epoch,
                     "failover_s": (new.start_ms - last_end) / 1000 if last_end is not None else None,
                     "resume_after_kill_s": (new.start_ms - killed_ms) / 1000,
                     "lost_at_kill_s": (killed_ms - last_end) / 1000 if last_end is not None else None}
                out["failovers"].append(f)
            fo = [f["failover_s"] for f in out["failovers"][-len(theirs):]]
            log(f"cluster: kill {k + 1}: {victim.id} held {sorted(theirs)}; failover "
                f"{', '.join(f'{x:.1f}' for x in fo if x is not None)} s; rejoined in {rejoin_s:.0f} s "
                f"(balanced after {balance_s:.0f} s)")
            out["kills"].append({"victim": victim.id, "cameras": sorted(theirs), "killed_ms": killed_ms,
                                 "balance_wait_s": balance_s, "last_takeover_after_kill_s": took_over_s,
                                 "rejoin_s": rejoin_s})
            k += 1
        out["overlaps"] = _overlaps(c)
        out["fenced"] = sum(len(n.fenced()) for n in c.nodes.values())
        out["wall_s"] = time.monotonic() - started
    finally:
        c.close()
    return out


# ---------------------------------------------------------------------- 2. control plane (the child process)


class _Supervisor:
    def __init__(self):
        self.rec: dict[str, int | None] = {}

    def pids(self) -> list[int]:
        return []

    def recording(self) -> dict[str, int | None]:
        return dict(self.rec)


class _Registry:
    """What ClusterService asks of the camera registry, with no recorder behind it."""

    def __init__(self, cameras: list[str]):
        from types import SimpleNamespace

        self.supervisor = _Supervisor()
        self._all = [SimpleNamespace(id=c, priority=0) for c in cameras]

    async def record(self, camera: str, epoch: int) -> bool:
        self.supervisor.rec[camera] = epoch
        return True

    async def unrecord(self, camera: str, *, grace: float | None = None) -> None:
        self.supervisor.rec.pop(camera, None)

    async def refresh(self) -> list[str]:
        return []

    def all(self):
        return list(self._all)


class _Keyring:
    """No signing keys to enroll; every node has the same KEK."""

    signing_keys: list = []

    def kek_checks(self) -> dict[str, str]:
        return {"bench": "same"}


async def _control_plane(url: str, password_file: Path, nodes: int, cameras: int, window: float) -> dict[str, Any]:
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    from nvr.cluster import ClusterService, ClusterSettings
    from storage.index import Index

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(64, thread_name_prefix="nvr-io"))
    catalog = Index(url, password_file=password_file)
    ids = [f"c{i:04d}" for i in range(cameras)]
    t = time.monotonic()
    for cid in ids:
        catalog.put_camera(cid, {"id": cid, "url": f"rtsp://192.0.2.1:554/{cid}"}, source="api")
    catalog_s = time.monotonic() - t
    catalog.close()

    rounds: list[float] = []
    renewals: list[float] = []
    measuring = False
    services: list[ClusterService] = []
    for i in range(nodes):
        svc = ClusterService(index=Index(url, password_file=password_file, migrate_schema=False),
                             settings=ClusterSettings(node_id=f"node{i:02d}", address=f"http://127.0.0.1:{9000 + i}",
                                                      capacity=CP_CAPACITY, ttl=TTL, max_clock_skew=2.0,
                                                      version="bench"),
                             keyring=_Keyring(), store=None)
        reg = _Registry(ids)
        svc.registry = reg
        svc.on_catalog_change = reg.refresh

        def timed(fn, into):
            async def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    if measuring:
                        into.append(time.perf_counter() - t0)
            return wrapper

        svc.round = timed(svc.round, rounds)
        svc._renew = timed(svc._renew, renewals)
        services.append(svc)

    async def forever(name: str, make) -> None:  # what the server's task owner does: restart what raises
        while True:
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported, then restarted
                print(f"{name}: {e!r}", file=sys.stderr, flush=True)
                await asyncio.sleep(1)

    t0 = time.monotonic()
    await asyncio.gather(*(s.join() for s in services))
    tasks = []
    for s in services:
        tasks += [asyncio.create_task(forever("listen", s.listen_forever)),
                  asyncio.create_task(forever("leases", s.run)),
                  asyncio.create_task(forever("watchdog", s.watchdog))]
        s.start_guard()
    joined_s = time.monotonic() - t0
    settled_s = balanced_s = None
    share = cameras // nodes
    while time.monotonic() - t0 < 300:
        held = [len(s.held) for s in services]
        if settled_s is None and sum(held) >= cameras:
            settled_s = time.monotonic() - t0
        if sum(held) == cameras and all(h == share for h in held):
            balanced_s = time.monotonic() - t0
            break
        await asyncio.sleep(0.05)
    if balanced_s is None:
        raise RuntimeError(f"not balanced after 300 s: held {[len(s.held) for s in services]}")
    # Let the releases and their NOTIFY wake-ups of the settling die down: one TTL.
    await asyncio.sleep(TTL)
    before = {k: sum(s.counters[k] for s in services) for k in ("claims", "handovers", "releases", "losses",
                                                               "renew_failures")}
    me = psutil.Process()
    measuring = True
    c0, w0 = me.cpu_times(), time.monotonic()
    print("WINDOW START", flush=True)  # the parent samples PostgreSQL's CPU from here ...
    await asyncio.sleep(window)
    c1, w1 = me.cpu_times(), time.monotonic()
    threads = me.num_threads()
    print("WINDOW END", flush=True)  # ... to here
    measuring = False
    after = {k: sum(s.counters[k] for s in services) for k in before}
    held = [len(s.held) for s in services]
    for task in tasks:
        task.cancel()
    for s in services:
        await s.stop_guard()
        await s.stop_listening()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.5)  # the LISTEN threads notice the stop within a second
    for s in services:
        with contextlib.suppress(Exception):
            s.index.close()
    wall = w1 - w0
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return {"nodes": nodes, "cameras": cameras, "capacity": CP_CAPACITY, "ttl_s": TTL, "catalog_insert_s": catalog_s,
            "joined_s": joined_s, "settled_s": settled_s, "balanced_s": balanced_s, "window_s": wall,
            "cpu_s": cpu, "cpu_user_s": c1.user - c0.user, "cpu_system_s": c1.system - c0.system,
            "threads": threads, "held_at_end": held, "counters_in_window": {k: after[k] - before[k] for k in after},
            "rounds": len(rounds), "round_ms": [r * 1000 for r in rounds], "renewal_ms": [r * 1000 for r in renewals]}


def control_plane(mode: Mode, work: Path, pg) -> dict[str, Any]:
    """Run the ten services in a child process; PostgreSQL's CPU sampled here over the child's window."""
    nodes = CP_NODES
    cameras = mode.pick(quick=CP_CAMERAS, full=CP_CAMERAS, smoke=100)
    window = mode.pick(quick=60.0, full=300.0, smoke=5.0)
    url = pg.create_database("controlplane")
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    log(f"cluster: control plane, {nodes} services × {cameras} cameras, {window:.0f} s window")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cluster", "--control-plane", url, str(pg.password_file),
                             str(nodes), str(cameras), str(window)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pg_cpu = None
    result: dict[str, Any] | None = None
    try:
        p0 = w0 = None
        for line in proc.stdout:
            line = line.strip()
            if line == "WINDOW START":
                p0, w0 = tree_cpu(postmaster)["total"], time.monotonic()
            elif line == "WINDOW END" and p0 is not None:
                pg_cpu = (tree_cpu(postmaster)["total"] - p0, time.monotonic() - w0)
            elif line.startswith("{"):
                result = json.loads(line)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0 or result is None:
        raise RuntimeError(f"the control-plane child exited with {code}")
    if pg_cpu is not None:
        result["pg_cpu_s"], result["pg_window_s"] = pg_cpu
    with contextlib.suppress(Exception):
        pg.drop_database(url)
    return result


# ---------------------------------------------------------------------- the measurement


def run(mode: Mode) -> list[Row]:
    from tests.support.postgres import binaries, start

    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL 15+ server binaries missing (apt-get install postgresql)")
    work = fresh_dir("cluster")
    load0 = os.getloadavg()
    pg = start(bindir, durable=True, root=work)
    try:
        cp = control_plane(mode, work, pg)
        with s3_server(work / "s3") as s3:
            fo = failover(mode, work, pg, s3)
    finally:
        pg.stop()
    data = {"failover": fo, "control_plane": cp, "loadavg_at_start": load0, "loadavg_at_end": os.getloadavg()}

    secs = [f["failover_s"] for f in fo["failovers"] if f["failover_s"] is not None]
    resume = [f["resume_after_kill_s"] for f in fo["failovers"]]
    lost = [f["lost_at_kill_s"] for f in fo["failovers"] if f["lost_at_kill_s"] is not None]
    p50, p99 = median(secs), pct(secs, 99)
    goal = TTL + 10
    fo_summary = {"count": len(secs), "kills": len(fo["kills"]), "p50_s": p50, "p99_s": p99, "max_s": max(secs),
                  "resume_after_kill_p50_s": median(resume), "resume_after_kill_max_s": max(resume),
                  "lost_at_kill_max_s": max(lost) if lost else None,
                  "rejoin_p50_s": median([k["rejoin_s"] for k in fo["kills"]])}
    data["failover_summary"] = fo_summary
    log(f"cluster: failover over {len(secs)} camera(s) in {len(fo['kills'])} kill(s): p50 {p50:.1f} s, "
        f"p99 {p99:.1f} s, max {max(secs):.1f} s (TTL {TTL:g} s)")

    n = cp["nodes"]
    wall = cp["window_s"]
    node_pct = cp["cpu_s"] / wall / n * 100
    pg_pct = cp["pg_cpu_s"] / cp["pg_window_s"] / n * 100 if "pg_cpu_s" in cp else None
    rnd, ren = cp["round_ms"], cp["renewal_ms"]
    cp_summary = {"node_cpu_pct": node_pct, "pg_cpu_pct_per_node": pg_pct, "round_p50_ms": median(rnd),
                  "round_p99_ms": pct(rnd, 99), "renewal_p50_ms": median(ren), "renewal_p99_ms": pct(ren, 99),
                  "rounds_per_node_s": cp["rounds"] / wall / n}
    data["control_plane_summary"] = cp_summary
    log(f"cluster: control plane {n} × {cp['cameras']} cameras: {node_pct:.2f} % of a core per node, "
        f"PostgreSQL {pg_pct if pg_pct is not None else float('nan'):.2f} % per node; settled in "
        f"{cp['settled_s']:.1f} s, balanced in {cp['balanced_s']:.1f} s")

    rows = [
        Row(f"9. Cluster failover per camera after kill -9 (3 nodes, 6 cameras, lease TTL {TTL:g} s)", p99,
            "p99 seconds", goal=f"≤ TTL + 10 s = {goal:g} s",
            absolute=(f"p50 {p50:.1f} s, p99 {p99:.1f} s, max {max(secs):.1f} s over {len(secs)} camera failovers "
                      f"in {len(fo['kills'])} kills (last footage of the killed node → first of its successor); "
                      f"first new segment p50 {median(resume):.1f} s after the kill; footage lost at the kill max "
                      f"{fo_summary['lost_at_kill_max_s'] or 0:.2f} s; overlaps {fo['overlaps']}, fenced "
                      f"{fo['fenced']}")),
        Row(f"9. Cluster control plane, {cp['cameras']:,} cameras × {n} nodes: CPU per node", node_pct,
            "% of one core per node", goal="≤ 1 %",
            absolute=(f"PostgreSQL {pg_pct:.2f} % of a core per node; round p50 {median(rnd):.1f} ms / p99 "
                      f"{pct(rnd, 99):.1f} ms, renewal p50 {median(ren):.1f} / p99 {pct(ren, 99):.1f} ms "
                      f"({cp['rounds']} rounds in {wall:.0f} s); from cold: all leased in {cp['settled_s']:.1f} s, "
                      f"{cp['cameras'] // n} each in {cp['balanced_s']:.1f} s (stub recorders, one process)")),
    ]
    save("cluster", mode, rows, data)
    print_rows(rows)
    return rows


def _child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--control-plane", nargs=5, metavar=("URL", "PASSWORD_FILE", "NODES", "CAMERAS", "WINDOW"),
                   required=True)
    args = p.parse_args(argv)
    url, pwfile, nodes, cameras, window = args.control_plane
    result = asyncio.run(_control_plane(url, Path(pwfile), int(nodes), int(cameras), float(window)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
