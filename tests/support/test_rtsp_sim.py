"""Integration tests of the GStreamer RTSP camera simulator used by other tests."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.rtsp import (
    AUDIO_CODECS,
    RtspSimulator,
    RtspSimulatorError,
    ffmpeg_exe,
    gst_available,
    make_clip,
    probe_streams,
)
from tests.support.timecode import Frame, frame_times, read_frames
from tests.support.wait import until_while_running

pytestmark = pytest.mark.integration

FPS = 15
# 90 kHz RTP clock ticks per frame.
FRAME_TICKS = 90_000 // FPS
# Shorter than the 3 s pulls below, so every pull crosses a loop boundary.
CLIP_SECONDS = 2
FRAME_MS = 1000 / FPS


@pytest.fixture(scope="module", autouse=True)
def _require_gstreamer() -> None:
    reason = gst_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.h264", fps=FPS, seconds=CLIP_SECONDS)


@pytest.fixture
def _require_x264() -> None:
    reason = gst_available(timecoded=True)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def start_sim(clip: Path) -> Iterator[Callable[..., RtspSimulator]]:
    """Factory starting simulators on the test clip; all are stopped at teardown."""
    sims: list[RtspSimulator] = []

    def start(
        mounts: tuple[str, ...], timecoded: tuple[str, ...] = (), audio: dict[str, str] | None = None
    ) -> RtspSimulator:
        sim = RtspSimulator().start(
            mounts=mounts, clip=clip, fps=FPS, timecoded=timecoded, audio=audio or {}
        )
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.stop()


class Client:
    """An ffmpeg process pulling one RTSP URL over TCP into an MPEG-TS file."""

    def __init__(self, url: str, out: Path, *, seconds: float | None = None) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        limit = ["-t", str(seconds)] if seconds is not None else []
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-y",
            "-rtsp_transport", "tcp", "-timeout", "3000000", "-i", url,
            *limit, "-c", "copy", "-flush_packets", "1", "-f", "mpegts", str(out),
        ]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=log)

    def size(self) -> int:
        return self.out.stat().st_size if self.out.exists() else 0

    def wait_for_size_above(self, size: int, timeout: float) -> None:
        """Until the output file is bigger than ``size`` bytes; fails at once if ffmpeg exits first."""
        until_while_running(self.proc, lambda: self.size() > size, timeout=timeout, log=self.log, interval=0.05)

    def stderr(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ffmpeg still running after {timeout} s:\n{self.stderr()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_client() -> Iterator[Callable[..., Client]]:
    """Factory starting ffmpeg clients; any still running are stopped at teardown."""
    clients: list[Client] = []

    def start(url: str, out: Path, *, seconds: float | None = None) -> Client:
        client = Client(url, out, seconds=seconds)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop()


def packet_dts(path: Path) -> list[int]:
    """DTS of every video packet in ``path``, in 90 kHz ticks."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
         "-map", "0:v:0", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    rows = (line.split(",") for line in result.stdout.splitlines() if not line.startswith("#"))
    return [int(row[1]) for row in rows]


def video_codec_line(path: Path) -> str:
    """ffmpeg's description of the first video stream of ``path``."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return next((line for line in result.stderr.splitlines() if "Video:" in line), "")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by all threads of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_every_mount_streams_looped_h264_in_real_time(start_sim, start_client, tmp_path):
    sim = start_sim(("cam1", "cam2"))
    began = time.monotonic()
    clients = [
        start_client(sim.url(mount), tmp_path / f"{mount}.ts", seconds=3)
        for mount in sim.mounts
    ]
    for client in clients:
        assert client.wait(timeout=30) == 0, client.stderr()
    elapsed = time.monotonic() - began

    for client in clients:
        assert client.size() > 0, client.stderr()
        assert "Video: h264" in video_codec_line(client.out)
        dts = packet_dts(client.out)
        # ffmpeg's RTSP demuxer leaves the first packet's timestamp unset and
        # its muxer makes up one tick for it: check from the third packet on.
        steps = {b - a for a, b in zip(dts[2:], dts[3:], strict=False)}
        assert steps == {FRAME_TICKS}, f"timestamps not continuous across the loop: {dts}"
        assert len(dts) >= 2 * FPS, f"only {len(dts)} frames in 3 s"
    # Paced in real time: 3 s of video cannot arrive much faster than 3 s.
    assert elapsed > 2.5, f"3 s of video took only {elapsed:.2f} s"


def test_drop_disconnects_one_mount_until_restored(start_sim, start_client, tmp_path):
    sim = start_sim(("cam1", "cam2"))
    dropped = start_client(sim.url("cam1"), tmp_path / "dropped.ts")
    survivor = start_client(sim.url("cam2"), tmp_path / "survivor.ts")
    for client in (dropped, survivor):
        client.wait_for_size_above(0, timeout=20)

    answer = sim.drop("cam1")
    assert answer == "ok drop cam1 closed=1"
    dropped.wait(timeout=15)
    # ffmpeg treats a failed input as its end and exits 0, so the reset is
    # only visible in its log.
    assert "Connection reset by peer" in dropped.stderr()

    # The other mount keeps streaming.
    size = survivor.size()
    survivor.wait_for_size_above(size, timeout=10)  # cam2 keeps streaming
    assert survivor.proc.poll() is None, survivor.stderr()

    refused = start_client(sim.url("cam1"), tmp_path / "refused.ts", seconds=1)
    assert refused.wait(timeout=15) != 0
    assert "404" in refused.stderr()

    sim.restore("cam1")
    revived = start_client(sim.url("cam1"), tmp_path / "revived.ts", seconds=1)
    assert revived.wait(timeout=20) == 0, revived.stderr()
    assert revived.size() > 0


@pytest.mark.parametrize("timecoded", [False, True], ids=["clip", "timecoded"])
def test_simulator_cpu_stays_low_with_three_clients(start_sim, start_client, tmp_path, timecoded, request):
    mounts = ("cam1", "cam2", "cam3")
    if timecoded:
        request.getfixturevalue("_require_x264")
    sim = start_sim((), timecoded=mounts) if timecoded else start_sim(mounts)
    clients = [
        start_client(sim.url(mount), tmp_path / f"{mount}.ts", seconds=6)
        for mount in sim.mounts
    ]
    for client in clients:
        client.wait_for_size_above(0, timeout=20)

    # Measure from the moment all three stream until the first one finishes,
    # a window in which every mount is being pulled.
    cpu_before, wall_before = cpu_seconds(sim.pid), time.monotonic()
    clients[0].wait(timeout=30)
    cpu_used = cpu_seconds(sim.pid) - cpu_before
    wall = time.monotonic() - wall_before
    for client in clients:
        assert client.wait(timeout=30) == 0, client.stderr()

    load = cpu_used / wall
    print(f"simulator CPU with 3 clients: {cpu_used:.2f} s over {wall:.2f} s = {load:.3f} cores")
    assert wall > 2, "measurement window too short to mean anything"
    assert load < 0.5


def thread_count(pid: int) -> int:
    """Threads of ``pid``, not counting GLib's pooled workers, which idle on after use."""
    count = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text()
        except FileNotFoundError:
            continue  # just ended
        count += not name.startswith("pool-")
    return count


def watch(
    url: str,
    seconds: float,
    *,
    at: Sequence[tuple[float, Callable[[], object]]] = (),
    record: Path | None = None,
    timeout: float | None = None,
    log: list[str] | None = None,
) -> list[Frame]:
    """Frames of ``url`` (RTSP over TCP) for ``seconds`` after the first one arrives.

    ``at`` holds (t, action) pairs: each action runs once a frame arrives t s
    after the first.  ``record`` gets a ``-c copy`` MP4 of the same stream;
    ``timeout`` is ffmpeg's socket I/O timeout in seconds.
    """
    input_args = ["-rtsp_transport", "tcp", "-fflags", "nobuffer"]
    if timeout is not None:
        input_args += ["-timeout", str(round(timeout * 1_000_000))]
    extra = ["-map", "0:v", "-c", "copy", "-y", str(record)] if record else []
    pending = sorted(at, key=lambda pair: pair[0])
    frames: list[Frame] = []
    with closing(read_frames(url, input_args=input_args, extra_outputs=extra, log=log)) as stream:
        for frame in stream:
            frames.append(frame)
            elapsed = frame.received - frames[0].received
            while pending and elapsed >= pending[0][0]:
                pending.pop(0)[1]()
            if elapsed >= seconds:
                break
    assert not pending, f"stream ended after {len(frames)} frames, before every action ran"
    return frames


def steps(values: Sequence[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


@pytest.mark.usefixtures("_require_x264")
def test_timecoded_frames_show_their_capture_time(start_sim, tmp_path):
    sim = start_sim((), timecoded=("tc",))
    mp4 = tmp_path / "tc.mp4"
    frames = watch(sim.url("tc"), 6, record=mp4)

    recorded = frame_times(mp4)
    walls = [wall for _, wall in recorded if wall is not None]
    assert len(recorded) >= 5.5 * FPS, f"only {len(recorded)} frames in 6 s"
    assert len(walls) >= 0.95 * len(recorded), f"{len(recorded) - len(walls)} unreadable frames"
    wall_steps = steps(walls)
    assert min(wall_steps) > 0, "wall times go back"
    assert statistics.median(wall_steps) == pytest.approx(FRAME_MS, abs=5)
    regular = [step for step in wall_steps if abs(step - FRAME_MS) < 25]
    assert len(regular) >= 0.9 * len(wall_steps), wall_steps
    # A frame's timestamp is the running time at its capture: pts and wall
    # times advance together, frame by frame.
    for (pts_a, wall_a), (pts_b, wall_b) in zip(recorded, recorded[1:], strict=False):
        if wall_a is not None and wall_b is not None:
            assert (pts_b - pts_a) * 1000 == pytest.approx(wall_b - wall_a, abs=10)

    # Live: each frame arrives shortly after it was captured, never before.
    assert None not in [f.wall_ms for f in frames]
    lags = [f.received - f.wall_ms / 1000 for f in frames]
    assert all(-0.01 < lag < 0.5 for lag in lags), lags


@pytest.mark.usefixtures("_require_x264")
def test_jump_steps_rtp_time_back_while_frames_keep_their_wall_time(start_sim, tmp_path):
    sim = start_sim((), timecoded=("tc",))
    answers = []
    mp4 = tmp_path / "jump.mp4"
    frames = watch(sim.url("tc"), 5, at=[(2, lambda: answers.append(sim.jump("tc", -3)))], record=mp4)
    assert answers == ["ok jump tc offset=-3.000"]
    assert sim.jump("tc", 1.5) == "ok jump tc offset=-1.500"  # jumps add up

    pts_steps = steps([f.pts for f in frames])
    back = [step for step in pts_steps if step < 0]
    assert len(back) == 1, pts_steps
    assert back[0] == pytest.approx(-3 + 1 / FPS, abs=0.05)
    # Frames are stamped when captured: a loaded machine delays or skips some, never jumps a second.
    assert all(step < 0.5 for step in pts_steps if step >= 0), pts_steps
    # The pictures know nothing of the camera's clock.
    wall_steps = steps([f.wall_ms for f in frames])
    assert min(wall_steps) > 0 and statistics.median(wall_steps) == pytest.approx(FRAME_MS, abs=5)

    # ffmpeg's muxer never writes a DTS going back: it stacks the frames after
    # the step one tick apart until their DTS catch up, so the MP4's pts do
    # not show the step, but its pictures still tell the true time.
    recorded = frame_times(mp4)
    walls = [wall for _, wall in recorded if wall is not None]
    assert len(walls) >= 0.95 * len(recorded)
    assert min(steps(walls)) > 0


@pytest.mark.usefixtures("_require_x264")
def test_pause_keeps_the_connection_and_resumes_with_a_gap(start_sim):
    sim = start_sim((), timecoded=("tc",))
    answers, log = [], []
    frames = watch(
        sim.url("tc"),
        9,
        at=[
            (1.5, lambda: answers.append(sim.pause("tc", 4))),
            (7, lambda: answers.append(sim.pause("tc", 1, reset=True))),
        ],
        timeout=3,
        log=log,
    )
    assert answers == ["ok pause tc 4.000", "ok pause tc 1.000 reset"]
    # RTCP goes on during a pause: ffmpeg's 3 s socket timeout never fires.
    assert not [line for line in log if "timed out" in line], log

    wall_steps = steps([f.wall_ms for f in frames])
    pts_steps = steps([f.pts for f in frames])
    gaps = [i for i, step in enumerate(wall_steps) if step > 500]
    assert len(gaps) == 2, wall_steps
    first, second = gaps
    assert wall_steps[first] == pytest.approx(4000, abs=200)
    # Without reset the timestamps show the gap as it was.
    assert pts_steps[first] * 1000 == pytest.approx(wall_steps[first], abs=10)
    assert wall_steps[second] == pytest.approx(1000, abs=200)
    # With reset they restart where the mount's stream began, 0 for its first client.
    assert frames[second + 1].pts == pytest.approx(0, abs=0.1)
    assert frames[second].pts > 6
    assert None not in [f.wall_ms for f in frames]


@pytest.mark.usefixtures("_require_x264")
def test_freeze_silences_the_connection_without_closing_it(start_sim):
    sim = start_sim((), timecoded=("tc",))
    answers, log = [], []
    frames = watch(
        sim.url("tc"), 6, at=[(1.5, lambda: answers.append(sim.freeze("tc", 3)))], timeout=2, log=log
    )
    assert answers == ["ok freeze tc 3.000"]
    # Neither RTP nor RTCP for 3 s: ffmpeg's 2 s socket timeout fires (once;
    # ffmpeg gives up on a second one in a row)...
    assert [line for line in log if "timed out" in line], log
    # ...yet the connection stays up and the frames come back on it.
    wall_steps = steps([f.wall_ms for f in frames])
    gap = max(range(len(wall_steps)), key=wall_steps.__getitem__)
    assert wall_steps[gap] == pytest.approx(3000, abs=200)
    assert frames[-1].received - frames[gap + 1].received > 1
    assert None not in [f.wall_ms for f in frames]


def test_fault_commands_are_checked(start_sim, request):
    request.getfixturevalue("_require_x264")
    sim = start_sim(("cam1",), timecoded=("tc",))
    assert sim.mounts == ("cam1", "tc")
    for call, answer in [
        (lambda: sim.jump("cam1", 1), "err not a time-coded mount: cam1"),
        (lambda: sim.freeze("nope", 1), "err unknown mount: nope"),
        (lambda: sim.pause("tc", -1), "err bad seconds: -1"),
        (lambda: sim.jump("tc", float("nan")), "err bad seconds: nan"),
        (lambda: sim._command("pause tc 1 later"), "err unknown arguments: later"),
        (lambda: sim._command("freeze tc 1 reset"), "err unknown arguments: reset"),
        (lambda: sim.jump("tc", -100_000), "err cannot jump back beyond 86400 s"),
    ]:
        with pytest.raises(RtspSimulatorError, match=answer):
            call()
    # A time-coded mount drops and restores like any other.
    assert sim.drop("tc") == "ok drop tc closed=0"
    assert sim.restore("tc") == "ok restore tc"


@pytest.mark.usefixtures("_require_x264")
def test_timecoded_pipeline_stops_with_its_last_client(start_sim, start_client, tmp_path):
    sim = start_sim((), timecoded=("tc",))
    idle_threads = thread_count(sim.pid)
    client = start_client(sim.url("tc"), tmp_path / "tc.ts", seconds=2)
    assert client.wait(timeout=20) == 0, client.stderr()
    # The camera thread and the pipeline's threads go with the media.
    deadline = time.monotonic() + 5
    while thread_count(sim.pid) > idle_threads and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu_before = cpu_seconds(sim.pid)
    time.sleep(1)
    assert cpu_seconds(sim.pid) - cpu_before < 0.05
    assert thread_count(sim.pid) <= idle_threads


# mount -> codec, as in tests/conftest.py
AUDIO = {"acam": "aac", "pcma": "pcma", "pcmu": "pcmu"}
AUDIO_RATES = {"aac": 16000, "pcma": 8000, "pcmu": 8000}


@pytest.fixture
def _require_audio() -> None:
    reason = gst_available(audio=tuple(AUDIO.values()))
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.usefixtures("_require_audio")
def test_audio_mounts_serve_the_clip_and_a_live_tone_in_their_codec(start_sim):
    sim = start_sim(("cam1",), audio=AUDIO)
    assert sim.mounts == ("cam1", *AUDIO) and sim.audio == AUDIO
    # Read side by side: each pull takes its 2 s of real time.
    with ThreadPoolExecutor(len(sim.mounts)) as pool:
        probed = dict(zip(sim.mounts, pool.map(lambda m: probe_streams(sim.url(m), seconds=2), sim.mounts), strict=True))

    assert [s["codec_type"] for s in probed["cam1"]] == ["video"]  # clip mounts stay silent
    for mount, codec in AUDIO.items():
        streams = {s["codec_type"]: s for s in probed[mount]}
        assert set(streams) == {"video", "audio"}, (mount, probed[mount])
        assert streams["video"]["codec_name"] == "h264"
        audio = streams["audio"]
        assert audio["codec_name"] == AUDIO_CODECS[codec][1], (mount, audio)
        assert audio["sample_rate"] == AUDIO_RATES[codec]
        if "duration" in audio:  # from the packets (ffmpeg); ffprobe reads only the SDP of a stream
            # Live: as much audio as video, both paced by the clock.
            assert audio["duration"] == pytest.approx(streams["video"]["duration"], abs=0.25), probed[mount]

    with pytest.raises(RtspSimulatorError, match="err not a time-coded mount: pcma"):
        sim.freeze("pcma", 1)
    # The probes have ended, but under load the server may not have seen a client's close yet.
    assert re.fullmatch(r"ok drop pcma closed=[01]", sim.drop("pcma"))
    assert sim.restore("pcma") == "ok restore pcma"
    with pytest.raises(ValueError, match="unknown audio codecs"):
        RtspSimulator().start(mounts=(), clip=Path("unused.h264"), audio={"x": "opus"})


@pytest.mark.usefixtures("_require_audio")
def test_a_client_joining_an_audio_mount_leaves_the_others_timing_alone(start_sim, tmp_path):
    """A joining client's PLAY must not restart the shared media: ffmpeg would jump ahead.

    With both tracks, ffmpeg times packets by the RTCP sender reports, and a
    restarted media's reports map RTP time to wall time seconds off.
    """
    sim = start_sim((), audio={"pcma": "pcma"})
    out, log = tmp_path / "first.crc", tmp_path / "first.log"
    seconds = 9  # long enough for a sender report before the join and one after it
    with log.open("w") as err:
        first = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "tcp",
             "-i", sim.url("pcma"), "-t", str(seconds), "-map", "0", "-c", "copy",
             "-flush_packets", "1", "-f", "framecrc", str(out)],
            stdin=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        until_while_running(first, lambda: _last_video_pts(out) >= 3, timeout=20, log=log, interval=0.1)
        joined = probe_streams(sim.url("pcma"), seconds=1)
        assert [s["codec_type"] for s in joined] == ["video", "audio"]
        assert first.wait(timeout=30) == 0, log.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    packets = _packets(out.read_text())
    for stream, pts in packets.items():
        jumps = [b - a for a, b in zip(pts, pts[1:], strict=False) if not 0 <= b - a < 0.3]
        assert not jumps, f"stream {stream} of the first client jumped by {jumps} s when another joined"
        assert pts[-1] == pytest.approx(seconds, abs=0.3)


def _packets(framecrc: str) -> dict[int, list[float]]:
    """Each stream's packet pts in seconds, from ffmpeg's framecrc output."""
    bases, packets = {}, {}
    for line in framecrc.splitlines():
        if line.startswith("#tb "):
            index, _, base = line[4:].partition(":")
            bases[int(index)] = Fraction(base.strip())
        elif line and not line.startswith("#"):
            stream, _, pts, *_ = (field.strip() for field in line.split(","))
            packets.setdefault(int(stream), []).append(float(int(pts) * bases[int(stream)]))
    return packets


def _last_video_pts(path: Path) -> float:
    """The newest video pts ``path`` holds so far, in s (0 while it has none)."""
    try:
        video = _packets(path.read_text()).get(0, [])
    except (FileNotFoundError, KeyError, ValueError):  # not written yet, or a half-written line
        return 0
    return video[-1] if video else 0
