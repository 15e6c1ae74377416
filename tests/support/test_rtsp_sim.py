"""Integration tests of the GStreamer RTSP camera simulator used by other tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.rtsp import RtspSimulator, ffmpeg_exe, gst_available, make_clip
from tests.support.wait import until_while_running

pytestmark = pytest.mark.integration

FPS = 15
# 90 kHz RTP clock ticks per frame.
FRAME_TICKS = 90_000 // FPS
# Shorter than the 3 s pulls below, so every pull crosses a loop boundary.
CLIP_SECONDS = 2


@pytest.fixture(scope="module", autouse=True)
def _require_gstreamer() -> None:
    reason = gst_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.h264", fps=FPS, seconds=CLIP_SECONDS)


@pytest.fixture
def start_sim(clip: Path) -> Iterator[Callable[..., RtspSimulator]]:
    """Factory starting simulators on the test clip; all are stopped at teardown."""
    sims: list[RtspSimulator] = []

    def start(mounts: tuple[str, ...]) -> RtspSimulator:
        sim = RtspSimulator().start(mounts=mounts, clip=clip, fps=FPS)
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
            *limit, "-c", "copy", "-f", "mpegts", str(out),
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


def test_simulator_cpu_stays_low_with_three_clients(start_sim, start_client, tmp_path):
    sim = start_sim(("cam1", "cam2", "cam3"))
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
