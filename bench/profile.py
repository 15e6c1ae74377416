"""Where the server's own CPU goes while it records: ``python -m bench.profile [--cameras N] [--seconds S]``.

Starts the same set-up as measurement 1 (simulated 1080p cameras, the
embedded S3, ``nvr serve`` as a subprocess), waits for steady state, then
samples the server with ``py-spy record --nonblocking`` (active threads only,
so idle waiting costs nothing; time in C code such as hashlib or OpenSSL is
charged to the Python function that called it; ``--native`` is not used
because py-spy then counts threads blocked in futex/wait4 as busy) and prints:

* the share of samples per leaf function (self time), native frames included;
* the share per product stage (inclusive: a sample counts for a stage when one
  of the stage's functions is on its stack).

The collapsed stacks are kept in ``bench/results/profile-recording.txt``
(feed them to any flame-graph tool; ``--svg`` also writes a flame graph).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from bench.common import (
    RESULTS,
    NvrProc,
    diff,
    fresh_dir,
    indexed_counts,
    log,
    mount_url,
    s3_server,
    segment_file,
    simulator,
    tree_cpu,
    wait_for,
)

# Stage -> substrings of "function (file)" frames; first match on a stack wins, so the order matters.
STAGES = (
    ("minio PUT: payload SHA-256 for SigV4 (sha256_hash)", ("sha256_hash (minio",)),
    ("minio/urllib3 HTTP send+recv", ("urllib3", "http/client.py", "minio/api.py", "socket.py", "ssl.py")),
    ("ingest: seal (read, SHA-256, AES-GCM, SHA-256)", ("seal_file (storage/envelope.py",)),
    ("index insert (SQLite, fsync)", ("storage/index.py",)),
    ("spool: tickets, fsync, listing", ("storage/spool.py",)),
    ("recorder: ffmpeg segment list, status", ("nvr/recorder.py",)),
    ("spool watch", ("nvr/spoolwatch.py",)),
    ("asyncio event loop / threads (other)", ("asyncio", "threading.py", "concurrent/futures")),
)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of every thread (native tid) of ``pid``, from /proc."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(f[11]) + int(f[12])) / tck
        except (OSError, ValueError, IndexError):
            pass
    return out


def thread_names(pyspy: str, pid: int) -> dict[int, str]:
    """Native tid -> Python thread name, from ``py-spy dump``."""
    import re

    out = subprocess.run([pyspy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', out, re.M)}


def thread_role(name: str) -> str:
    if name == "MainThread":
        return "event loop (MainThread): recorders, lanes, HTTP, callbacks"
    if name.startswith("s3_"):
        return "S3 pool (s3_*): encrypt + SHA-256 of object, HEAD, PUT"
    if name.startswith("asyncio_"):
        return "to_thread pool (asyncio_*): read + SHA-256, SQLite, spool tickets"
    return f"other threads ({name.rstrip('0123456789_-') or 'unnamed'})"


def stage_of(stack: str) -> str:
    for name, needles in STAGES:
        if any(n in stack for n in needles):
            return name
    return "other"


def summarize(raw: Path, top: int = 25) -> dict:
    leaf: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        stages[stage_of(stack)] += n
    return {
        "samples": total,
        "stages": [(k, v, round(100 * v / total, 1)) for k, v in stages.most_common()],
        "leaf": [(k, v, round(100 * v / total, 1)) for k, v in leaf.most_common(top)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--svg", action="store_true", help="also write a flame graph SVG")
    p.add_argument("--ingest-steps", action="store_true",
                   help="instead: CPU ms per segment of each ingest step, one thread, no server")
    p.add_argument("--sweep", action="store_true", help="instead: py-spy over the retention sweep (measurement 7)")
    args = p.parse_args(argv)
    if args.sweep:
        res = sweep_profile()
        (RESULTS / "profile-sweep.json").write_text(json.dumps(res, indent=2))
        print(f"sweep: {res['deleted']} deletions in {res['seconds']:.1f} s, {res['cpu_s']:.1f} cpu-s; "
              f"{res['samples']} samples")
        print("inclusive (retention/ and storage/index.py frames):")
        for k, pc in res["inclusive"]:
            print(f"  {pc:5.1f} %  {k}")
        print("leaf:")
        for k, pc in res["leaf"]:
            print(f"  {pc:5.1f} %  {k}")
        return 0
    if args.ingest_steps:
        steps = ingest_steps()
        (RESULTS / "profile-ingest-steps.json").write_text(json.dumps(steps, indent=2))
        total = sum(steps.values())
        print(f"ingest CPU per {os.path.getsize(segment_file()) / 1e6:.1f} MB segment: {total:.1f} ms")
        for k, v in sorted(steps.items(), key=lambda kv: kv[0].strip()):
            print(f"  {v:6.2f} ms  {100 * v / total:5.1f} %  {k}")
        return 0
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        print("py-spy not found: pip install py-spy (bench-only dependency)", file=sys.stderr)
        return 2
    work = fresh_dir("profile")
    raw = RESULTS / "profile-recording.txt"
    with s3_server(work) as s3, simulator(args.cameras) as sim:
        bucket = s3.make_bucket(f"prof-{os.getpid()}")
        cams = [{"id": f"cam{i:03d}", "url": mount_url(sim, i)} for i in range(args.cameras)]
        with NvrProc(work / "nvr", s3, bucket, cams) as nvr:
            wait_for(lambda: len(indexed_counts(nvr.index_path)) == args.cameras, 90, "first segments", nvr.proc)
            log(f"profiling nvr serve (pid {nvr.pid}) for {args.seconds} s at {args.rate} Hz")
            names = thread_names(pyspy, nvr.pid)
            th0 = thread_cpu(nvr.pid)
            c0, t0 = tree_cpu(nvr.pid), time.monotonic()
            subprocess.run([pyspy, "record", "--pid", str(nvr.pid), "--duration", str(args.seconds),
                            "--rate", str(args.rate), "--nonblocking", "--nolineno", "--format", "raw",
                            "--output", str(raw)], check=True, capture_output=True)
            cpu = diff(c0, tree_cpu(nvr.pid))
            dt = time.monotonic() - t0
            th1 = thread_cpu(nvr.pid)
            names.update(thread_names(pyspy, nvr.pid))
            segs = sum(indexed_counts(nvr.index_path).values())
            if args.svg:
                subprocess.run([pyspy, "record", "--pid", str(nvr.pid), "--duration", str(min(30, args.seconds)),
                                "--rate", str(args.rate), "--nonblocking", "--output",
                                str(RESULTS / "profile-recording.svg")], check=True, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    s = summarize(raw)
    roles: collections.Counter[str] = collections.Counter()
    for tid, c in th1.items():
        roles[thread_role(names.get(tid, "?"))] += c - th0.get(tid, 0.0)
    s["threads_cpu_s"] = dict(roles.most_common())
    s["segments_indexed_total"] = segs
    s.update({"cameras": args.cameras, "seconds": dt, "python_cpu_s": cpu["root"],
              "python_pct_core_per_camera": 100 * cpu["root"] / dt / args.cameras,
              "ffmpeg_pct_core_per_camera": 100 * cpu["ffmpeg"] / dt / args.cameras})
    (RESULTS / "profile-recording.json").write_text(json.dumps(s, indent=2))
    print(f"server Python process: {s['python_pct_core_per_camera']:.2f} % of a core per camera "
          f"(ffmpeg children {s['ffmpeg_pct_core_per_camera']:.2f}); {s['samples']} samples")
    per_seg = args.cameras * dt / 10.0  # segments closed in the window (10 s segments)
    print(f"\nCPU by thread role over the {dt:.0f} s window (ms per segment, ~{per_seg:.0f} segments):")
    for k, v in s["threads_cpu_s"].items():
        print(f"  {v:6.2f} cpu-s  {1000 * v / per_seg:6.1f} ms/segment  {k}")
    print("\nby stage (inclusive):")
    for k, _v, pc in s["stages"]:
        print(f"  {pc:5.1f} %  {k}")
    print("\nby leaf function (self):")
    for k, _v, pc in s["leaf"]:
        print(f"  {pc:5.1f} %  {k}")
    return 0



def sweep_profile(k: int = 3000, rate: int = 250) -> dict:
    """py-spy (sampling this very process) over the retention sweep of measurement 7's set-up."""
    import asyncio
    import sqlite3

    from bench.index_scale import build
    from bench.retention import put_all, sweep_side

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = fresh_dir("sweep-profile")
    index_path = work / "data" / "index.sqlite3"
    index_path.parent.mkdir(parents=True)
    build(index_path, k)
    db = sqlite3.connect(index_path)
    keys = [r[0] for r in db.execute("SELECT object_key FROM segments")]
    db.close()
    raw = RESULTS / "profile-sweep.txt"
    with s3_server(work) as s3:
        bucket = s3.make_bucket(f"swp-{os.getpid()}")
        put_all(s3.client(), bucket, keys)
        spy = subprocess.Popen([pyspy, "record", "--pid", str(os.getpid()), "--rate", str(rate), "--nonblocking",
                                "--nolineno", "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        c0 = time.process_time()
        res = asyncio.run(sweep_side(index_path, s3, bucket))
        res["cpu_s"] = time.process_time() - c0
        spy.send_signal(2)  # py-spy writes its output on SIGINT
        spy.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    leaf: collections.Counter[str] = collections.Counter()
    funcs: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "select (selectors.py)" in stack.rsplit(";", 1)[-1]:
            continue  # the event loop waiting for its worker threads is not work
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        for f in set(frames):
            if "retention/" in f or "storage/index.py" in f or "minio/" in f:
                funcs[f] += n
    res["samples"] = total
    res["leaf"] = [(k, round(100 * v / total, 1)) for k, v in leaf.most_common(12)]
    res["inclusive"] = [(k, round(100 * v / total, 1)) for k, v in funcs.most_common(15)]
    return res


def ingest_steps(segments: int = 30) -> dict[str, float]:
    """CPU milliseconds per segment of each step of ingest, run one at a time on one thread.

    The same calls, in the same order, as ``Ingestor._store_and_index`` (see
    docs/segment-lifecycle.md, steps 4-10), each timed with the process CPU
    clock; step 6 (HEAD) is timed too, though ingest skips it for a fresh ticket.
    """
    import asyncio

    from bench.ingest import T0, Parts, lay_segment
    from nvr.base.times import ms_to_rfc3339
    from nvr.ingest.pipeline import object_key
    from storage.envelope import SegmentContext, seal_buffer_size, seal_file
    from storage.ledger import segment_record

    work = fresh_dir("ingest-steps")
    source = work / "segment.mp4"
    shutil.copyfile(segment_file(), source)
    steps: dict[str, float] = collections.defaultdict(float)
    buf = bytearray(seal_buffer_size(source.stat().st_size))

    def clock(name: str, fn, *a):
        c = time.process_time()
        out = fn(*a)
        steps[name] += time.process_time() - c
        return out

    with s3_server(work) as s3:
        parts = Parts(work, s3, s3.make_bucket(f"steps-{os.getpid()}"))
        ing, store, index, spool = parts.ingestor, parts.store, parts.index, parts.spool
        try:
            for n in range(segments + 3):
                if n == 3:  # warm-up done
                    steps.clear()
                seg = lay_segment(spool, source, "cam000", n, run_ms=T0)
                key = object_key(seg)
                clock("4 index lookup (segment_by_object_key)", index.segment_by_object_key, key)
                head = clock("  chain_head + last_end_ms", index.chain_head, seg.camera)
                clock("  chain_head + last_end_ms", index.last_end_ms, seg.camera)
                clock("6 HEAD object (stat; skipped for a fresh ticket)", store.stat, key)
                start, end = ms_to_rfc3339(seg.start_ms), ms_to_rfc3339(seg.end_ms)
                ctx = SegmentContext(camera=seg.camera, object_key=key, start=start, end=end)
                key_id = ing.keyring.current_kek_id
                sealed = clock("5+7 seal: read, SHA-256, AES-GCM, SHA-256 (one pass)", seal_file,
                               spool.path(seg), ctx, key_id, ing.keyring.kek(key_id), buf)
                record = segment_record(head=head, start=start, end=end, partial=False, size=sealed.size,
                                        sha256=sealed.sha256, object_key=key, object_size=len(sealed.blob),
                                        object_sha256=sealed.object_sha256, key_id=key_id, node="bench")
                vid = clock("8 PUT (SigV4 with the known SHA-256, one request)",
                            partial(store.put, key, sealed.blob, record=record, sha256=sealed.object_sha256))
                clock("9 index insert (SQLite txn, FULL sync)", partial(index.insert_segment, record, version_id=vid))
                clock("10 spool remove (+ dir fsync)", spool.remove, seg)
                del sealed
        finally:
            parts.close()
    shutil.rmtree(work, ignore_errors=True)
    asyncio.set_event_loop(None)
    return {k: v * 1000 / segments for k, v in steps.items()}


if __name__ == "__main__":
    sys.exit(main())
