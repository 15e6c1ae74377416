"""What the handlers use: the services ``build_app`` receives, each under its own typed application key.

A handler reads only the keys it needs (``request.app[CAMERAS]``), so what a
route depends on is visible in its code, and a test can serve the API over
parts it built itself. ``install`` is the one place that sets the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nvr.api.guard import AuthLimits
from nvr.api.limits import ConcurrencyLimit
from nvr.api.metrics import MetricsSources
from nvr.api.sessions import SESSION_POLICY, SessionPolicy
from nvr.api.urltokens import UrlSigner
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.exports import ExportService
from nvr.live.hub import LiveHub
from nvr.playback.clip import SegmentReader
from nvr.recording.registry import CameraRegistry
from nvr.recording.supervisor import RecorderSupervisor
from retention.service import RetentionService
from storage.audit import AuditLog
from storage.index import Index
from storage.keyring import Keyring
from storage.objectstore import ObjectStore
from storage.spool import Spool

StatusReport = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ClipSettings:
    """How clips are made: their scratch directory, the longest clip (``server.max_clip``), how many at once."""

    tmp_dir: Path
    max_seconds: float
    concurrency: ConcurrencyLimit = field(default_factory=lambda: ConcurrencyLimit("clips", 0, 0))


@dataclass(frozen=True)
class Services:
    """Everything the API's handlers use; the server builds one and passes it to ``build_app``."""

    index: Index
    store: ObjectStore
    keyring: Keyring
    audit: AuditLog
    cameras: CameraRegistry
    recorders: RecorderSupervisor
    spool: Spool
    read_segment: SegmentReader  # a segment's original bytes, every check done (raises IntegrityError)
    status: StatusReport  # health of every part (``GET /api/v1/status``, ``/healthz``)
    metrics: MetricsSources
    clips: ClipSettings
    retention: RetentionService
    exports: ExportService
    checkpoints: CheckpointWriter
    auth_limits: AuthLimits = AuthLimits()  # failed authentications per client address (``nvr.api.guard``)
    # Signs the URL tokens players carry (``nvr.api.urltokens``); the server's is kept in its data dir,
    # without one links live as long as the process.
    url_signer: UrlSigner = field(default_factory=UrlSigner.ephemeral)
    live: LiveHub | None = None  # the server's live feeds; without one, the API makes its own
    live_limit: ConcurrencyLimit = field(default_factory=lambda: ConcurrencyLimit("live viewers", 0, 0))
    session_policy: SessionPolicy = SessionPolicy()  # console sessions' idle and absolute ends


INDEX = web.AppKey("nvr.index", Index)
STORE = web.AppKey("nvr.store", ObjectStore)
KEYRING = web.AppKey("nvr.keyring", Keyring)
AUDIT = web.AppKey("nvr.audit", AuditLog)
CAMERAS = web.AppKey("nvr.cameras", CameraRegistry)
RECORDERS = web.AppKey("nvr.recorders", RecorderSupervisor)
SPOOL = web.AppKey("nvr.spool", Spool)
READ_SEGMENT: web.AppKey[SegmentReader] = web.AppKey("nvr.read_segment")
STATUS: web.AppKey[StatusReport] = web.AppKey("nvr.status")
METRICS = web.AppKey("nvr.metrics", MetricsSources)
CLIPS = web.AppKey("nvr.clips", ClipSettings)
RETENTION = web.AppKey("nvr.retention", RetentionService)
EXPORTS = web.AppKey("nvr.exports", ExportService)
CHECKPOINTS = web.AppKey("nvr.checkpoints", CheckpointWriter)
URL_SIGNER = web.AppKey("nvr.url_signer", UrlSigner)
LIVE = web.AppKey("nvr.live", LiveHub)
LIVE_LIMIT = web.AppKey("nvr.live_limit", ConcurrencyLimit)


def install(app: web.Application, s: Services) -> None:
    """Put each service under its key."""
    app[INDEX], app[STORE], app[KEYRING], app[AUDIT] = s.index, s.store, s.keyring, s.audit
    app[CAMERAS], app[RECORDERS], app[SPOOL] = s.cameras, s.recorders, s.spool
    app[READ_SEGMENT], app[STATUS], app[METRICS], app[CLIPS] = s.read_segment, s.status, s.metrics, s.clips
    app[RETENTION], app[EXPORTS], app[CHECKPOINTS] = s.retention, s.exports, s.checkpoints
    app[URL_SIGNER], app[LIVE_LIMIT], app[SESSION_POLICY] = s.url_signer, s.live_limit, s.session_policy
    if s.live is not None:
        app[LIVE] = s.live
    else:  # an API built on its own (tests): its hub lives and ends with the app
        hub = app[LIVE] = LiveHub(s.spool, wall_start=s.recorders.segment_start)
        app.on_cleanup.append(lambda _: hub.close())
