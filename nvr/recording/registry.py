"""The camera registry: cameras persist in the index, config-file cameras are imported at start.

Whose word counts: the latest change wins, whether made in the config file or
over the API. At start, a config camera whose file entry changed since it was
last imported (or that was never imported) is (re)imported; one whose entry
is unchanged keeps whatever the API made of it since, including a deletion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from nvr.base.errors import ConfigError, Conflict, InvalidInput, NotFound
from nvr.config.settings import CameraConfig, camera_from_table
from nvr.recording.supervisor import RecorderSupervisor
from storage.audit import AuditLog
from storage.index import Index

log = logging.getLogger("nvr.cameras")

EDITABLE = ("name", "url", "enabled", "segment_seconds", "rtsp_transport", "audio", "timestamps", "priority",
            "live_url")
# Fields whose change needs a new ffmpeg run.
RECORDING_FIELDS = ("url", "enabled", "segment_seconds", "rtsp_transport", "audio", "timestamps")


def _config_hash(cam: CameraConfig) -> str:
    return hashlib.sha256(json.dumps(cam.to_table(), sort_keys=True).encode()).hexdigest()


def camera_from_json(body: dict[str, Any]) -> CameraConfig:
    """Validate an API camera body; errors name the field."""
    try:
        return camera_from_table(body, "")
    except ConfigError as e:
        raise InvalidInput(str(e), field=e.key) from None


class CameraRegistry:
    """Registered cameras and their recorders; every change is audited.

    On a single node every enabled camera records. In a cluster (``leased``) a camera records
    on this node only while it holds the camera's lease: ``leased(camera)`` names the epoch,
    and the cluster service calls :meth:`record` and :meth:`unrecord` as leases come and go.
    """

    def __init__(self, index: Index, supervisor: RecorderSupervisor, audit: AuditLog, *,
                 leased: Callable[[str], int | None] | None = None):
        self.index = index
        self.supervisor = supervisor
        self.audit = audit
        self.leased = leased
        self._cameras: dict[str, CameraConfig] = {}
        self._sources: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one change at a time: start/stop order stays consistent

    def _start(self, cam: CameraConfig) -> None:
        """Record ``cam`` if it is enabled and (in a cluster) this node holds its lease."""
        if not cam.enabled:
            return
        if self.leased is None:
            self.supervisor.start(cam)
        elif (epoch := self.leased(cam.id)) is not None:
            self.supervisor.start(cam, epoch=epoch, gate=self._gate(cam.id, epoch))

    def _gate(self, camera_id: str, epoch: int) -> Callable[[], bool]:
        leased = self.leased
        assert leased is not None
        return lambda: leased(camera_id) == epoch

    async def record(self, camera_id: str, epoch: int) -> bool:
        """Cluster: this node now holds ``camera_id``'s lease under ``epoch``; record it (False: not enabled)."""
        async with self._lock:
            cam = self._cameras.get(camera_id)
            if cam is None or not cam.enabled:
                return False
            now = self.supervisor.recording()
            if camera_id in now and now[camera_id] == epoch:
                return True
            if camera_id in now:
                await self.supervisor.stop(camera_id)
            self.supervisor.start(cam, epoch=epoch, gate=self._gate(camera_id, epoch))
            return True

    async def unrecord(self, camera_id: str, *, grace: float | None = None) -> None:
        """Cluster: stop recording ``camera_id`` here (its lease is released or lost)."""
        async with self._lock:
            await self.supervisor.stop(camera_id, grace=grace)

    async def refresh(self) -> list[str]:
        """Cluster: take up camera changes another node made (reload from the index); the ids changed."""
        changed = []
        async with self._lock:
            rows = await asyncio.to_thread(self.index.cameras)
            seen = set()
            for cid, table, source, _, _ in rows:
                seen.add(cid)
                try:
                    cam = camera_from_table(table, f"registered camera {cid}")
                except ConfigError as e:
                    log.error("%s; not recording it", e)
                    continue
                old = self._cameras.get(cid)
                self._cameras[cid] = cam
                self._sources[cid] = source
                if old == cam:
                    continue
                changed.append(cid)
                if old is not None and any(getattr(old, k) != getattr(cam, k) for k in RECORDING_FIELDS):
                    await self.supervisor.stop(cid)
                    self._start(cam)
            for cid in sorted(set(self._cameras) - seen):
                changed.append(cid)
                await self.supervisor.stop(cid)
                del self._cameras[cid]
                self._sources.pop(cid, None)
        return changed

    # ------------------------------------------------------------------ start

    async def load(self, from_config: tuple[CameraConfig, ...]) -> None:
        """Import config cameras (latest change wins), then start a recorder per enabled camera."""
        registered = {cid: (cfg, src, h, deleted) for cid, cfg, src, h, deleted in
                      await asyncio.to_thread(self.index.cameras, include_deleted=True)}
        for cam in from_config:
            digest = _config_hash(cam)
            known = registered.get(cam.id)
            if known is None or known[2] != digest:
                await asyncio.to_thread(self.index.put_camera, cam.id, cam.to_table(), source="config",
                                        config_hash=digest)
                if known is not None:
                    await self.audit.system("camera.update", cam.id, {"source": "config file"})
            elif known[3] is not None:
                log.warning("camera %s is in the config file but was deleted over the API; not recording "
                            "(change its config entry to register it again)", cam.id)
        for cid, table, source, _, _ in await asyncio.to_thread(self.index.cameras):
            try:
                cam = camera_from_table(table, f"registered camera {cid}")
            except ConfigError as e:
                log.error("%s; not recording it", e)
                continue
            self._cameras[cid] = cam
            self._sources[cid] = source
            if cam.enabled:
                self._start(cam)
            else:
                log.info("camera %s is disabled, not recording", cid)

    # ------------------------------------------------------------------ queries

    def get(self, camera_id: str) -> CameraConfig | None:
        return self._cameras.get(camera_id)

    def all(self) -> list[CameraConfig]:
        return [self._cameras[k] for k in sorted(self._cameras)]

    def source(self, camera_id: str) -> str:
        return self._sources.get(camera_id, "api")

    # ------------------------------------------------------------------ changes

    async def create(self, body: dict[str, Any], actor: tuple[str, str]) -> CameraConfig:
        cam = camera_from_json(body)
        async with self._lock:
            if cam.id in self._cameras:
                raise Conflict(f"camera {cam.id!r} already exists; PATCH /api/v1/cameras/{cam.id} changes it")
            await asyncio.to_thread(self.index.put_camera, cam.id, cam.to_table(), source="api")
            self._cameras[cam.id] = cam
            self._sources[cam.id] = "api"
            self._start(cam)
        await self.audit.record("camera.create", cam.id, {"url": cam.display_url, "enabled": cam.enabled}, actor=actor)
        return cam

    async def update(self, camera_id: str, patch: dict[str, Any], actor: tuple[str, str]) -> CameraConfig:
        unknown = sorted(set(patch) - set(EDITABLE))
        if unknown:
            what = "id can't be changed" if unknown == ["id"] else f"unknown field {unknown[0]!r}"
            raise InvalidInput(f"{what}; editable fields: {', '.join(EDITABLE)}", field=unknown[0])
        async with self._lock:
            old = self._cameras.get(camera_id)
            if old is None:
                raise NotFound(f"camera {camera_id!r} does not exist")
            table = {**old.to_table(), **patch}
            if table.get("segment_seconds") is None:  # null: back to the global default
                table.pop("segment_seconds", None)
            new = camera_from_json(table)
            changed = {k: patch[k] for k in patch if getattr(old, k) != getattr(new, k)}
            await asyncio.to_thread(self.index.put_camera, camera_id, new.to_table(), source=self.source(camera_id))
            self._cameras[camera_id] = new
            if any(k in changed for k in RECORDING_FIELDS):
                await self.supervisor.stop(camera_id)
                self._start(new)
        shown = {k: {"url": new.display_url, "live_url": new.display_live_url}.get(k, v) for k, v in changed.items()}
        await self.audit.record("camera.update", camera_id, {"changed": shown}, actor=actor)
        return new

    async def delete(self, camera_id: str, actor: tuple[str, str]) -> None:
        """Stop recording and unregister; footage and ledger stay."""
        async with self._lock:
            if camera_id not in self._cameras:
                raise NotFound(f"camera {camera_id!r} does not exist")
            await self.supervisor.stop(camera_id)
            await asyncio.to_thread(self.index.delete_camera, camera_id)
            del self._cameras[camera_id]
            self._sources.pop(camera_id, None)
        await self.audit.record("camera.delete", camera_id, {"footage": "kept"}, actor=actor)
