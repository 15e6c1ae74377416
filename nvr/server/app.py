"""Wiring of ``nvr serve``: every service started in order and torn down in reverse, errors collected.

Start order (an AsyncExitStack unwinds it last-in first-out):

1. keyring, index, S3 (embedded SeaweedFS or the configured endpoint), bucket
   and the ledger checkpoint writer
2. ingest lanes (anything left in the spool from a previous run starts uploading)
3. spool recovery: files without a ticket become partial segments
4. camera registry (config cameras imported) and a recorder per enabled camera
5. spool watch
6. export jobs, HTTP server

On shutdown the HTTP server stops first, then the spool watch, then every
recorder finishes its segment, then ingest drains the spool (bounded), then
storage closes and the embedded S3 stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import replace

from aiohttp import web

from nvr import __version__
from nvr.api.auth import create_token
from nvr.api.metrics import HttpMetrics
from nvr.api.routes import build_app
from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.pulse import Pulse
from nvr.config.settings import DEMO_CAMERAS, CameraConfig, Config
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.exports import ExportService, fresh_private_dir
from nvr.ingest.pipeline import Ingestor, IngestService
from nvr.recording.recorder import CameraRecorder
from nvr.recording.recovery import recover_camera
from nvr.recording.registry import CameraRegistry
from nvr.recording.spoolwatch import SpoolWatch
from nvr.recording.supervisor import RecorderSupervisor
from nvr.server.backend import Backend, open_backend
from retention.service import RetentionService, RetentionSettings
from storage.audit import AuditLog
from storage.chainlock import ChainLocks
from storage.index import SegmentRow
from storage.retrieve import open_segment
from storage.spool import ClosedSegment, Spool

log = logging.getLogger("nvr.app")

# How long shutdown waits for the spool to empty into S3 before leaving the rest for the next start.
DRAIN_SECONDS = 20.0


class NvrServer:
    """The running server; ``async with NvrServer(cfg) as srv:`` starts it, leaving the block stops it."""

    def __init__(self, cfg: Config, *, demo: bool = False):
        if demo and not cfg.cameras:
            cfg = replace(cfg, cameras=DEMO_CAMERAS)
        self.cfg = cfg
        self.demo = demo
        self.ffmpeg = find_ffmpeg(cfg.recording.ffmpeg)
        self.spool = Spool(cfg.spool_dir)
        self._stack = AsyncExitStack()
        self.backend: Backend | None = None
        self.audit: AuditLog | None = None
        self.ingest: IngestService | None = None
        self.recorders: RecorderSupervisor | None = None
        self.cameras: CameraRegistry | None = None
        self.metrics = HttpMetrics()
        self.clip_tmp = cfg.data_dir / "tmp" / "clips"
        self.spoolwatch: SpoolWatch | None = None
        self.http_port: int | None = None
        self.pulse = Pulse()  # fired on every segment, ingest, status change
        self.chain_locks = ChainLocks()  # one writer at a time per camera chain: ingest, tombstones, exports
        self.checkpoints: CheckpointWriter | None = None
        self.exports: ExportService | None = None
        self.retention: RetentionService | None = None

    # ------------------------------------------------------------------ callbacks between stages

    async def _floor(self, camera: str) -> int | None:
        """Where the camera's next segment may start: after everything indexed or waiting in the spool."""
        assert self.backend is not None
        indexed = await asyncio.to_thread(self.backend.index.last_end_ms, camera)
        waiting = await asyncio.to_thread(self.spool.last_ticket, camera)
        ends = [e for e in (indexed, waiting.end_ms if waiting else None) if e is not None]
        return max(ends) if ends else None

    async def _segment_closed(self, seg: ClosedSegment) -> None:
        assert self.ingest is not None
        self.ingest.notify(seg.camera)

    async def _segment_stored(self, row: SegmentRow) -> None:
        if self.retention is not None:
            await self.retention.on_segment_stored(row)

    async def _spool_checked(self, status) -> None:
        if self.retention is not None:
            await self.retention.on_spool_check(status.free_bytes)

    async def _recover(self, camera: str) -> None:
        assert self.audit is not None
        await recover_camera(
            camera, spool=self.spool, ffmpeg=self.ffmpeg, floor=self._floor,
            on_segment=self._segment_closed, on_event=self.audit.system,
        )

    def _make_recorder(self, camera: CameraConfig) -> CameraRecorder:
        return CameraRecorder(
            camera, self.cfg, ffmpeg=self.ffmpeg, spool=self.spool, floor=self._floor,
            on_segment=self._segment_closed, recover=self._recover, on_change=self.pulse.fire,
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> NvrServer:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        cfg, stack = self.cfg, self._stack
        log.info("nvr %s starting: data dir %s, %d camera(s)", __version__, cfg.data_dir, len(cfg.cameras))
        self.backend = backend = await open_backend(cfg, stack, may_attach=False, create_keys=True)
        self.audit = AuditLog(backend.index)
        # Started before ingest, so its final checkpoint (on stop) covers what the drain uploaded.
        self.checkpoints = CheckpointWriter(
            store=backend.store, index=backend.index, keyring=backend.keyring, node_id=backend.node_id,
            interval=cfg.keys.checkpoint_interval, on_event=self.audit.system,
        )
        await self.checkpoints.start()
        stack.push_async_callback(self.checkpoints.stop)
        self.retention = RetentionService(
            index=backend.index, store=backend.store, node_id=backend.node_id, audit=self.audit,
            settings=RetentionSettings.from_config(cfg), chain_locks=self.chain_locks,
            lock_file=cfg.data_dir / "retention.lock",
        )
        await self.retention.open()  # rules, holds; the periodic sweep starts last
        stack.push_async_callback(self.retention.stop)

        ingestor = Ingestor(
            store=backend.store, index=backend.index, keyring=backend.keyring, spool=self.spool,
            node_id=backend.node_id, lock_seconds=cfg.retention_min_age if cfg.storage.object_lock else 0.0,
            on_event=self.audit.system, chain_locks=self.chain_locks, on_stored=self._segment_stored,
        )
        self.ingest = IngestService(ingestor, retry_max=cfg.storage.retry_max, on_change=self.pulse.fire)
        stack.push_async_callback(self.ingest.stop)
        stack.push_async_callback(self._drain)
        await self.ingest.start()

        for camera in await asyncio.to_thread(self.spool.cameras):
            await self._recover(camera)

        self.recorders = RecorderSupervisor(self._make_recorder)
        stack.push_async_callback(self.recorders.stop_all)
        self.cameras = CameraRegistry(backend.index, self.recorders, self.audit)
        await self.cameras.load(cfg.cameras)

        self.spoolwatch = SpoolWatch(
            self.spool, self.audit, limit_bytes=cfg.recording.spool_limit_bytes,
            min_free_bytes=cfg.recording.min_free_bytes, on_check=self._spool_checked,
        )
        await self._own_task(self.spoolwatch.run(), "spool-watch")

        await asyncio.to_thread(fresh_private_dir, self.clip_tmp)
        if self.demo:
            token = await asyncio.to_thread(_demo_token, backend.index)
            print(f"demo admin token (shown once): {token}", flush=True)
            await self.audit.system("token.create", "demo-admin", {"role": "admin", "by": "serve --demo"})

        self.exports = ExportService(
            store=backend.store, index=backend.index, keyring=backend.keyring, node_id=backend.node_id,
            audit=self.audit, ffmpeg=self.ffmpeg, directory=cfg.data_dir / "exports",
            checkpoints=self.checkpoints, chain_locks=self.chain_locks,
        )
        await self.exports.start()
        stack.push_async_callback(self.exports.stop)

        runner = web.AppRunner(build_app(self), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.server.listen_host, cfg.server.listen_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else cfg.server.listen_port
        log.info("HTTP API on http://%s:%d/", cfg.server.listen_host, self.http_port)
        await self.retention.start()

    async def _own_task(self, coro, name: str) -> asyncio.Task:
        """Start a task that the exit stack cancels and awaits."""
        task = asyncio.create_task(coro, name=name)

        async def _cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(_cancel)
        return task

    async def _drain(self) -> None:
        assert self.ingest is not None
        if not await self.ingest.drain(DRAIN_SECONDS):
            _, files = await asyncio.to_thread(self.spool.usage)
            log.warning("shutdown: %d segment(s) still in the spool; they are uploaded at the next start", files)

    async def read_segment(self, row: SegmentRow) -> bytes:
        """A segment's original bytes, every hash and the ledger checked (raises IntegrityError)."""
        b = self.backend
        assert b is not None
        return await b.store.run(open_segment, b.store, b.index, b.keyring, row)

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        """Health of every part, for the API and the logs."""
        assert self.recorders is not None and self.ingest is not None and self.spoolwatch is not None
        sp = self.spoolwatch.status
        alarms = [a for a in (sp.alarm, self.ingest.storage_error and f"S3 unavailable: {self.ingest.storage_error}") if a]
        alarms += [f"camera {c}: {e}" for c, e in self.ingest.lane_errors.items() if e != self.ingest.storage_error]
        if self.retention is not None and self.retention.alarm:
            alarms.append(self.retention.alarm)
        return {
            "version": __version__,
            "node": self.backend.node_id if self.backend else None,
            "cameras": {cid: st.as_dict() for cid, st in self.recorders.statuses().items()},
            "spool": {
                "bytes": sp.bytes, "files": sp.files, "limit_bytes": sp.limit_bytes,
                "free_bytes": sp.free_bytes, "alarm": sp.alarm,
            },
            "storage": {"ok": self.ingest.storage_error is None, "error": self.ingest.storage_error},
            "ingest": {
                "segments": self.ingest.stats.segments, "bytes": self.ingest.stats.bytes,
                "errors": self.ingest.stats.errors, "gaps": self.ingest.stats.gaps,
            },
            "retention": self.retention.status() if self.retention is not None else None,
            "alarms": alarms,
        }




def _demo_token(index) -> str:
    index.revoke_token("demo-admin")
    return create_token(index, name="demo-admin", role="admin", cameras=None)


async def serve(cfg: Config, *, demo: bool = False, stop: asyncio.Event | None = None) -> None:
    """Run the server until ``stop`` is set or SIGINT/SIGTERM arrives."""
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with NvrServer(cfg, demo=demo) as srv:
        if demo:
            log.info("demo: recording %s", ", ".join(c.id for c in srv.cfg.cameras))
        await stop.wait()
        log.info("stopping: finishing segments and draining the spool")
