"""``python -m bench <name> [--quick|--full]``: run one measurement, or ``all`` of them.

Names: recording (1), cameras (2), ingest (3), peer (4), retrieval (5),
index (6), index-ingest (6), retention (7), faults (8), cluster (9), live (10), all; ``plots`` redraws the PNGs from the saved
results and ``table`` prints the results table (Markdown) of the last runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench.common import Mode, Row, log, print_rows

# name -> (module, title); the order of `all`
MEASUREMENTS = {
    "recording": ("bench.recording", "1. recording overhead: nvr ÷ bare ffmpeg, CPU per camera-hour"),
    "peer": ("bench.peer", "4. peer pipeline: nvr ÷ ffmpeg + rclone copy (CPU, time to S3)"),
    "ingest": ("bench.ingest", "3. ingest pipeline: ÷ raw PUT and ÷ openssl AES-GCM + SHA-256"),
    "retrieval": ("bench.retrieval", "5. clips of 1 min / 10 min / 1 h ÷ raw GET + decrypt"),
    "index": ("bench.index_scale", "6. index at 1 M (10 M, 50 M) rows, SQLite and PostgreSQL: queries, inserts, size"),
    "index-ingest": ("bench.index_ingest", "6. index at 1,000 cameras' segment rate, SQLite and PostgreSQL"),
    "retention": ("bench.retention", "7. retention deletions ÷ raw S3 multi-delete"),
    "cameras": ("bench.cameras", "2. cameras per node: largest count held with zero loss"),
    "faults": ("bench.faults", "8. footage lost per kill -9 (÷ without fragment flush), Ctrl-C of the demo"),
    "cluster": ("bench.cluster", "9. cluster: failover time per camera over kill -9s; control-plane cost at 1,000 "
                                 "cameras × 10 nodes"),
    "live": ("bench.live", "10. live view: capture → client latency; server CPU per viewer ÷ recording CPU per "
                           "camera; a stalled viewer"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("name", choices=[*MEASUREMENTS, "all", "list", "plots", "table"])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const", const="quick",
                   help="a few minutes on 2 cores (the default)")
    g.add_argument("--full", dest="mode", action="store_const", const="full", help="bigger, longer runs")
    g.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    mode = Mode(args.mode or "quick")

    if args.name == "list":
        for name, (_, title) in MEASUREMENTS.items():
            print(f"{name:<10} {title}")
        return 0
    if args.name == "plots":
        from bench.plots import draw_all

        for path in draw_all():
            print(path)
        return 0
    if args.name == "table":
        from bench.plots import markdown_table

        print(markdown_table())
        return 0

    names = list(MEASUREMENTS) if args.name == "all" else [args.name]
    from bench.common import machine

    log(f"machine: {machine()}")
    rows: list[Row] = []
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        if args.name == "all" and name == "recording":
            continue  # measured in the same run as the peer pipeline (below)
        module = importlib.import_module(MEASUREMENTS[name][0])
        log(f"=== {name} ({mode.name}) ===")
        t = time.monotonic()
        try:
            if args.name == "all" and name == "peer":
                rows += module.run(mode, also_recording=True)
            else:
                rows += module.run(mode)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            rows.append(Row(MEASUREMENTS[name][1], None, "failed", absolute="see the traceback above"))
        log(f"=== {name} took {time.monotonic() - t:.0f} s ===")
    if args.name == "all":
        from bench.plots import draw_all

        for path in draw_all():
            log(f"plot: {path}")
        print()
        print_rows(rows)
        log(f"all: {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
