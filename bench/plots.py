"""PNG plots (matplotlib) and the Markdown results table, from the JSON the measurements wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import DOCS, RESULTS, fmt_ratio

ORDER = ("recording", "cameras", "ingest", "peer", "retrieval", "index", "retention", "cluster", "live")


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def draw_cameras(doc: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = doc["data"]["steps"]
    n = [s["cameras"] for s in steps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    pc = [s["cpu_pct_core_per_camera"] for s in steps]
    a.plot(n, [p["nvr_total"] for p in pc], "o-", label="nvr tree (total)")
    a.plot(n, [p["nvr_ffmpeg"] for p in pc], "s--", label="its ffmpeg children")
    a.plot(n, [p["nvr_python"] for p in pc], "^--", label="its Python process")
    for s in steps:
        if not s["held"]:
            a.annotate("failed", (s["cameras"], s["cpu_pct_core_per_camera"]["nvr_total"]), color="red")
    a.set_xlabel("cameras (1080p H.264, ~4 Mbit/s)")
    a.set_ylabel("% of one core per camera")
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    a.legend()
    a.set_title("CPU per camera vs camera count")
    m = [s["memory"] for s in steps]
    mib = 2**20
    b.plot(n, [x["server_rss_per_camera"] / mib for x in m], "o-", label="server RSS ÷ cameras")
    b.plot(n, [x["ffmpeg_rss_mean"] / mib for x in m], "s--", label="RSS of one ffmpeg")
    b.plot(n, [x["tree_pss_per_camera"] / mib for x in m], "^--", label="tree PSS ÷ cameras")
    b.set_xlabel("cameras")
    b.set_ylabel("MiB per camera")
    b.set_ylim(bottom=0)
    b.grid(alpha=0.3)
    b.legend()
    b.set_title("Memory per camera vs camera count")
    fig.suptitle(f"nvr serve, {doc['mode']} run, {doc['machine']['nproc']} cores ({doc['machine']['cpu_model']})",
                 fontsize=9)
    fig.tight_layout()
    out = DOCS / "bench-cameras.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_index(doc: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = doc["data"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    styles = {"segments_day": ("o", "one camera-day (8 640 rows)"), "timeline_day": ("s", "timeline, one day"),
              "segments_page": ("^", "first page (101 rows)")}
    for backend, dash in (("sqlite", "-"), ("postgresql", "--")):
        measured = sorted((v["rows"], v) for v in data["sizes"].values() if v["backend"] == backend)
        if not measured:
            continue
        xs = [n for n, _ in measured]
        for q, (marker, label) in styles.items():
            line, = a.plot(xs, [v["queries"][q]["p50_ms"] for _, v in measured], marker + dash,
                           label=f"{backend}: {label}, p50")
            a.plot(xs, [v["queries"][q]["p99_ms"] for _, v in measured], marker + ":", color=line.get_color(),
                   alpha=0.5)
        b.plot(xs, [v["under_load"]["insert_p99_ms"] for _, v in measured], "o" + dash,
               label=f"{backend}: insert p99 under 20 readers")
        b.plot(xs, [v["bytes_per_million_rows"] / 1e9 * 10 for _, v in measured], "x" + dash,
               label=f"{backend}: GB per M rows × 10")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.set_xlabel("segment rows in the index (350 cameras from 10 M on)")
    a.set_yscale("log")
    a.set_ylabel("query latency, ms (warm cache); dotted: p99")
    a.set_title("Queries vs index size, both backends (measured)", fontsize=9)
    b.set_ylabel("ms  /  GB per million rows × 10")
    b.set_title("Writes under read load, and size", fontsize=9)
    fig.suptitle(f"Index, {doc['mode']} run (see docs/benchmarks.md)", fontsize=10)
    fig.tight_layout()
    out = DOCS / "bench-index.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_all() -> list[Path]:
    DOCS.mkdir(exist_ok=True)
    out = []
    for name, fn in (("cameras", draw_cameras), ("index", draw_index)):
        doc = _load(name)
        if doc is not None:
            out.append(fn(doc))
    return out


def markdown_table() -> str:
    lines = ["| measurement | ratio (same run) | goal | absolute figures (not asserted) | mode | reproduce |",
             "|---|---|---|---|---|---|"]
    for name in ORDER:
        doc = _load(name)
        if doc is None:
            lines.append(f"| {name} | not run | | | | `python -m bench {name} --quick` |")
            continue
        for r in doc["rows"]:
            lines.append(f"| {r['measure']} | {r['ratio_label']} = **{fmt_ratio(r['ratio'])}** | {r['goal']} | "
                         f"{r['absolute']} | {doc['mode']} | `python -m bench {name} --{doc['mode']}` |")
    return "\n".join(lines)
