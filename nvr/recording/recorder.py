"""One camera's recorder: supervises ffmpeg runs and turns its segment list into closed segments.

A run is one ffmpeg process. The supervisor restarts it with capped, jittered
back-off when it exits, kills and restarts it when no segment closed within the
stall deadline or when the camera froze, and on stop asks it to finish the
current segment (``q``, then SIGINT, then SIGKILL). Files a run leaves without
a segment-list line become partial segments (see ``nvr.recovery``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from nvr.base.events import EventSink, no_event
from nvr.base.ffmpeg import probe_duration
from nvr.base.redact import redact_text, url_secrets
from nvr.base.times import ms_to_rfc3339, now_ms
from nvr.config.settings import CameraConfig, Config
from nvr.recording.backoff import Backoff
from nvr.recording.command import hidden_input, record_command
from nvr.recording.process import die_with_parent, write_private
from nvr.recording.runclock import RunClock
from storage.spool import SEGMENT_RE, ClosedSegment, Spool, closed_now, run_id

log = logging.getLogger("nvr.recorder")

# Keys of ffmpeg's -progress output (one key=value a line, every stats period).
_PROGRESS_KEYS = frozenset({"frame", "fps", "stream_0_0_q", "bitrate", "total_size", "out_time_us", "out_time_ms",
                            "out_time", "dup_frames", "drop_frames", "speed", "progress"})
_REPEAT_RE = re.compile(r"Last message repeated \d+ times?")
_CAUSE_RE = re.compile(r"(?i)error|fail|refused|timed out|timeout|unreachable|not found|denied|unauthorized|"
                       r"no route|reset by peer|invalid|could not|unable|no space|broken pipe|unsupported")
# mp4 can't carry the camera's audio (G.711 PCMA/PCMU, G.726…): record video with the audio in AAC instead.
_AUDIO_UNSUPPORTED_RE = re.compile(r"(?i)(could not find tag for codec (pcm_alaw|pcm_mulaw|adpcm_g72\d|pcm_s16)"
                                   r"|codec not currently supported in container)")
# A camera that keeps its socket open but sends no frame for this long is frozen: ffmpeg is restarted and
# health says so. Longer than the longest GOP cameras use (4 s) plus a consumer link's hiccup.
FRAME_TIMEOUT = 10.0
# A camera that lost its stream this often within the window, each time after recording, is flapping: it
# records now, but footage was lost again and again, so health says so until the window passes.
# How long a segment-list line whose time disagrees with the wall clock waits for a sign of life: it is an
# observation of the camera's clock only if frames still arrive after it. A line written because the stream
# ended (ffmpeg timed out, flushing the keyframe its timestamp filter held) comes late and is followed by
# no frame. Above ffmpeg's one-second progress period.
LAST_LINE_WAIT = 3.0
FLAP_COUNT = 3
FLAP_WINDOW_MS = 10 * 60 * 1000

@dataclass
class CameraStatus:
    """What the API shows about a camera's recording; every string is redacted."""

    camera: str
    state: str = "stopped"  # starting | recording | backoff | stopping | stopped
    run: str | None = None
    pid: int | None = None
    since: str | None = None
    last_segment_end: str | None = None
    last_segment_closed: str | None = None
    segments: int = 0
    restarts: int = 0
    last_exit_code: int | None = None
    last_error: str | None = None
    next_retry_in: float | None = None
    recent_outages: int = 0  # times it stopped delivering after recording, in the last FLAP_WINDOW_MS
    placement_corrections: int = 0  # segments whose run was re-anchored on the wall clock (docs/timing.md)

    down_since: str | None = None  # when the camera last stopped delivering segments, while it does not
    problem: str | None = None  # why this camera is not recording, in words (None while it records)
    health: str = "recording"  # recording | never_recorded | down | flapping (what ``problem`` says)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SegmentSink = Callable[[ClosedSegment], Awaitable[None]]
FloorFn = Callable[[str], Awaitable[int | None]]
RecoverFn = Callable[[str], Awaitable[None]]


class CameraRecorder:
    """Supervises ffmpeg for one camera until :meth:`stop`."""

    def __init__(
        self,
        camera: CameraConfig,
        cfg: Config,
        *,
        ffmpeg: str,
        spool: Spool,
        floor: FloorFn,
        on_segment: SegmentSink,
        recover: RecoverFn,
        on_change: Callable[[], None] = lambda: None,
        on_event: EventSink = no_event,
    ):
        self.camera = camera
        self.cfg = cfg
        self.ffmpeg = ffmpeg
        self.spool = spool
        self.floor = floor
        self.on_segment = on_segment
        self.recover = recover
        self.on_change = on_change
        self.on_event = on_event
        rc = cfg.recording
        self.backoff = Backoff(rc.backoff_initial, rc.backoff_max, rc.healthy_after)
        self.status = CameraStatus(camera=camera.id)
        self._secrets = url_secrets(camera.url)
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()  # stop or restart requested
        self._grace: float | None = None  # a stop's grace shorter than the configured one
        # In a cluster: the lease epoch this recorder records under (every run and segment names it).
        self.epoch: int | None = None
        self.gate: Callable[[], bool] | None = None  # in a cluster: may a new ffmpeg run start now?
        self._restart_reason: str | None = None
        self._progress = time.monotonic()
        self._created_ms = now_ms()
        self._frame_progress = time.monotonic()  # last time ffmpeg reported a new frame
        self._run_cause: str | None = None  # the first error line of the current run
        self._run_last_line: str | None = None
        self._audio_unsupported = False  # the current run's ffmpeg said mp4 can't carry the audio
        self._transcode_audio = False  # learned once per recorder: audio goes to AAC
        self._last_segment_ms: int | None = None  # wall time of the last closed segment
        self._next_file: tuple[str, int] | None = None  # (spool file being written, wall time of its start)
        self._last_outage_cause: str | None = None
        self._outages: collections.deque[int] = collections.deque(maxlen=FLAP_COUNT * 4)  # when each began

    # ------------------------------------------------------------------ control

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def request_restart(self, reason: str) -> None:
        """End the current run after its segment; the supervisor starts a new one at once."""
        self._restart_reason = reason
        self._kick.set()

    def stop(self, *, grace: float | None = None) -> None:
        """Ask the supervisor to finish the current segment and exit (ffmpeg given ``grace`` seconds, else the
        configured ``recording.stop_grace``: a cluster node losing its lease stops within what is left of it)."""
        if grace is not None:
            self._grace = grace if self._grace is None else min(grace, self._grace)
        self._stop.set()
        self._kick.set()

    def segment_start(self, file: str) -> int | None:
        """The wall time (ms) where the spool file being written now starts, once the one before it closed."""
        return self._next_file[1] if self._next_file is not None and self._next_file[0] == file else None

    def health(self, now: int | None = None) -> str | None:
        """Why this camera is not recording, or None while it is (or is being stopped on purpose).

        A camera is expected to close a segment within its stall deadline of starting and of the
        last segment; past that it is down, whatever the state of the current ffmpeg run. One that
        records but lost its stream FLAP_COUNT times within FLAP_WINDOW_MS is flapping.
        Sets ``status.health`` to the state the answer names.
        """
        state, problem = self._health(now_ms() if now is None else now)
        self.status.health = state
        return problem

    def _health(self, now: int) -> tuple[str, str | None]:
        if self._stop.is_set():
            return "recording", None
        deadline_ms = int(self.cfg.stall_timeout(self.camera) * 1000)
        cause = self.status.last_error or "no segment closed yet"
        if self._last_segment_ms is None:
            if now - self._created_ms <= deadline_ms:
                return "recording", None
            return "never_recorded", f"never recorded since {ms_to_rfc3339(self._created_ms)}: {cause}"
        if now - self._last_segment_ms > deadline_ms or self.status.state == "backoff":
            return "down", f"down since {self.status.down_since or ms_to_rfc3339(self._last_segment_ms)}: {cause}"
        recent = [t for t in self._outages if now - t <= FLAP_WINDOW_MS]
        self.status.recent_outages = len(recent)
        if len(recent) < FLAP_COUNT:
            return "recording", None
        return "flapping", (f"flapping: stopped {len(recent)} times in the last {FLAP_WINDOW_MS // 60000} min, "
                            f"last at {ms_to_rfc3339(recent[-1])}: {self._last_outage_cause or 'stream ended'}")

    # ------------------------------------------------------------------ supervision

    async def run(self) -> None:
        """Record until stopped: one ffmpeg run after another."""
        cam = self.camera.id
        try:
            while not self._stop.is_set():
                if self.gate is not None and not self.gate():
                    # In a cluster: no new ffmpeg run while the lease isn't trusted (its owner stops us soon).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.2)
                    continue
                started = time.monotonic()
                segments_before = self.status.segments
                try:
                    await self._one_run()
                except Exception as e:  # a failed run (e.g. the spool disk full) is retried, never the end
                    msg = self.redact(f"{type(e).__name__}: {e}")
                    self.status.last_error = msg[:500]
                    log.error("camera %s: recording run failed: %s", cam, msg)
                    with contextlib.suppress(Exception):
                        await self.on_event("recording.error", cam, {"error": msg[:500]})
                if self._stop.is_set():
                    break
                planned = self._restart_reason == "audio"  # a new run at once, not an outage
                delivered = self.status.segments > segments_before  # a good segment: the camera was back
                delay = 0.0 if planned else self.backoff.next_delay(time.monotonic() - started, delivered=delivered)
                self._restart_reason = None
                self.status.restarts += 1
                self.status.state = "backoff"
                if self.status.down_since is None and not planned:
                    self.status.down_since = ms_to_rfc3339(now_ms())
                if delivered and not planned:  # it recorded, then lost the stream: one outage
                    self._outages.append(now_ms())
                    self._last_outage_cause = self.status.last_error
                    log.info("camera %s: stream lost after recording (%s)", cam, self.status.last_error)
                self.status.next_retry_in = round(delay, 2)
                self.on_change()
                log.info("camera %s: restarting ffmpeg in %.1f s (restart %d)", cam, delay, self.status.restarts)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                self.status.next_retry_in = None
        finally:
            self.status.state = "stopped"
            self.status.pid = None
            self.on_change()

    async def _one_run(self) -> None:
        cam = self.camera.id
        spawned = now_ms()
        run = run_id(spawned)
        clock = RunClock(
            spawned_ms=spawned, floor_ms=await self.floor(cam),
            bound_ms=round(self.cfg.recording.placement_bound * 1000),
        )
        if self.epoch is not None:
            await asyncio.to_thread(self.spool.write_run_lease, cam, run, self.epoch)
        pattern = self.spool.camera_dir(cam) / f"{run}-%06d.mp4"
        timeout = self.cfg.recording.connect_timeout
        listed = hidden_input(self.camera, timeout)
        input_list = None
        if listed is not None:  # the URL's credentials go in a private file, not in ffmpeg's argv
            input_list = self.spool.camera_dir(cam) / ".input.ffconcat"
            await asyncio.to_thread(write_private, input_list, listed)
        argv = record_command(
            self.ffmpeg, self.camera, pattern,
            segment_seconds=self.cfg.segment_seconds(self.camera), connect_timeout=timeout, input_list=input_list,
            audio_to_aac=self._transcode_audio,
        )
        self._kick.clear()
        if self._stop.is_set():  # stop() came while the floor was read: its kick must not be lost
            return
        self._run_cause = self._run_last_line = None
        self._audio_unsupported = False
        self._restart_reason = None
        self.status.state = "starting"
        self.status.run = run
        self.status.since = ms_to_rfc3339(spawned)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C reaches nvr, which stops ffmpeg in order
                preexec_fn=die_with_parent,
            )
        except OSError as e:
            self.status.last_error = self.redact(f"can't start ffmpeg: {e}")
            log.error("camera %s: %s", cam, self.status.last_error)
            return
        self.status.pid = proc.pid
        self.on_change()
        log.info("camera %s: ffmpeg run %s started (pid %d) from %s", cam, run, proc.pid, self.camera.display_url)
        self._progress = time.monotonic()
        reader = asyncio.create_task(self._read_segment_list(proc, clock), name=f"rec:{cam}:list")
        errors = asyncio.create_task(self._read_stderr(proc), name=f"rec:{cam}:stderr")
        try:
            reason = await self._watch(reader)
            if reason != "exited":
                if reason == "stalled":
                    self._run_cause = self.redact(
                        f"no segment closed for {self.cfg.stall_timeout(self.camera):.0f} s; ffmpeg restarted"
                    )
                    log.warning("camera %s: %s", cam, self._run_cause)
                elif reason == "frozen":
                    self._run_cause = (f"no frame from the camera for {FRAME_TIMEOUT:.0f} s (connected, "
                                       "sending nothing); ffmpeg restarted")
                    log.warning("camera %s: %s", cam, self._run_cause)
                self.status.state = "stopping"
                await self._finish(proc)
            await reader
        finally:
            if proc.returncode is None:
                proc.kill()
            rc = await proc.wait()
            await asyncio.gather(reader, errors, return_exceptions=True)
            self.status.last_exit_code = rc
            self.status.pid = None
            if not self._stop.is_set() and (rc != 0 or self._run_cause):
                self.status.last_error = self._run_cause or self._run_last_line or f"ffmpeg exited with {rc}"
            if self._audio_unsupported and self.camera.audio and not self._transcode_audio:
                self._transcode_audio = True
                log.warning("camera %s: mp4 can't carry this camera's audio; recording it as AAC from now on", cam)
                with contextlib.suppress(Exception):
                    await self.on_event("recording.audio_transcoded", cam, {"to": "aac", "cause": self._run_cause})
                self._restart_reason = "audio"  # not an outage: the next run starts at once
            if rc != 0 and not self._stop.is_set():
                log.warning("camera %s: ffmpeg exited with %d: %s", cam, rc, self.status.last_error or "(no message)")
            self.on_change()
            if self._restart_reason == "audio":
                # The run failed writing its first header: its empty file held nothing, no loss to report.
                await asyncio.to_thread(self._remove_empty, run)
            # Whatever this run left without a segment-list line is a partial segment: ingest it now.
            await self.recover(cam)

    async def _stream_alive(self, proc: asyncio.subprocess.Process) -> bool:
        """Whether frames still arrive (within LAST_LINE_WAIT) while ffmpeg runs and no stop was asked."""
        since = time.monotonic()
        deadline = since + LAST_LINE_WAIT
        while time.monotonic() < deadline:
            if proc.returncode is not None or self._kick.is_set():
                return False
            if self._frame_progress > since:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.1)
        return False

    def _remove_empty(self, run: str) -> None:
        for path in self.spool.camera_dir(self.camera.id).glob(f"{run}-*.mp4"):
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()

    async def _watch(self, reader: asyncio.Task) -> str:
        """Wait for the run to end: 'exited', 'stopping', 'stalled', or a restart reason."""
        stall = self.cfg.stall_timeout(self.camera)
        # The first frame may take the connection's timeout to arrive; later ones FRAME_TIMEOUT at most.
        first_frame_by = time.monotonic() + self.cfg.recording.connect_timeout
        kick = asyncio.create_task(self._kick.wait(), name=f"rec:{self.camera.id}:kick")
        try:
            while True:
                now = time.monotonic()
                frozen_at = max(self._frame_progress, first_frame_by) + FRAME_TIMEOUT
                remaining = min(self._progress + stall, frozen_at) - now
                done, _ = await asyncio.wait({reader, kick}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    return "exited"
                if kick in done:
                    return "stopping" if self._stop.is_set() else (self._restart_reason or "restart")
                now = time.monotonic()
                if now >= max(self._frame_progress, first_frame_by) + FRAME_TIMEOUT:
                    return "frozen"
                if now - self._progress >= stall:
                    return "stalled"
        finally:
            kick.cancel()
            await asyncio.gather(kick, return_exceptions=True)

    async def _finish(self, proc: asyncio.subprocess.Process) -> None:
        """Ask ffmpeg to close its segment and exit: 'q', then SIGINT, then SIGKILL."""
        grace = self.cfg.recording.stop_grace if self._grace is None else self._grace
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError, AttributeError):
            proc.stdin.write(b"q")
            await proc.stdin.drain()
            proc.stdin.close()
        for sig, wait in ((None, grace), (signal.SIGINT, grace / 2)):
            if sig is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), wait)
                return
            except TimeoutError:
                continue
        log.warning("camera %s: ffmpeg did not finish within %.0f s, killed", self.camera.id, grace * 1.5)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    async def _read_segment_list(self, proc: asyncio.subprocess.Process, clock: RunClock) -> None:
        cam = self.camera.id
        assert proc.stdout is not None
        held: list[tuple[str, float, float, int]] = []  # the run's first segments, until it is anchored
        while line := await proc.stdout.readline():
            wall = now_ms()
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                name, s_start, s_end = next(csv.reader([text]))[:3]
                closed = (name.rsplit("/", 1)[-1], float(s_start), float(s_end), wall)
                if closed[2] < closed[1]:
                    raise ValueError(f"segment ends ({s_end}) before it starts ({s_start})")
            except (ValueError, StopIteration) as e:
                log.error("camera %s: unreadable segment-list line %r: %s", cam, self.redact(text), e)
                continue
            self._progress = time.monotonic()
            self.status.state = "recording"
            self.status.down_since = None
            self.status.last_error = None  # healthy: a warning of an earlier run is no cause any more
            if clock.anchor_ms is None:
                held.append(closed)
                if clock.settle([(end, at) for _, _, end, at in held]):
                    await self._place_held(clock, held)
                self.on_change()
                continue
            check = True
            if abs(clock.offset_ms(closed[2], wall)) > clock.bound_ms:
                check = await self._stream_alive(proc)
            await self._closed(clock, *closed, check=check)
        if held:  # the run ended before it was anchored: anchor on what it has
            clock.settle([(end, at) for _, _, end, at in held], final=True)
            await self._place_held(clock, held)

    async def _place_held(self, clock: RunClock, held: list[tuple[str, float, float, int]]) -> None:
        """Place the segments held for the anchor; the first starts where its media does."""
        first = self.spool.camera_dir(self.camera.id) / held[0][0]
        media_s = await probe_duration(self.ffmpeg, first)
        for i, closed in enumerate(held):
            await self._closed(clock, *closed, check=False, media_s=media_s if i == 0 else None)
        held.clear()

    async def _closed(self, clock: RunClock, file: str, s_start: float, s_end: float, wall: int, *,
                      check: bool = True, media_s: float | None = None) -> None:
        """Place one closed segment, ticket it and hand it to ingest."""
        cam = self.camera.id
        placed = clock.place(s_start, s_end, wall, check=check, media_s=media_s)
        try:
            seg = closed_now(cam, file, placed.start_ms, placed.end_ms, clock=self.camera.clock,
                             correction_ms=placed.correction_ms,
                             audio_transcoded=self._transcode_audio and self.camera.audio, epoch=self.epoch)
        except ValueError as e:
            log.error("camera %s: segment-list line names %r: %s", cam, self.redact(file), e)
            return
        await asyncio.to_thread(self.spool.write_ticket, seg)
        if (m := SEGMENT_RE.match(file)) is not None:  # the next file of this run starts where this one ends
            self._next_file = (f"{m['run']}-{int(m['n']) + 1:06d}.mp4", seg.end_ms)
        self._last_segment_ms = now_ms()
        self.status.segments += 1
        self.status.last_segment_end = ms_to_rfc3339(seg.end_ms)
        self.status.last_segment_closed = ms_to_rfc3339(wall)
        self.on_change()
        await self.on_segment(seg)
        if placed.correction_ms:
            self.status.placement_corrections += 1
            log.warning("camera %s: segment %s ended %+.1f s from where the stream clock put it; placed by the "
                        "wall clock and the run re-anchored there", cam, seg.file, placed.correction_ms / 1000)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """ffmpeg's log and its ``-progress`` lines: frames seen (the freeze watch) and the run's cause of failure."""
        assert proc.stderr is not None
        frames = 0
        while line := await proc.stderr.readline():
            text = self.redact(line.decode("utf-8", "replace").strip())
            if not text:
                continue
            key, eq, value = text.partition("=")
            if eq and key in _PROGRESS_KEYS:
                if key == "frame" and value.isdigit() and int(value) > frames:
                    frames = int(value)
                    self._frame_progress = time.monotonic()
                continue
            log.debug("camera %s: ffmpeg: %s", self.camera.id, text)
            if _REPEAT_RE.search(text):
                continue  # "Last message repeated 3 times": not a cause
            if self._run_cause is None and _CAUSE_RE.search(text):
                # The first error of a run names the cause ("Connection timed out"); what follows is its
                # consequence ("Invalid data found when processing input").
                self._run_cause = text[:500]
            if _AUDIO_UNSUPPORTED_RE.search(text):
                self._audio_unsupported = True
            self._run_last_line = text[:500]
