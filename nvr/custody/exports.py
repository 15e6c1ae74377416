"""Evidence exports as owned background jobs: verify, decrypt, stitch, sign, zip, record in the ledger.

A job (``POST /api/v1/exports``) goes ``queued`` → ``running`` → ``done`` or
``failed``; its row lives in the index table ``exports`` (created here), so the
status survives a restart. A job still queued or running when the server
stopped is marked ``failed`` ("interrupted") at the next start: bundles are
never half-built in place (staging directory, then an atomic rename).

Steps of one job:

1. sign a checkpoint of each camera's current head, so every segment in range
   can be anchored (a refusal is audited by the writer and shows in the report);
2. verify the range exactly as ``POST /api/v1/verify`` does; the decrypted bytes
   of segments whose object checks pass are written to the staging directory;
3. export only segments whose status is ``ok``; the others are listed in the
   manifest's ``excluded`` with their status and failed check (a range with
   nothing exportable fails the job);
4. one stitched clip per camera (nvr.playback.clip, stream copy) — best
   effort, a failure is noted in the manifest;
5. manifest, signatures, SHA256SUMS, VERIFY.txt, zip (nvr.custody.bundle);
6. an ``export`` record appended to each camera's ledger chain, naming the
   manifest's SHA-256 (under the server's per-camera ``ChainLocks``, shared
   with ingest and the retention sweep), and the ``export.done`` audit event.

Bundles are kept under ``<data_dir>/exports`` (mode 0700, files 0600): they
hold decrypted footage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvr import __version__
from nvr.base.errors import NvrError
from nvr.base.times import ms_to_rfc3339, now_ms, parse_rfc3339
from nvr.custody.bundle import clip_file, segment_file, write_bundle
from nvr.custody.checkpoint import CheckpointRefused, CheckpointWriter, trusted_keys
from nvr.custody.verify import STATUS_OK, combine, verify_with_evidence
from nvr.playback.clip import ClipError, plan_clip, stream_clip
from storage.chainlock import ChainLocks
from storage.envelope import sha256_file
from storage.errors import IndexError_, StorageError
from storage.index import Index, SegmentRow
from storage.keyring import Keyring, public_pem
from storage.ledger import canonical_json, export_record
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.exports")

EXPORT_SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- queued, running, done, failed
    cameras TEXT NOT NULL,          -- JSON array
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    bundle TEXT,                    -- file name under the exports directory
    size INTEGER,
    sha256 TEXT,                    -- of the zip
    manifest_sha256 TEXT,
    summary TEXT,                   -- JSON: counts, verdict, excluded, gaps
    error TEXT
)
"""
_COLUMNS = ("id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, created_ms, started_ms, "
            "finished_ms, bundle, size, sha256, manifest_sha256, summary, error")


@dataclass(frozen=True)
class ExportJob:
    id: str
    state: str
    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int
    case_id: str
    reason: str
    actor: str
    role: str
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    bundle: str | None
    size: int | None
    sha256: str | None
    manifest_sha256: str | None
    summary: dict[str, Any] | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        t = lambda ms: ms_to_rfc3339(ms) if ms is not None else None  # noqa: E731
        return {
            "id": self.id, "state": self.state, "cameras": list(self.cameras), "start": t(self.start_ms),
            "end": t(self.end_ms), "case_id": self.case_id, "reason": self.reason, "requested_by": self.actor,
            "created": t(self.created_ms), "started": t(self.started_ms), "finished": t(self.finished_ms),
            "size": self.size, "sha256": self.sha256, "manifest_sha256": self.manifest_sha256,
            "summary": self.summary, "error": self.error,
            "status_url": f"/api/v1/exports/{self.id}",
            "bundle_url": f"/api/v1/exports/{self.id}/bundle" if self.state == "done" else None,
        }


def _job(r: tuple) -> ExportJob:
    (eid, state, cams, start, end, case, reason, actor, role, created, started, finished, bundle, size, sha,
     msha, summary, error) = r
    return ExportJob(eid, state, tuple(json.loads(cams)), start, end, case, reason, actor, role, created, started,
                     finished, bundle, size, sha, msha, json.loads(summary) if summary else None, error)


def _ensure(index: Index) -> None:
    with index.transaction() as db:
        db.execute(EXPORT_SCHEMA)


def fresh_private_dir(path: Path) -> None:
    """An empty directory of mode 0700 (decrypted footage passes through it)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)


class ExportFailed(NvrError):
    """The export can't produce a bundle (nothing verifiable in range, storage failure…)."""


class ExportService:
    """Owns the export jobs' tasks; ``stop()`` cancels and awaits every one."""

    def __init__(self, *, store: ObjectStore, index: Index, keyring: Keyring, node_id: str, audit: Any,
                 ffmpeg: str | None, directory: Path, checkpoints: CheckpointWriter | None = None,
                 chain_locks: ChainLocks | None = None, version: str = __version__, parallel: int = 1):
        self.store = store
        self.index = index
        self.keyring = keyring
        self.node_id = node_id
        self.audit = audit  # storage.audit.AuditLog (record(action, target, detail, actor=...))
        self.ffmpeg = ffmpeg
        self.dir = directory
        self.checkpoints = checkpoints
        # The server's per-camera chain locks (shared with ingest and retention): the export record is
        # appended between their head reads and commits never.
        self.chain_locks = chain_locks or ChainLocks()
        self.version = version
        self._slots = asyncio.Semaphore(parallel)
        self._tasks: dict[str, asyncio.Task] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        def prepare() -> list[str]:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dir.chmod(0o700)
            for p in self.dir.glob("*.staging"):
                shutil.rmtree(p, ignore_errors=True)
            for p in self.dir.glob(".*.part"):
                p.unlink(missing_ok=True)
            _ensure(self.index)
            with self.index.transaction() as db:
                stale = [r[0] for r in db.execute("SELECT id FROM exports WHERE state IN ('queued', 'running')")]
                db.execute("UPDATE exports SET state = 'failed', finished_ms = ?, error = ? "
                           "WHERE state IN ('queued', 'running')",
                           (now_ms(), "interrupted: the server stopped while the export ran; request it again"))
            return stale

        for eid in await asyncio.to_thread(prepare):
            log.warning("export %s was interrupted by the previous shutdown; marked failed", eid)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------------ jobs

    async def create(self, *, cameras: list[str], start_ms: int, end_ms: int, case_id: str, reason: str,
                     actor: tuple[str, str]) -> ExportJob:
        eid = f"exp-{secrets.token_hex(8)}"
        cams = sorted(set(cameras))

        def insert() -> None:
            with self.index.transaction() as db:
                db.execute(
                    "INSERT INTO exports (id, state, cameras, start_ms, end_ms, case_id, reason, actor, role, "
                    "created_ms) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (eid, json.dumps(cams), start_ms, end_ms, case_id, reason, actor[0], actor[1], now_ms()))

        await asyncio.to_thread(insert)
        await self.audit.record("export.create", eid, {
            "cameras": cams, "start": ms_to_rfc3339(start_ms), "end": ms_to_rfc3339(end_ms), "case_id": case_id,
            "reason": reason,
        }, actor=actor)
        task = asyncio.create_task(self._run(eid), name=f"export:{eid}")
        self._tasks[eid] = task
        task.add_done_callback(lambda _t: self._tasks.pop(eid, None))
        job = await self.get(eid)
        assert job is not None
        return job

    async def get(self, export_id: str) -> ExportJob | None:
        def read() -> ExportJob | None:
            rows = self.index.query(f"SELECT {_COLUMNS} FROM exports WHERE id = ?", (export_id,))
            return _job(rows[0]) if rows else None

        return await asyncio.to_thread(read)

    def bundle_path(self, job: ExportJob) -> Path | None:
        return self.dir / job.bundle if job.bundle else None

    async def wait(self, export_id: str, timeout: float) -> ExportJob:
        """The job once it finished (TimeoutError after ``timeout``)."""
        task = self._tasks.get(export_id)
        if task is not None:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        job = await self.get(export_id)
        assert job is not None
        return job

    async def _update(self, export_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)

        def write() -> None:
            with self.index.transaction() as db:
                db.execute(f"UPDATE exports SET {cols} WHERE id = ?", (*fields.values(), export_id))

        await asyncio.to_thread(write)

    async def _run(self, export_id: str) -> None:
        job = await self.get(export_id)
        assert job is not None
        staging = self.dir / f"{export_id}.staging"
        try:
            async with self._slots:
                await self._update(export_id, state="running", started_ms=now_ms())
                await asyncio.to_thread(fresh_private_dir, staging)
                result = await self._build(job, staging)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._update(export_id, state="failed", finished_ms=now_ms(),
                                                  error="interrupted: the server stopped while the export ran"))
            raise
        except Exception as e:
            msg = str(e) if isinstance(e, ExportFailed | StorageError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, ExportFailed | StorageError):
                log.exception("export %s failed", export_id)
            await self._update(export_id, state="failed", finished_ms=now_ms(), error=msg)
            await self.audit.record("export.failed", export_id, {"error": msg, "requested_by": job.actor,
                                                                 "case_id": job.case_id})
        else:
            await self._update(export_id, state="done", finished_ms=now_ms(), **result)
            await self.audit.record("export.done", export_id, {
                "requested_by": job.actor, "case_id": job.case_id, "cameras": list(job.cameras),
                "sha256": result["sha256"], "manifest_sha256": result["manifest_sha256"], "size": result["size"],
                "summary": json.loads(result["summary"])["counts"],
            })
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    async def _build(self, job: ExportJob, staging: Path) -> dict[str, Any]:
        files: dict[str, Path] = {}

        def sink(record: Mapping[str, Any], plain: bytes) -> None:
            rel = segment_file(record["camera"], record["seq"], parse_rfc3339(record["start"]))
            path = staging / rel
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(plain)
            path.chmod(0o600)
            files[f"{record['camera']}:{record['seq']}"] = path

        reports, evidence = [], {}
        for camera in job.cameras:
            if self.checkpoints is not None:
                with contextlib.suppress(CheckpointRefused):
                    await self.checkpoints.write_now(camera)
            report, ev = await verify_with_evidence(self.store, self.index, self.keyring, camera, job.start_ms,
                                                    job.end_ms, sink=sink)
            reports.append(report)
            evidence[camera] = ev
        report = combine(reports, job.start_ms, job.end_ms)
        good = [s for s in report.segments if s.status == STATUS_OK and s.id in files]
        good_ids = {s.id for s in good}
        good_of = {camera: [s for s in good if s.camera == camera] for camera in job.cameras}
        for sid, path in files.items():
            if sid not in good_ids:
                path.unlink(missing_ok=True)
        if not good:
            raise ExportFailed(f"nothing to export: no segment in range verified ok "
                               f"({', '.join(f'{k} {v}' for k, v in report.counts().items() if v) or 'none recorded'})")

        rows = {r.id: r for c in job.cameras
                for r in await asyncio.to_thread(self.index.segments, c, job.start_ms, job.end_ms)}
        seg_entries = []
        for s in good:
            row = rows[s.id]
            rel = files[s.id].relative_to(staging).as_posix()
            seg_entries.append({
                "id": s.id, "camera": s.camera, "seq": s.seq, "start": ms_to_rfc3339(row.start_ms),
                "end": ms_to_rfc3339(row.end_ms), "duration": row.duration_ms / 1000, "partial": row.partial,
                "size": row.size, "sha256": row.sha256, "file": rel, "record_hash": row.record_hash,
                "object_sha256": row.object_sha256, "key_id": row.key_id, "checkpoint": s.checkpoint,
            })
        clips = []
        for camera in job.cameras:
            cam_rows = [rows[s.id] for s in good_of[camera]]
            if cam_rows:
                clips.append(await self._clip(camera, cam_rows, job, staging, files))

        # The chain material: from the record before the first exported segment to the covering checkpoint.
        ledger: dict[str, Any] = {}
        keys = {k: public_pem(v).decode("ascii") for k, v in trusted_keys(self.keyring).items()}
        used_keys: dict[str, str] = {}
        for camera in job.cameras:
            seqs = [s.seq for s in good_of[camera]]
            if not seqs:
                continue
            ev = evidence[camera]
            cover = min((c.seq for c in ev.checkpoints if c.seq >= max(seqs)), default=None)
            lo, hi = min(seqs) - 1, cover if cover is not None else max(seqs)
            ledger[camera] = {
                "records": [r for r in ev.records if lo <= r.get("seq", -1) <= hi],
                "checkpoints": [c.to_json() for c in ev.checkpoints if lo <= c.seq <= hi],
            }
            for c in ev.checkpoints:
                if lo <= c.seq <= hi and c.key_id in keys:
                    used_keys[c.key_id] = keys[c.key_id]

        exported_at = now_ms()
        manifest = {
            "export_id": job.id, "case_id": job.case_id, "reason": job.reason, "exported_by": job.actor,
            "exported_by_role": job.role, "exported_at": ms_to_rfc3339(exported_at), "node": self.node_id,
            "software": {"name": "nvr", "version": self.version},
            "range": {"start": ms_to_rfc3339(job.start_ms), "end": ms_to_rfc3339(job.end_ms)},
            "cameras": list(job.cameras), "segments": seg_entries,
            "excluded": [{"id": s.id, "status": s.status, "check": s.check,
                          "detail": s.failed[0].detail if s.failed else None, "rule": s.rule,
                          "deleted_at": s.deleted_at} for s in report.segments if s.id not in good_ids],
            "gaps": [g.to_json() for g in report.gaps], "clips": clips, "ledger": ledger, "keys": used_keys,
            "verification": {"verdict": report.verdict, "checked_at": ms_to_rfc3339(report.checked_ms),
                             "counts": report.counts(), "problems": [p.to_json() for p in report.problems]},
        }
        out = self.dir / f"{job.id}.zip"
        info = await asyncio.to_thread(write_bundle, staging, top=job.id, manifest=manifest,
                                       key=self.keyring.signing_key, out=out)
        for camera in job.cameras:
            seqs = [s.seq for s in good_of[camera]]
            await self._append_export_record(camera, job, info.manifest_sha256, seqs, exported_at)
        summary = {"verdict": report.verdict, "counts": report.counts(), "exported": len(good),
                   "excluded": manifest["excluded"][:100], "gaps": len(report.gaps),
                   "problems": [p.to_json() for p in report.problems][:100]}
        return {"bundle": out.name, "size": info.size, "sha256": info.sha256,
                "manifest_sha256": info.manifest_sha256, "summary": canonical_json(summary).decode("utf-8")}

    async def _clip(self, camera: str, rows: list[SegmentRow], job: ExportJob, staging: Path,
                    files: dict[str, Path]) -> dict[str, Any]:
        rel = clip_file(camera)
        path = staging / rel
        if not self.ffmpeg:
            return {"camera": camera, "file": None, "error": "no ffmpeg configured"}
        plan = plan_clip(rows, job.start_ms, job.end_ms)
        tmp = staging / "tmp"
        await asyncio.to_thread(lambda: tmp.mkdir(mode=0o700, exist_ok=True))
        await asyncio.to_thread(lambda: path.parent.mkdir(mode=0o700, parents=True, exist_ok=True))

        async def read(row: SegmentRow) -> bytes:
            return await asyncio.to_thread(files[row.id].read_bytes)

        f = await asyncio.to_thread(open, path, "wb")
        try:
            async def write(chunk: bytes) -> None:
                await asyncio.to_thread(f.write, chunk)

            await stream_clip(plan, ffmpeg=self.ffmpeg, read_segment=read, write=write, tmp_dir=tmp)
        except (ClipError, OSError) as e:  # best effort: the segments are the evidence
            await asyncio.to_thread(f.close)
            await asyncio.to_thread(path.unlink, True)
            log.warning("export %s: clip of %s not made: %s", job.id, camera, e)
            return {"camera": camera, "file": None, "error": f"stitched clip not made: {e}"}
        finally:
            if not f.closed:
                await asyncio.to_thread(f.close)
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        digest, size = await asyncio.to_thread(sha256_file, path)
        return {"camera": camera, "file": rel, "size": size, "sha256": digest,
                "segments": [r.id for r in plan.segments], "gaps": len(plan.gaps)}

    async def _append_export_record(self, camera: str, job: ExportJob, manifest_sha: str, seqs: list[int],
                                    exported_at: int) -> None:
        """Append the export record under the camera's chain lock (retried if another process appended)."""
        for attempt in range(10):
            async with self.chain_locks(camera):
                head = await asyncio.to_thread(self.index.chain_head, camera)
                rec = export_record(
                    head=head, export_id=job.id, case_id=job.case_id, manifest_sha256=manifest_sha,
                    start=ms_to_rfc3339(job.start_ms), end=ms_to_rfc3339(job.end_ms),
                    first_seq=min(seqs) if seqs else None, last_seq=max(seqs) if seqs else None,
                    segments=len(seqs), exported_by=job.actor, exported_at=ms_to_rfc3339(exported_at),
                    node=self.node_id)
                try:
                    await asyncio.to_thread(self.index.append_record, rec)
                    return
                except IndexError_:
                    if attempt == 9:
                        raise
            await asyncio.sleep(0.05 * (attempt + 1))
