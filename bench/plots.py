"""PNG plots (matplotlib) and the Markdown results table, from the JSON the measurements wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import DOCS, RESULTS, fmt_ratio

ORDER = ("recording", "cameras", "ingest", "peer", "retrieval", "index", "retention")


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
    measured = sorted((int(k), v) for k, v in data["sizes"].items() if "queries" in v)
    extra = sorted((int(k), v) for k, v in data.get("extrapolated", {}).items())
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    styles = {"segments_day": ("o", "segments, one day (8 640 rows)"), "timeline_day": ("s", "timeline, one day"),
              "segments_page": ("^", "segments, first page (101 rows)"),
              "bounded_day": ("D", "day query with a fixed 1 h start_ms lower bound")}
    for q, (marker, label) in styles.items():
        xs = [n for n, _ in measured]
        line, = a.plot(xs, [v["queries"][q]["p50_ms"] for _, v in measured], marker + "-", label=f"{label}: p50")
        if q != "bounded_day":
            a.plot(xs, [v["queries"][q]["p99_ms"] for _, v in measured], marker + ":", color=line.get_color(),
                   alpha=0.6)
        if extra:
            last = (measured[-1][0], measured[-1][1]["queries"][q]["p50_ms"])
            a.plot([last[0]] + [n for n, _ in extra], [last[1]] + [v["queries"][q]["p50_ms"] for _, v in extra],
                   marker + "--", color=line.get_color(), alpha=0.45)
            if q != "bounded_day":
                a.plot([last[0]] + [n for n, _ in extra],
                       [last[1]] + [v["queries"][q]["last_day_p50_ms"] for _, v in extra],
                       marker + "-.", color=line.get_color(), alpha=0.3)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("segment rows in the index (SQLite); 10 M and 50 M = a 350-camera node with 3.3 / 16.5 days")
    a.set_ylabel("query latency, ms (warm page cache)")
    a.grid(alpha=0.3, which="both")
    a.legend(fontsize=7, loc="center left")
    a.set_title("Latency vs index size: solid measured (dotted p99); dashed extrapolated\n"
                "(random day), dash-dot extrapolated (newest day)", fontsize=9)
    d = data["depth"]
    names = [("segments_page", "first page"), ("segments_day", "day"), ("timeline_day", "timeline"),
             ("bounded_day", "day, fixed\n1 h bound"), ("segments_timeline_day", "timeline from\nfull rows (before)")]
    x = list(range(len(names)))
    b.bar([i - 0.2 for i in x], [d["first_day"][q]["p50_ms"] for q, _ in names], 0.4, label="first day")
    b.bar([i + 0.2 for i in x], [d["last_day"][q]["p50_ms"] for q, _ in names], 0.4, label="last day")
    b.set_xticks(x, [n for _, n in names], fontsize=8)
    b.set_ylabel("p50, ms")
    b.set_title(f"History depth: {d['cameras']} cameras × {d['days_per_camera']:.1f} days "
                f"({d['rows'] / 1e3:.0f} k rows)", fontsize=9)
    b.legend()
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Index queries, {doc['mode']} run (measured and extrapolated, see docs/benchmarks.md)", fontsize=10)
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
