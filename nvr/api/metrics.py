"""Prometheus text exposition of the server's counters (no client library: the format is small)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from nvr.base.prometheus import Exposition, number
from nvr.ingest.pipeline import LATENCY_BUCKETS

if TYPE_CHECKING:
    from nvr.server.app import NvrServer


class HttpMetrics:
    """Requests by method, route and status, and their total duration."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: Counter[tuple[str, str]] = Counter()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds


def render_metrics(srv: NvrServer) -> str:
    exp = Exposition()
    metric, out = exp.metric, exp.lines
    stats = srv.ingest.stats
    metric("nvr_segments_ingested_total", "counter", "Segments stored in S3 and indexed since start",
           [({}, stats.segments)])
    metric("nvr_ingested_bytes_total", "counter", "Plaintext bytes of ingested segments since start",
           [({}, stats.bytes)])
    metric("nvr_ingest_errors_total", "counter", "Failed ingest attempts (retried) since start", [({}, stats.errors)])
    metric("nvr_recording_gaps_total", "counter", "Gaps between consecutive segments since start", [({}, stats.gaps)])
    metric("nvr_ingest_latency_seconds", "histogram", "Segment closed to indexed", [])
    out += [f'nvr_ingest_latency_seconds_bucket{{le="{b:g}"}} {n}'
            for b, n in zip(LATENCY_BUCKETS, stats.latency_counts, strict=True)]
    out.append(f'nvr_ingest_latency_seconds_bucket{{le="+Inf"}} {stats.segments}')
    out.append(f"nvr_ingest_latency_seconds_sum {number(stats.latency_sum_ms / 1000)}")
    out.append(f"nvr_ingest_latency_seconds_count {stats.segments}")
    sp = srv.spoolwatch.status
    metric("nvr_spool_bytes", "gauge", "Bytes of segments waiting in the local spool", [({}, sp.bytes)])
    metric("nvr_spool_segments", "gauge", "Segment files in the local spool", [({}, sp.files)])
    metric("nvr_spool_free_bytes", "gauge", "Free bytes on the spool disk", [({}, sp.free_bytes)])
    metric("nvr_spool_alarm", "gauge", "1 while the spool is over its limit or its disk under the floor",
           [({}, 1.0 if sp.alarm else 0.0)])
    metric("nvr_storage_up", "gauge", "1 while S3 accepts uploads", [({}, 0.0 if srv.ingest.storage_error else 1.0)])
    states = Counter(st.state for st in srv.recorders.statuses().values())
    for cam in srv.cameras.all():
        if not cam.enabled:
            states["disabled"] += 1
    metric("nvr_cameras", "gauge", "Cameras by recorder state",
           [({"state": s}, float(states.get(s, 0))) for s in
            ("starting", "recording", "backoff", "stopping", "stopped", "disabled")])
    http = srv.metrics
    metric("nvr_http_requests_total", "counter", "HTTP requests by method, route and status",
           [({"method": m, "route": r, "status": str(s)}, float(n)) for (m, r, s), n in sorted(http.requests.items())])
    metric("nvr_http_request_seconds_total", "counter", "Time spent answering HTTP requests",
           [({"method": m, "route": r}, v) for (m, r), v in sorted(http.seconds.items())])
    if srv.retention is not None:
        srv.retention.write_metrics(exp)
    return exp.text()
