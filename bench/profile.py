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
    simulator,
    tree_cpu,
    wait_for,
)

# Stage -> substrings of "function (file)" frames; first match on a stack wins, so the order matters.
STAGES = (
    ("minio PUT: payload SHA-256 for SigV4 (sha256_hash)", ("sha256_hash (minio",)),
    ("minio PUT: read_part_data/BytesIO copies", ("read_part_data (minio",)),
    ("minio/urllib3 HTTP send+recv", ("urllib3", "http/client.py", "minio/api.py", "socket.py", "ssl.py")),
    ("ingest: SHA-256 of plaintext (_read_and_hash)", ("_read_and_hash (storage/ingest.py",)),
    ("ingest: encrypt + SHA-256 of object (_seal)", ("_seal (storage/ingest.py",)),
    ("index insert (SQLite, fsync)", ("storage/index.py",)),
    ("spool: tickets, fsync, listing", ("storage/spool.py",)),
    ("recorder: ffmpeg segment list, status", ("nvr/recorder.py",)),
    ("spool watch", ("nvr/spoolwatch.py",)),
    ("asyncio event loop / threads (other)", ("asyncio", "threading.py", "concurrent/futures")),
)


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
    args = p.parse_args(argv)
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
            c0, t0 = tree_cpu(nvr.pid), time.monotonic()
            subprocess.run([pyspy, "record", "--pid", str(nvr.pid), "--duration", str(args.seconds),
                            "--rate", str(args.rate), "--nonblocking", "--nolineno", "--format", "raw",
                            "--output", str(raw)], check=True, capture_output=True)
            cpu = diff(c0, tree_cpu(nvr.pid))
            dt = time.monotonic() - t0
            if args.svg:
                subprocess.run([pyspy, "record", "--pid", str(nvr.pid), "--duration", str(min(30, args.seconds)),
                                "--rate", str(args.rate), "--nonblocking", "--output",
                                str(RESULTS / "profile-recording.svg")], check=True, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    s = summarize(raw)
    s.update({"cameras": args.cameras, "seconds": dt, "python_cpu_s": cpu["root"],
              "python_pct_core_per_camera": 100 * cpu["root"] / dt / args.cameras,
              "ffmpeg_pct_core_per_camera": 100 * cpu["ffmpeg"] / dt / args.cameras})
    (RESULTS / "profile-recording.json").write_text(json.dumps(s, indent=2))
    print(f"server Python process: {s['python_pct_core_per_camera']:.2f} % of a core per camera "
          f"(ffmpeg children {s['ffmpeg_pct_core_per_camera']:.2f}); {s['samples']} samples")
    print("\nby stage (inclusive):")
    for k, v, pc in s["stages"]:
        print(f"  {pc:5.1f} %  {k}")
    print("\nby leaf function (self):")
    for k, v, pc in s["leaf"]:
        print(f"  {pc:5.1f} %  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
