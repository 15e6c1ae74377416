"""The export service: jobs as owned background tasks, limits per requester, expiry of old bundles.

Limits (``[exports]``, :class:`nvr.config.settings.ExportsConfig`) are per
requester, the actor the API passes (``token:<name>``, ``user:<name>``): a new
export is refused (``ExportLimited``, kind ``LIMITED``: HTTP 429) while the
requester keeps ``max_per_token`` bundles (done ones still on disk plus those
queued or running), or ``max_bytes_per_token`` bytes of done ones. A bundle
that would take its requester past the byte limit once built is removed before
the ledger names it, and its job fails with the same message.

Expiry: a done job's bundle is removed ``keep`` after it finished, at start and
then every ``expiry_interval`` (an owned task); each removal is audited
(``export.expired``) and the row stays, with ``expired_ms`` set. A zip under
the exports directory that no done job names (a crash between the zip and the
row) is removed at start (``export.removed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nvr import __version__
from nvr.base.errors import Kind
from nvr.base.tasks import TaskOwner
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.base.units import format_duration, format_size
from nvr.config.settings import ExportsConfig
from nvr.custody.bundle import BundleError
from nvr.custody.checkpoint import CheckpointWriter
from nvr.custody.exports import table
from nvr.custody.exports.build import Builder, ExportFailed
from nvr.custody.exports.table import ExportJob, Usage
from storage.audit import SYSTEM
from storage.chainlock import ChainLocks
from storage.errors import StorageError
from storage.index import Index
from storage.keyring import Keyring
from storage.objectstore import ObjectStore

log = logging.getLogger("nvr.exports")

INTERRUPTED = "interrupted: the server stopped while the export ran; request it again"


class ExportLimited(ExportFailed):
    """The requester's exports are at a limit of ``[exports]``; retry once one has expired or been removed."""

    kind = Kind.LIMITED


def fresh_private_dir(path: Path) -> None:
    """An empty directory of mode 0700 (decrypted footage passes through it)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)


def expiry_interval(keep: float) -> float:
    """Seconds between expiry passes: a tenth of ``keep``, at least 1 s, at most an hour."""
    return min(3600.0, max(1.0, keep / 10))


class ExportService:
    """Owns the export jobs' tasks and the expiry task; ``stop()`` cancels and awaits every one."""

    def __init__(self, *, store: ObjectStore, index: Index, keyring: Keyring, node_id: str, audit: Any,
                 directory: Path, checkpoints: CheckpointWriter | None = None,
                 chain_locks: ChainLocks | None = None, version: str = __version__, parallel: int = 1,
                 limits: ExportsConfig | None = None, clock: Callable[[], int] = now_ms):
        self.index = index
        self.audit = audit  # storage.audit.AuditLog (record(action, target, detail, actor=...))
        self.dir = directory
        self.limits = limits or ExportsConfig()
        self.clock = clock
        self.builder = Builder(store=store, index=index, keyring=keyring, node_id=node_id,
                               checkpoints=checkpoints, chain_locks=chain_locks or ChainLocks(), version=version,
                               clock=clock)
        self._slots = asyncio.Semaphore(parallel)
        self._admission = asyncio.Lock()  # a limit's check and the insert it admits, one request at a time
        self._tasks: dict[str, asyncio.Task] = {}
        self._owner = TaskOwner("exports", on_event=self._event)

    async def _event(self, action: str, target: str, detail: dict[str, Any]) -> None:
        await self.audit.record(action, target, detail)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        def prepare() -> tuple[list[str], list[str]]:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dir.chmod(0o700)
            for p in self.dir.glob("*.staging"):
                shutil.rmtree(p, ignore_errors=True)
            for p in self.dir.glob(".*.part"):
                p.unlink(missing_ok=True)
            stale = self.index.exports.fail_unfinished(self.clock(), INTERRUPTED)
            named = self.index.exports.bundle_names()
            orphans = sorted(p.name for p in self.dir.glob("*.zip") if p.name not in named)
            for name in orphans:
                (self.dir / name).unlink(missing_ok=True)
            return stale, orphans

        stale, orphans = await asyncio.to_thread(prepare)
        for eid in stale:
            log.warning("export %s was interrupted by the previous shutdown; marked failed", eid)
        for name in orphans:
            log.warning("removed %s: no finished export names it (left by a crash)", self.dir / name)
            await self.audit.record("export.removed", name, {"reason": "no finished export names it"})
        await self.expire()
        if self.limits.keep:
            self._owner.spawn("expiry", self._expire_forever, initial=5.0, maximum=300.0)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._owner.stop()

    # ------------------------------------------------------------------ limits

    def _over(self, actor: str, usage: Usage, adding: int = 0) -> ExportLimited | None:
        """The refusal for ``actor`` holding ``usage`` (plus a bundle of ``adding`` bytes), if a limit says so."""
        lim = self.limits
        wait = (f"; the oldest expires {format_duration(lim.keep)} after it finished (exports.keep)"
                if lim.keep else "")
        if not adding and lim.max_per_token and usage.bundles >= lim.max_per_token:
            return ExportLimited(
                f"{actor} keeps {usage.bundles} export bundle(s), the most a requester may "
                f"(exports.max_per_token = {lim.max_per_token}){wait}",
                limit="max_per_token", kept=usage.bundles, maximum=lim.max_per_token)
        # A new request is refused at the limit; a built bundle only past it.
        full = usage.bytes + adding > lim.max_bytes_per_token if adding else usage.bytes >= lim.max_bytes_per_token
        if lim.max_bytes_per_token and full:
            held = f"{format_size(usage.bytes)} of export bundles"
            return ExportLimited(
                f"{actor} keeps {held}" + (f", and this one is {format_size(adding)}" if adding else "")
                + f": more than a requester may (exports.max_bytes_per_token = "
                f"{format_size(lim.max_bytes_per_token)}){wait}",
                limit="max_bytes_per_token", kept_bytes=usage.bytes, maximum_bytes=lim.max_bytes_per_token)
        return None

    async def usage(self, actor: str) -> Usage:
        """What ``actor``'s exports keep now."""
        return await asyncio.to_thread(table.usage, self.index, actor)

    # ------------------------------------------------------------------ jobs

    async def create(self, *, cameras: list[str], start_ms: int, end_ms: int, case_id: str, reason: str,
                     actor: tuple[str, str]) -> ExportJob:
        """Queue an export for ``actor`` (name, role); :class:`ExportLimited` when a limit is reached."""
        eid = f"exp-{secrets.token_hex(8)}"
        cams = sorted(set(cameras))
        async with self._admission:
            refusal = self._over(actor[0], await self.usage(actor[0]))
            if refusal is not None:
                await self.audit.record("export.refused", actor[0], {"error": str(refusal), "case_id": case_id,
                                                                     **refusal.context}, actor=actor)
                raise refusal
            await asyncio.to_thread(self.index.exports.insert, eid=eid, cameras=cams, start_ms=start_ms,
                                    end_ms=end_ms, case_id=case_id, reason=reason, actor=actor, now=self.clock())
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
        return await asyncio.to_thread(table.get, self.index, export_id)

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
        await asyncio.to_thread(self.index.exports.update, export_id, **fields)

    async def _run(self, export_id: str) -> None:
        job = await self.get(export_id)
        assert job is not None
        staging = self.dir / f"{export_id}.staging"
        out = self.dir / f"{export_id}.zip"

        async def admit(size: int) -> None:
            refusal = self._over(job.actor, await asyncio.to_thread(table.usage, self.index, job.actor,
                                                                    excluding=export_id), size)
            if refusal is not None:
                raise refusal

        try:
            async with self._slots:
                await self._update(export_id, state="running", started_ms=self.clock())
                await asyncio.to_thread(fresh_private_dir, staging)
                result = await self.builder.build(job, staging, out, admit=admit)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._update(export_id, state="failed", finished_ms=self.clock(),
                                                  error="interrupted: the server stopped while the export ran"))
            raise
        except Exception as e:
            known = isinstance(e, ExportFailed | StorageError | BundleError)
            msg = str(e) if known else f"{type(e).__name__}: {e}"
            if not known:
                log.exception("export %s failed", export_id)
            await asyncio.to_thread(out.unlink, True)
            await self._update(export_id, state="failed", finished_ms=self.clock(), error=msg)
            await self.audit.record("export.failed", export_id, {"error": msg, "requested_by": job.actor,
                                                                 "case_id": job.case_id})
        else:
            await self._update(export_id, state="done", finished_ms=self.clock(), **result)
            await self.audit.record("export.done", export_id, {
                "requested_by": job.actor, "case_id": job.case_id, "cameras": list(job.cameras),
                "sha256": result["sha256"], "manifest_sha256": result["manifest_sha256"], "size": result["size"],
                "summary": json.loads(result["summary"])["counts"],
            })
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    # ------------------------------------------------------------------ removal

    async def _remove(self, job: ExportJob, action: str, detail: dict[str, Any],
                      actor: tuple[str, str] | None) -> None:
        """Delete ``job``'s bundle file, clear it from the row, audit ``action``."""
        path = self.bundle_path(job)
        if path is not None:
            await asyncio.to_thread(path.unlink, True)
        await self._update(job.id, bundle=None, expired_ms=self.clock())
        detail = {"case_id": job.case_id, "requested_by": job.actor, "sha256": job.sha256, "size": job.size,
                  "finished": ms_to_rfc3339(job.finished_ms or 0), **detail}
        await self.audit.record(action, job.id, detail, actor=actor or SYSTEM)

    async def remove(self, export_id: str, *, actor: tuple[str, str]) -> ExportJob | None:
        """Remove a done job's bundle before it expires (audited ``export.removed``); the job, None if unknown."""
        job = await self.get(export_id)
        if job is not None and job.state == "done" and job.bundle:
            await self._remove(job, "export.removed", {"reason": "removed on request"}, actor)
            job = await self.get(export_id)
        return job

    async def expire(self) -> list[str]:
        """Remove every bundle that finished more than ``keep`` ago; the ids of the jobs expired."""
        keep_ms = int(self.limits.keep * 1000)
        if not keep_ms:
            return []
        cutoff = self.clock() - keep_ms
        old = [j for j in await asyncio.to_thread(table.kept, self.index) if (j.finished_ms or 0) <= cutoff]
        for job in old:
            await self._remove(job, "export.expired", {"keep": format_duration(self.limits.keep)}, None)
            log.info("export %s expired: bundle removed (finished %s, exports.keep %s)", job.id,
                     ms_to_rfc3339(job.finished_ms or 0), format_duration(self.limits.keep))
        return [j.id for j in old]

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(expiry_interval(self.limits.keep))
            await self.expire()
