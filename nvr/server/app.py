"""Wiring of ``nvr serve``: every service started in order and torn down in exactly the reverse order.

Start order; each stop is registered on the AsyncExitStack right after its
start, so the stack unwinds last-in first-out. Nothing before step 9 asks S3
anything, so recording and the API are up within seconds whatever S3 does:

1. keyring, index, the S3 client (and the embedded SeaweedFS, with its watch:
   a weed that dies is restarted on the same data and ports)
2. the checkpoint writer, retention (tables, rules, holds, the data-dir lock)
   and the ingest lanes, built but not yet writing the ledger
3. spool recovery: files without a ticket become partial segments
4. camera registry (config cameras imported) and a recorder per enabled camera
5. spool watch
6. export jobs, HTTP server (the API gets its services from ``build_app``)
7. the ledger gate, in the background: the bucket is checked (created when
   missing), each camera's chain in the index is compared with the bucket's
   (``nvr.ingest.chaincheck``), and an index that is missing, empty or behind
   the bucket is rebuilt from the bucket (``nvr reindex``) *before* anything
   appends to a chain: a second chain from seq 0 is never written. Then
8. checkpoints, ingest lanes and the periodic retention sweep start. Until
   then segments wait in the spool and health says why.

On shutdown the gate and the retention sweeps stop first, then the HTTP
server, the export jobs and the spool watch; then every recorder finishes its
segment, ingest drains the spool (bounded, and not at all while S3 takes no
uploads) and stops; then retention releases its lock, the checkpoint writer
signs the last heads (bounded), storage closes and the embedded S3 stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from nvr import __version__
from nvr.api.app import SERVER_OPTIONS, build_app
from nvr.api.deps import ClipSettings, Services
from nvr.api.limits import ConcurrencyLimit
from nvr.api.metrics import HttpMetrics, MetricsSources
from nvr.api.sessions import SessionPolicy
from nvr.api.urltokens import SECRET_BYTES, UrlSigner
from nvr.base.errors import Kind, NvrError
from nvr.base.ffmpeg import find_ffmpeg
from nvr.base.pulse import Pulse
from nvr.base.tasks import TaskOwner
from nvr.cluster import ClusterService, ClusterSettings
from nvr.config.settings import DEMO_CAMERAS, CameraConfig, Config
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.exports import ExportService, fresh_private_dir
from nvr.custody.reindex import reindex, summarize
from nvr.ingest.chaincheck import ChainCheck, bucket_cameras, check_camera
from nvr.ingest.lanes import IngestService
from nvr.ingest.pipeline import Ingestor, object_key
from nvr.live.hub import LiveHub
from nvr.live.substream import Substream
from nvr.recording.recorder import CameraRecorder
from nvr.recording.recovery import recover_camera
from nvr.recording.registry import CameraRegistry
from nvr.recording.spoolwatch import SpoolWatch
from nvr.recording.supervisor import RecorderSupervisor
from nvr.server.backend import Backend, open_backend
from nvr.server.demo import DEMO_TOKEN, DEMO_USER, demo_token, demo_user
from nvr.server.health import alarms, status
from retention.service import RetentionService, RetentionSettings
from storage.audit import AuditLog
from storage.chainlock import ChainLocks
from storage.index import SegmentRow
from storage.retrieve import open_segment
from storage.spool import ClosedSegment, Spool

log = logging.getLogger("nvr.app")

# How long shutdown waits for the spool to empty into S3 before leaving the rest for the next start.
DRAIN_SECONDS = 10.0
# How long a start waits for the ledger gate before returning anyway (it goes on in the background).
READY_WAIT = 5.0
# The secret that signs URL tokens (nvr.api.urltokens), in the data dir. Not footage's keys: losing it
# only ends the links it signed, so it needs no backup and is not in the keyring.
URL_TOKEN_KEY = "url-token.key"


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
        self.demo_password: str | None = None  # the demo user's, printed once by ``nvr serve --demo``
        self.pulse = Pulse()  # fired on every segment, ingest, status change
        self.chain_locks = ChainLocks()  # one writer per camera chain (ingest, tombstones, exports); see _start
        self.cluster: ClusterService | None = None  # this node's leases, when [cluster] is enabled
        self.checkpoints: CheckpointWriter | None = None
        self.exports: ExportService | None = None
        self.retention: RetentionService | None = None
        self.app: web.Application | None = None  # the API, once started
        self.url_signer: UrlSigner | None = None  # signs the API's URL tokens, from the data dir's secret
        self.live: LiveHub | None = None
        self.ledger_ready = asyncio.Event()  # set once the gate let the ledger writers start
        self.tasks: list[TaskOwner] = []  # every owner of this server's long-lived tasks, in start order
        self._checkpoints_started = False

    # ------------------------------------------------------------------ callbacks between stages

    async def _floor(self, camera: str) -> int | None:
        """Where the camera's next segment may start: after everything indexed or waiting in the spool."""
        assert self.backend is not None
        indexed = await asyncio.to_thread(self.backend.index.last_end_ms, camera)
        waiting = await asyncio.to_thread(self.spool.last_ticket, camera)
        ends = [e for e in (indexed, waiting.end_ms if waiting else None) if e is not None]
        return max(ends) if ends else None

    async def _run_floor(self, camera: str, run: str) -> int | None:
        """Where a run's next segment may start: after the run's own last segment, indexed or spooled."""
        assert self.backend is not None
        indexed = await asyncio.to_thread(self.backend.index.run_end_ms, camera, run, int(run[1:]))
        waiting = await asyncio.to_thread(self.spool.run_end_ms, camera, run)
        ends = [e for e in (indexed, waiting) if e is not None]
        return max(ends) if ends else None

    async def _segment_closed(self, seg: ClosedSegment) -> None:
        assert self.ingest is not None
        self.ingest.notify(seg.camera)

    async def _segment_stored(self, row: SegmentRow) -> None:
        if self.cluster is not None:
            self.cluster.note_ingested(row.camera)
        if self.retention is not None:
            await self.retention.on_segment_stored(row)

    async def _spool_checked(self, status) -> None:
        if self.retention is not None:
            await self.retention.on_spool_check(status.free_bytes)

    async def _event(self, action: str, target: str, detail: dict) -> None:
        """An audit entry from a stage; a failing audit write (its disk full too) is logged, never raised."""
        assert self.audit is not None
        try:
            await self.audit.system(action, target, detail)
        except Exception as e:
            log.error("audit: can't record %s %s (%s: %s): %s", action, target, type(e).__name__, e, detail)

    async def _recover(self, camera: str) -> None:
        await recover_camera(
            camera, spool=self.spool, ffmpeg=self.ffmpeg, floor=self._floor,
            on_segment=self._segment_closed, on_event=self._event, run_floor=self._run_floor,
        )

    def _make_recorder(self, camera: CameraConfig) -> CameraRecorder:
        return CameraRecorder(
            camera, self.cfg, ffmpeg=self.ffmpeg, spool=self.spool, floor=self._floor,
            on_segment=self._segment_closed, recover=self._recover, on_change=self.pulse.fire,
            on_event=self._event,
        )

    def _substream(self, camera_id: str) -> Substream | None:
        """The live source of a camera's ``live_url``, None when it declares none."""
        cam = self.cameras.get(camera_id) if self.cameras is not None else None
        if cam is None or not cam.live_url:
            return None
        return Substream(cam, self.ffmpeg, self.spool.camera_dir(camera_id),
                         connect_timeout=self.cfg.recording.connect_timeout)

    def _owner(self, name: str) -> TaskOwner:
        """A task owner whose stop is registered now, so it stops in reverse order of this call."""
        owner = TaskOwner(name, on_event=self._event, on_change=self.pulse.fire)
        self.tasks.append(owner)
        self._stack.push_async_callback(owner.stop)
        return owner

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> NvrServer:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        # With S3 answering, the ledger writers run before the caller goes on; without, the start
        # returns anyway (recording goes to the spool) and health says what is awaited.
        try:
            await asyncio.wait_for(self.ledger_ready.wait(), READY_WAIT)
        except TimeoutError:
            log.warning("started without S3: segments wait in the spool until the bucket answers")
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        cfg, stack = self.cfg, self._stack
        # Everything nvr and its children write (spool footage, the index, exports) is private.
        os.umask(0o077)
        # The index's calls run here (asyncio.to_thread): bounded, and wide enough that calls waiting on
        # an index that doesn't answer (10 s to give up) leave room for the rest.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="nvr-io"))
        log.info("nvr %s starting: data dir %s, %d camera(s)", __version__, cfg.data_dir, len(cfg.cameras))
        self.backend = backend = await open_backend(cfg, stack, may_attach=False, create_keys=True,
                                                    check_bucket=False)
        self.audit = AuditLog(backend.index)
        log.info("index: %s %s, schema version %d", backend.index.dialect, backend.index.describe(),
                 await asyncio.to_thread(backend.index.schema_version))
        if backend.embedded is not None:
            self._owner("embedded-s3").spawn("weed", backend.embedded.watch, initial=0.5, maximum=10.0)
        # Across processes too when the index is shared (PostgreSQL): nodes of a cluster take turns.
        self.chain_locks = ChainLocks(backend.index)
        if cfg.cluster.enabled:
            self.cluster = ClusterService(
                index=backend.index, settings=ClusterSettings(
                    node_id=backend.node_id, address=cfg.cluster.address, capacity=cfg.cluster.capacity,
                    ttl=cfg.cluster.lease_ttl, max_clock_skew=cfg.cluster.max_clock_skew, version=__version__),
                keyring=backend.keyring, store=backend.store, on_event=self._event, on_change=self.pulse.fire,
                on_catalog_change=self._catalog_changed)

        # Built now, started by the ledger gate; stopped last (after the drain) to sign what it uploaded.
        self.checkpoints = CheckpointWriter(
            store=backend.store, index=backend.index, keyring=backend.keyring, node_id=backend.node_id,
            interval=cfg.keys.checkpoint_interval, on_event=self._event,
        )
        stack.push_async_callback(self._stop_checkpoints)
        retention_settings = RetentionSettings.from_config(cfg)
        self.retention = RetentionService(
            index=backend.index, store=backend.store, node_id=backend.node_id, audit=self.audit,
            settings=retention_settings, chain_locks=self.chain_locks, lock_file=cfg.data_dir / "retention.lock",
        )
        await self.retention.open()  # rules, holds, the lock; the periodic sweep starts with the gate
        # If the start fails before the sweep starts, this releases the lock; at shutdown it stops a
        # low-disk sweep a late spool check may have started after the first stop.
        stack.push_async_callback(self.retention.close)

        ingestor = Ingestor(
            store=backend.store, index=backend.index, keyring=backend.keyring, spool=self.spool,
            node_id=backend.node_id, lock_seconds=retention_settings.lock_seconds,
            on_event=self._event, chain_locks=self.chain_locks, on_stored=self._segment_stored,
            fence_skew_ms=round(cfg.cluster.max_clock_skew * 1000),
        )
        self.ingest = IngestService(ingestor, retry_max=cfg.storage.retry_max, on_change=self.pulse.fire)
        stack.push_async_callback(self.ingest.stop)
        stack.push_async_callback(self._drain)  # before the stop: the lanes upload what the recorders closed

        for camera in await asyncio.to_thread(self.spool.cameras):
            await self._recover(camera)

        self.recorders = RecorderSupervisor(self._make_recorder)
        stack.push_async_callback(self.recorders.stop_all)  # before load: it starts recorders and may fail midway
        self.cameras = CameraRegistry(backend.index, self.recorders, self.audit,
                                      leased=self.cluster.holds if self.cluster is not None else None)
        await self.cameras.load(cfg.cameras)  # in a cluster nothing records before a lease is claimed

        self.spoolwatch = SpoolWatch(
            self.spool, self.audit, limit_bytes=cfg.recording.spool_limit_bytes,
            min_free_bytes=cfg.recording.min_free_bytes, on_check=self._spool_checked,
        )
        self._owner("spool").spawn("watch", self.spoolwatch.run, initial=1.0, maximum=30.0)

        await asyncio.to_thread(fresh_private_dir, self.clip_tmp)
        if self.demo:
            token = await asyncio.to_thread(demo_token, backend.index)
            print(f"demo admin token (shown once): {token}", flush=True)
            await self._event("token.create", DEMO_TOKEN, {"role": "admin", "by": "serve --demo"})
            self.demo_password = await asyncio.to_thread(demo_user, backend.index)
            await self._event("user.update", DEMO_USER, {"changed": ["password", "role", "cameras"], "by": "serve --demo"})

        self.exports = ExportService(
            store=backend.store, index=backend.index, keyring=backend.keyring, node_id=backend.node_id,
            audit=self.audit, directory=cfg.data_dir / "exports",
            checkpoints=self.checkpoints, chain_locks=self.chain_locks, limits=cfg.exports,
        )
        await self.exports.start()
        stack.push_async_callback(self.exports.stop)

        self.url_signer = UrlSigner(await asyncio.to_thread(url_token_secret, cfg.data_dir / URL_TOKEN_KEY),
                                    ttl_ms=round(cfg.server.link_ttl_seconds * 1000))
        self.live = LiveHub(self.spool, wall_start=self.recorders.segment_start, substream=self._substream,
                            on_event=self._event, sub_linger=cfg.server.live_linger_seconds)
        self.app = build_app(self._services())
        runner = web.AppRunner(self.app, access_log=None, **SERVER_OPTIONS)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        stack.push_async_callback(self.live.close)  # live sessions end first: the HTTP server then stops at once
        site = web.TCPSite(runner, cfg.server.listen_host, cfg.server.listen_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else cfg.server.listen_port
        log.info("HTTP API on http://%s:%d/", cfg.server.listen_host, self.http_port)
        if self.cluster is not None:
            await self._start_cluster()
        stack.push_async_callback(self.retention.stop_sweeps)  # the periodic sweep: first to stop
        self._owner("start").spawn("ledger-gate", self._open_ledger, once=True, initial=1.0, maximum=15.0)

    async def _start_cluster(self) -> None:
        """Join the cluster; leases are claimed from the first round on. Stops first: drain, then leave."""
        cl = self.cluster
        assert cl is not None and self.cameras is not None and self.retention is not None
        assert self.checkpoints is not None
        if not cl.settings.address:
            cl.settings = replace(cl.settings, address=f"http://{self.cfg.server.listen_host}:{self.http_port}")
        cl.registry = self.cameras
        self.retention.cluster_gate = lambda: cl.sweeper
        self.checkpoints.select = cl.checkpoint_cameras
        await cl.join()
        self._stack.push_async_callback(cl.drain)  # after the loop stopped: recorders close, leases released
        owner = self._owner("cluster")
        self._stack.push_async_callback(cl.stop_listening)  # the listener thread ends within a second
        owner.spawn("listen", cl.listen_forever, initial=1.0, maximum=10.0)
        owner.spawn("leases", cl.run, initial=0.2, maximum=cl.settings.interval)
        owner.spawn("trust-watchdog", cl.watchdog, initial=0.1, maximum=1.0)
        cl.start_guard()
        self._stack.push_async_callback(cl.stop_guard)

    async def _catalog_changed(self) -> None:
        """Another node changed cameras or retention rules: take them up."""
        assert self.cameras is not None and self.retention is not None
        changed = await self.cameras.refresh()
        if changed:
            log.info("cluster: camera change(s) from another node taken up: %s", ", ".join(changed[:20]))
        await self.retention.reload_rules()

    async def _open_ledger(self) -> None:
        """Step 7 of the start: the bucket, then no chain forked, then the ledger writers (retried until done)."""
        b = self.backend
        assert b is not None and self.checkpoints is not None and self.ingest is not None
        assert self.retention is not None and self.cameras is not None
        await b.store.run(b.store.ensure_bucket)
        behind = [c for c in await self._chain_checks() if c.ahead]
        if behind and self.cluster is not None:
            behind = await self._still_behind(behind)
        if behind:
            for c in behind:
                log.error("the index is behind the bucket: %s", c.describe())
            await self._event("index.behind_bucket", "index", {"cameras": [c.describe() for c in behind][:50]})
            log.warning("rebuilding the index's ledger from the bucket before any upload (nvr reindex)")
            report = await reindex(b.store, b.index, b.keyring, force=True)
            for line in summarize(report):
                log.warning("reindex: %s", line)
            await self._event("index.rebuilt", "index", {"summary": summarize(report)[:20]})
            still = [c for c in await self._chain_checks() if c.ahead]
            if still:
                raise NvrError(f"the index is still behind the bucket after a rebuild ({still[0].describe()}); "
                               "uploads stay stopped: stop nvr and run `nvr reindex --force`")
        await self.checkpoints.start()
        self._checkpoints_started = True
        await self.ingest.start()
        await self.retention.start()
        self.ledger_ready.set()
        self.pulse.fire()

    async def _still_behind(self, behind: list[ChainCheck]) -> list[ChainCheck]:
        """In a cluster, other nodes write while this one starts: a segment PUT a moment ago and not yet
        indexed looks like an index behind the bucket. Look again; what stays behind stops this node's
        uploads (it never rebuilds an index other nodes are writing)."""
        b = self.backend
        assert b is not None
        for _ in range(3):
            await asyncio.sleep(2.0)
            behind = list(await asyncio.gather(*(
                b.store.run(check_camera, b.store, b.index, self.spool, c.camera, object_key) for c in behind)))
            behind = [c for c in behind if c.ahead]
            if not behind:
                return []
        raise NvrError(f"the shared index is behind the bucket ({behind[0].describe()}); this node's uploads stay "
                       "stopped: stop every node and run `nvr reindex --force` on one")

    async def _chain_checks(self) -> list[ChainCheck]:
        """Each camera the index, the spool, the registry or the bucket knows, compared (bounded by the S3 pool)."""
        b = self.backend
        assert b is not None and self.cameras is not None
        cameras = set(await asyncio.to_thread(b.index.ledger_cameras))
        cameras |= set(await asyncio.to_thread(self.spool.cameras))
        cameras |= {c.id for c in self.cameras.all()}
        cameras |= await b.store.run(bucket_cameras, b.store)
        return list(await asyncio.gather(*(
            b.store.run(check_camera, b.store, b.index, self.spool, cam, object_key)
            for cam in sorted(cameras))))

    async def _stop_checkpoints(self) -> None:
        if self._checkpoints_started and self.checkpoints is not None:
            self._checkpoints_started = False
            if self.ingest is not None and self.ingest.problem is not None:
                # S3 takes no uploads: nothing to sign that could be stored; the next start signs.
                await self.checkpoints.stop(final=False)
            else:
                await self.checkpoints.stop()

    def _services(self) -> Services:
        """What the API's handlers use, once everything it needs is started."""
        b = self.backend
        assert b is not None and self.audit is not None and self.cameras is not None and self.recorders is not None
        assert self.ingest is not None and self.spoolwatch is not None and self.retention is not None
        assert self.exports is not None and self.checkpoints is not None and self.url_signer is not None
        return Services(
            index=b.index, store=b.store, keyring=b.keyring, audit=self.audit, cameras=self.cameras,
            recorders=self.recorders, spool=self.spool, read_segment=self.read_segment, status=self.status,
            metrics=MetricsSources(ingest=self.ingest, spoolwatch=self.spoolwatch, recorders=self.recorders,
                                   cameras=self.cameras, retention=self.retention, http=self.metrics,
                                   status=self.status, live=self.live),
            clips=ClipSettings(tmp_dir=self.clip_tmp,
                               max_seconds=self.cfg.server.max_clip_seconds,
                               concurrency=ConcurrencyLimit("clips", self.cfg.server.clips,
                                                            self.cfg.server.clips_per_token)),
            retention=self.retention, exports=self.exports, checkpoints=self.checkpoints,
            url_signer=self.url_signer, live=self.live,
            live_limit=ConcurrencyLimit("live viewers", self.cfg.server.live_viewers,
                                        self.cfg.server.live_viewers_per_token),
            session_policy=SessionPolicy(round(self.cfg.server.session_idle_seconds * 1000),
                                         round(self.cfg.server.session_max_seconds * 1000)),
        )

    async def _drain(self) -> None:
        assert self.ingest is not None
        if not self.ledger_ready.is_set():
            return  # nothing uploads before the gate opened
        if not await self.ingest.drain(DRAIN_SECONDS):
            _, files = await asyncio.to_thread(self.spool.usage)
            log.warning("shutdown: %d segment(s) still in the spool; they are uploaded at the next start", files)

    async def read_segment(self, row: SegmentRow) -> bytes:
        """A segment's original bytes, every hash and the ledger checked (raises IntegrityError)."""
        b = self.backend
        assert b is not None
        return await b.store.run(open_segment, b.store, b.index, b.keyring, row)

    def failure(self) -> str | None:
        """Why the server can't go on (an owned task that may not be restarted gave up), else None."""
        return next((o.failure for o in self.tasks if o.failed.is_set()), None)

    # ------------------------------------------------------------------ status

    def alarms(self) -> list[str]:
        """Everything an operator must act on now, each in words that name the cause."""
        return alarms(self)

    def status(self) -> dict:
        """Health of every part, for the API and the logs."""
        return status(self)


def url_token_secret(path: Path) -> bytes:
    """The URL-token secret in ``path``, created once (32 random bytes, mode 0600 from the first byte on).

    A file readable by others, or not of 32 bytes, is refused: anyone who reads it can sign links.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made by an earlier start (or by another process just now): read it below
    else:
        try:
            os.write(fd, os.urandom(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("created the URL-token secret %s (mode 0600)", path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise NvrError(f"{path} has mode {mode:04o}; the URL-token secret must be readable by its owner only "
                       "(chmod 600)", kind=Kind.MISCONFIGURED)
    with open(path, "rb") as f:
        data = f.read(SECRET_BYTES + 1)
    if len(data) != SECRET_BYTES:
        raise NvrError(f"{path} holds {len(data)} bytes, a URL-token secret is {SECRET_BYTES}: remove it (links "
                       "signed with it stop working) and restart", kind=Kind.MISCONFIGURED)
    return data
