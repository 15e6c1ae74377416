"""Building one export's bundle: verify, decrypt, stitch, sign, zip, and record the export in the ledger.

Steps (the service runs them for a job, in its staging directory):

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
   with ingest and the retention sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvr.base.errors import NotFound, NvrError
from nvr.base.times import ms_to_rfc3339, parse_rfc3339
from nvr.custody.bundle import clip_file, segment_file, write_bundle
from nvr.custody.checkpoint import CheckpointRefused, CheckpointWriter, trusted_keys
from nvr.custody.exports.table import ExportJob
from nvr.custody.verify import STATUS_OK, combine, verify_with_evidence
from nvr.playback.clip import ClipError, plan_clip, prepare_clip, write_clip
from storage.chainlock import ChainLocks
from storage.envelope import sha256_file
from storage.errors import IndexError_
from storage.index import Index, SegmentRow
from storage.keyring import Keyring, public_pem
from storage.ledger import canonical_json, export_record
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.exports")


class ExportFailed(NvrError):
    """The export can't produce a bundle (nothing verifiable in range, storage failure…)."""


@dataclass(frozen=True)
class Builder:
    """What building a bundle reads and writes: the storage, the keys, the chain locks."""

    store: ObjectStore
    index: Index
    keyring: Keyring
    node_id: str
    checkpoints: CheckpointWriter | None
    # The server's per-camera chain locks (shared with ingest and retention): the export record is
    # appended between their head reads and commits never.
    chain_locks: ChainLocks
    version: str
    clock: Callable[[], int]

    async def build(self, job: ExportJob, staging: Path, out: Path, *,
                    admit: Callable[[int], Awaitable[None]] | None = None) -> dict[str, Any]:
        """Build ``job``'s bundle from ``staging`` into ``out``; the columns of its finished row.

        ``admit(size)`` sees the zip's size before the ledger names it, and may refuse it by raising.
        """
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

        exported_at = self.clock()
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
        info = await asyncio.to_thread(write_bundle, staging, top=job.id, manifest=manifest,
                                       key=self.keyring.signing_key, out=out)
        if admit is not None:
            await admit(info.size)
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
        """The camera's stitched clip of the range (the same code as the clip route); a failure fails the export."""
        rel = clip_file(camera)
        path = staging / rel
        plan = plan_clip(rows, job.start_ms, job.end_ms)
        tmp = staging / "tmp"
        await asyncio.to_thread(lambda: tmp.mkdir(mode=0o700, exist_ok=True))
        await asyncio.to_thread(lambda: path.parent.mkdir(mode=0o700, parents=True, exist_ok=True))

        async def read(row: SegmentRow) -> bytes:
            return await asyncio.to_thread(files[row.id].read_bytes)

        try:
            clip = await prepare_clip(plan, read_segment=read, tmp_dir=tmp)
        except (ClipError, NotFound, OSError) as e:
            raise ExportFailed(f"the stitched clip of {camera} could not be made: {e}") from e
        try:
            with open(path, "wb") as f:  # noqa: ASYNC230 - chunks are written from a thread below
                async def write(chunk: bytes) -> None:
                    await asyncio.to_thread(f.write, chunk)

                await write_clip(clip, write)
        finally:
            clip.close()
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        digest, size = await asyncio.to_thread(sha256_file, path)
        return {"camera": camera, "file": rel, "size": size, "sha256": digest,
                "segments": [r.id for r in clip.used], "gaps": len(plan.gaps), "truncated": clip.truncated}

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
