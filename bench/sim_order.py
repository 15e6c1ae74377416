"""Is the camera simulator fair to its clients? ``python -m bench.sim_order [--cameras N] [--seconds S]``.

Starts K identical bare ``ffmpeg -c copy`` pipelines per simulated camera, one
pipeline after the other, and prints each one's CPU per camera-hour ÷ the
first's, then does the same with a **decoy** pipeline connected after them
all. On this simulator (GStreamer RTSP server, shared media) the most recently
connected client of a stream costs its ffmpeg 12-18 % more CPU than the others,
whatever it is; the decoy takes that penalty. That is why measurement 1
(``bench/recording.py``) connects a decoy after every measured pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import fresh_dir, log, mount_url, pids_cpu, simulator, wait_for
from bench.recording import FfmpegSet, bare_argv


def one_run(cameras: int, pipelines: int, seconds: float, decoy: bool) -> list[float]:
    """CPU of each pipeline (in start order) ÷ the first's, over ``seconds`` of steady state."""
    work = fresh_dir("sim-order")
    sets: list[FfmpegSet] = []
    with simulator(cameras) as sim:
        for k in range(pipelines + int(decoy)):
            fs = FfmpegSet(f"p{k}")
            dirs = [work / f"p{k}" / f"cam{i:03d}" for i in range(cameras)]
            for d in dirs:
                d.mkdir(parents=True)
            fs.start([bare_argv(mount_url(sim, i), dirs[i]) for i in range(cameras)])
            sets.append(fs)
            wait_for(lambda fs=fs: min(fs.counts()) >= 1, timeout=60, what=f"pipeline {k}'s first segments")
        try:
            c0 = [pids_cpu(fs.pids) for fs in sets]
            time.sleep(seconds)
            c1 = [pids_cpu(fs.pids) for fs in sets]
        finally:
            for fs in sets:
                fs.stop()
    cpu = [b - a for a, b in zip(c0, c1, strict=True)][:pipelines]
    return [c / cpu[0] for c in cpu]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim_order", description=__doc__)
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--pipelines", type=int, default=4)
    p.add_argument("--seconds", type=float, default=90.0)
    args = p.parse_args(argv)
    for decoy in (False, True):
        log(f"{args.pipelines} identical pipelines × {args.cameras} cameras, {'with' if decoy else 'no'} decoy")
        ratios = one_run(args.cameras, args.pipelines, args.seconds, decoy)
        print(f"{'with decoy' if decoy else 'no decoy  '}: CPU ÷ first pipeline, in connection order: "
              + "  ".join(f"{r:.3f}" for r in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
