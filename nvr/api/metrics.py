"""Prometheus text exposition of the server's counters (no client library: the format is small)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from nvr.base.prometheus import Exposition, number
from nvr.ingest.lanes import IngestService
from nvr.ingest.pipeline import LATENCY_BUCKETS
from nvr.live.hub import LiveHub
from nvr.recording.registry import CameraRegistry
from nvr.recording.spoolwatch import SpoolWatch
from nvr.recording.supervisor import RecorderSupervisor
from retention.service import RetentionService


class HttpMetrics:
    """Requests by method, route and status, and their total duration."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: Counter[tuple[str, str]] = Counter()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds


@dataclass(frozen=True)
class MetricsSources:
    """The parts whose counters ``GET /metrics`` shows."""

    ingest: IngestService
    spoolwatch: SpoolWatch
    recorders: RecorderSupervisor
    cameras: CameraRegistry
    retention: RetentionService
    http: HttpMetrics
    status: Callable[[], dict] | None = None  # the server's status (its alarms), when there is a server
    live: LiveHub | None = None


def render_metrics(src: MetricsSources) -> str:
    """The exposition text of every ``nvr_*`` family."""
    exp = Exposition()
    metric, out = exp.metric, exp.lines
    stats = src.ingest.stats
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
    sp = src.spoolwatch.status
    metric("nvr_spool_bytes", "gauge", "Bytes of segments waiting in the local spool", [({}, sp.bytes)])
    metric("nvr_spool_segments", "gauge", "Segment files in the local spool", [({}, sp.files)])
    metric("nvr_spool_free_bytes", "gauge", "Free bytes on the spool disk", [({}, sp.free_bytes)])
    metric("nvr_spool_alarm", "gauge", "1 while the spool is over its limit or its disk under the floor",
           [({}, 1.0 if sp.alarm else 0.0)])
    metric("nvr_storage_up", "gauge", "1 while S3 accepts uploads",
           [({}, 0.0 if src.ingest.storage_error else 1.0)])
    problem = src.ingest.problem
    metric("nvr_storage_problem", "gauge", "1 for the cause that stops uploads (unreachable, failing, denied, full, "
           "refused)", [({"cause": c}, 1.0 if problem is not None and str(problem.cause) == c else 0.0)
                        for c in ("unreachable", "failing", "denied", "full", "refused")])
    metric("nvr_ingest_lanes_stalled", "gauge", "Cameras with segments waiting and no upload for a minute",
           [({}, float(len(src.ingest.stalled())))])
    down = src.recorders.problems()
    metric("nvr_cameras_down", "gauge", "Enabled cameras that are not recording (never recorded, down, stalled)",
           [({}, float(len(down)))])
    if src.status is not None:
        status = src.status()
        metric("nvr_alarms", "gauge", "Alarms /healthz reports now (0: healthy)", [({}, float(len(status["alarms"])))])
        metric("nvr_checkpoints_failing", "gauge", "1 while checkpoints are refused or can't be written",
               [({}, 1.0 if status.get("checkpoints", {}).get("alarm") else 0.0)])
        if (cl := status.get("cluster")) is not None:
            counters = cl["counters"]
            metric("nvr_cluster_leases", "gauge", "Camera leases this node holds", [({}, float(len(cl["cameras"])))])
            metric("nvr_cluster_nodes_live", "gauge", "Nodes up and heartbeating, as this node last saw",
                   [({}, float(cl["live_nodes"]))])
            metric("nvr_cluster_renewing", "gauge", "1 while this node renews its leases, 0 while it can't",
                   [({}, 0.0 if cl["problem"] else 1.0)])
            metric("nvr_cluster_retention_sweeper", "gauge", "1 while this node holds the retention sweep's lease",
                   [({}, 1.0 if cl["retention_sweeper"] else 0.0)])
            for name, key, text in (
                    ("nvr_cluster_claims_total", "claims", "Camera leases this node claimed since start"),
                    ("nvr_cluster_handovers_total", "handovers", "Claims of a camera another node held before"),
                    ("nvr_cluster_releases_total", "releases", "Camera leases released to rebalance or at stop"),
                    ("nvr_cluster_lease_losses_total", "losses", "Leases lost (not renewed in time, disabled, "
                                                                 "taken over) since start"),
                    ("nvr_cluster_renew_failures_total", "renew_failures", "Lease renewals that failed")):
                metric(name, "counter", text, [({}, float(counters.get(key, 0)))])
    states = Counter(st.state for st in src.recorders.statuses().values())
    for cam in src.cameras.all():
        if not cam.enabled:
            states["disabled"] += 1
    metric("nvr_cameras", "gauge", "Cameras by recorder state",
           [({"state": s}, float(states.get(s, 0))) for s in
            ("starting", "recording", "backoff", "stopping", "stopped", "disabled")])
    # Per camera: one sample per health state (1 for the camera's), so an alert can name the camera.
    statuses = src.recorders.statuses()
    per_camera = []
    for cid, st in sorted(statuses.items()):
        per_camera += [({"camera": cid, "state": h}, 1.0 if h == st.health else 0.0) for h in _HEALTH_STATES]
    metric("nvr_camera_health", "gauge", "1 for each camera's health: recording, never_recorded, down, flapping",
           per_camera)
    metric("nvr_placement_corrections_total", "counter",
           "Segments whose run was re-anchored on the wall clock, per camera, since start",
           [({"camera": cid}, float(st.placement_corrections)) for cid, st in sorted(statuses.items())])
    http = src.http
    metric("nvr_http_requests_total", "counter", "HTTP requests by method, route and status",
           [({"method": m, "route": r, "status": str(s)}, float(n)) for (m, r, s), n in sorted(http.requests.items())])
    metric("nvr_http_request_seconds_total", "counter", "Time spent answering HTTP requests",
           [({"method": m, "route": r}, v) for (m, r), v in sorted(http.seconds.items())])
    src.retention.write_metrics(exp)
    if src.live is not None:
        src.live.write_metrics(exp)
    return exp.text()


_HEALTH_STATES = ("recording", "never_recorded", "down", "flapping")  # CameraStatus.health


_CAMERA_LABEL = re.compile(r'[{,]camera="((?:[^"\\]|\\.)*)"')


def only_cameras(text: str, sees: Callable[[str], bool]) -> str:
    """The exposition ``text`` with only the samples labelled with a camera ``sees`` accepts (and their families)."""
    families: dict[str, list[str]] = {}  # metric family -> its HELP and TYPE lines
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3:
                families.setdefault(parts[2], []).append(line)
            continue
        m = _CAMERA_LABEL.search(line)
        if m is None or not sees(m.group(1)):
            continue
        name = line.split("{", 1)[0]
        family = next((f for f in (name, name.rsplit("_", 1)[0]) if f in families), name)
        out += families.pop(family, [])
        out.append(line)
    return "\n".join(out) + "\n" if out else ""
