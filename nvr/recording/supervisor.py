"""Owns the camera recorders: one named task each, started and stopped at runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nvr.config.settings import CameraConfig
from nvr.recording.recorder import CameraRecorder, CameraStatus

log = logging.getLogger("nvr.supervisor")


class RecorderSupervisor:
    """Starts a recorder per enabled camera; stops them in reverse order of start."""

    def __init__(self, factory: Callable[[CameraConfig], CameraRecorder]):
        self.factory = factory
        self._recorders: dict[str, CameraRecorder] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self.restarts = 0  # recorder tasks that ended unasked and were started again
        self._stopping = False

    def start(self, camera: CameraConfig, *, epoch: int | None = None,
              gate: Callable[[], bool] | None = None) -> None:
        """Record ``camera`` (in a cluster, under its lease ``epoch``, starting ffmpeg only while ``gate()``)."""
        if camera.id in self._tasks:
            raise RuntimeError(f"camera {camera.id} is already recording")
        rec = self.factory(camera)
        rec.epoch, rec.gate = epoch, gate
        self._recorders[camera.id] = rec
        task = asyncio.create_task(rec.run(), name=f"recorder:{camera.id}")
        self._tasks[camera.id] = task
        task.add_done_callback(lambda t, cam=camera: self._ended(cam, t, epoch, gate))

    def pids(self) -> list[int]:
        """The ffmpeg processes recording now (read from any thread: the trust guard's)."""
        return [pid for rec in list(self._recorders.values()) if (pid := rec.status.pid) is not None]

    def recording(self) -> dict[str, int | None]:
        """The cameras recording now, with the epoch each records under."""
        return {cid: rec.epoch for cid, rec in self._recorders.items()}

    def _ended(self, camera: CameraConfig, task: asyncio.Task, epoch: int | None,
               gate: Callable[[], bool] | None) -> None:
        """A recorder ends only when stopped; one that ended otherwise is reported and started again."""
        if self._stopping or self._tasks.get(camera.id) is not task:
            return  # stopped (or replaced) on purpose
        error = "ended" if task.cancelled() or task.exception() is None else repr(task.exception())
        log.critical("camera %s: recorder task %s without being stopped; starting it again", camera.id, error)
        self.restarts += 1
        del self._tasks[camera.id]
        self._recorders.pop(camera.id, None)
        self.start(camera, epoch=epoch, gate=gate)

    async def stop(self, camera_id: str, *, grace: float | None = None) -> None:
        """Finish the camera's current segment and stop its recorder (ffmpeg given ``grace`` seconds)."""
        rec = self._recorders.pop(camera_id, None)
        task = self._tasks.pop(camera_id, None)
        if rec is None or task is None:
            return
        rec.stop(grace=grace)
        try:
            await task
        except Exception:
            log.exception("camera %s: recorder failed while stopping", camera_id)

    async def stop_all(self) -> None:
        """Stop every recorder: all are asked at once (each gets its grace), awaited in reverse start order."""
        self._stopping = True
        ids = list(self._tasks)[::-1]
        for cid in ids:
            self._recorders[cid].stop()
        results = await asyncio.gather(*(self._tasks[cid] for cid in ids), return_exceptions=True)
        for cid, res in zip(ids, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                log.error("camera %s: recorder ended with %r", cid, res)
        self._recorders.clear()
        self._tasks.clear()

    def segment_start(self, camera_id: str, file: str) -> int | None:
        """Where ``camera_id``'s spool file ``file`` starts on the wall clock, when its recorder knows."""
        rec = self._recorders.get(camera_id)
        return rec.segment_start(file) if rec else None

    def status(self, camera_id: str) -> CameraStatus | None:
        rec = self._recorders.get(camera_id)
        return rec.status if rec else None

    def statuses(self) -> dict[str, CameraStatus]:
        """Every recorder's status, its ``problem`` filled in from :meth:`CameraRecorder.health`."""
        for rec in self._recorders.values():
            rec.status.problem = rec.health()
        return {cid: rec.status for cid, rec in self._recorders.items()}

    def problems(self) -> dict[str, str]:
        """Cameras that should record and do not, with the reason."""
        return {cid: st.problem for cid, st in self.statuses().items() if st.problem}
