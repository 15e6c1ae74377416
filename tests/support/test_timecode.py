"""Tests of the time-code layout, its decoder and the MJPEG camera simulator (no GStreamer needed)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.mjpeg_sim import MjpegSimulator
from tests.support.rtsp import ffmpeg_exe
from tests.support.timecode import (
    CODE_BITS,
    code_cells,
    decode_cells,
    frame_times,
    i420_frame,
    jpeg_frame,
    read_frames,
)

WALL_MS = 1_796_000_000_123  # some moment in 2026


def test_cells_round_trip_and_survive_a_damaged_copy():
    cells = code_cells(WALL_MS)
    assert decode_cells(cells) == WALL_MS
    for copy in range(3):
        damaged = list(cells)
        for bit in range(copy * CODE_BITS, (copy + 1) * CODE_BITS, 7):
            damaged[bit] ^= 1
        assert decode_cells(damaged) == WALL_MS, f"copy {copy} damaged"


def test_a_misread_is_reported_as_none_not_as_another_time():
    cells = code_cells(WALL_MS)
    # The same payload bit wrong in every copy: the majority is wrong too, and the CRC says so.
    for copy in range(3):
        cells[copy * CODE_BITS + 40] ^= 1
    assert decode_cells(cells) is None


def encode_h264(frames: list[bytes], out: Path, *, fps: int, bitrate: str) -> Path:
    """Encode raw 320x240 I420 ``frames`` to MP4 with libx264."""
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x240", "-r", str(fps), "-i", "-",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-bf", "0", str(out)],
        input=b"".join(frames), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


def test_frame_times_reads_every_frame_of_a_low_bitrate_h264_file(tmp_path):
    fps = 15
    walls = [WALL_MS + round(i * 1000 / fps) for i in range(45)]
    mp4 = encode_h264([i420_frame(w, 320, 240) for w in walls], tmp_path / "tc.mp4", fps=fps, bitrate="150k")

    times = frame_times(mp4)

    assert [wall for _, wall in times] == walls
    assert [pts for pts, _ in times] == pytest.approx([i / fps for i in range(len(walls))], abs=1e-3)


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (352, 288)])
def test_jpeg_frames_decode_with_ffmpeg(tmp_path, size):
    path = tmp_path / "frame.jpg"
    path.write_bytes(jpeg_frame(WALL_MS, *size))
    assert frame_times(path) == [(0.0, WALL_MS)]


def test_pictures_without_a_time_code_read_as_none(tmp_path):
    clip = tmp_path / "testsrc.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=15", "-t", "1", "-c:v", "libx264", str(clip)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    times = frame_times(clip)
    assert len(times) == 15
    assert all(wall is None for _, wall in times)


def read_live(url: str, seconds: float) -> list:
    """Frames of ``url`` for ``seconds`` after the first one arrives."""
    frames = []
    with closing(read_frames(url, input_args=["-fflags", "nobuffer"])) as stream:
        for frame in stream:
            frames.append(frame)
            if frame.received - frames[0].received >= seconds:
                break
    return frames


def test_mjpeg_simulator_streams_time_coded_frames_at_its_rate():
    with MjpegSimulator(fps=10).start() as cam:
        frames = read_live(cam.url(), 3)

    walls = [f.wall_ms for f in frames]
    assert None not in walls
    # 3 s of a 10 fps camera, counting both ends.
    assert 28 <= len(frames) <= 33, len(frames)
    steps = [b - a for a, b in zip(walls, walls[1:], strict=False)]
    assert statistics.median(steps) == pytest.approx(100, abs=5), steps
    assert all(0 < step < 250 for step in steps), steps
    lags = [f.received - f.wall_ms / 1000 for f in frames]
    assert all(0 <= lag < 0.5 for lag in lags), lags


def test_mjpeg_pause_holds_frames_back_and_drop_resets_clients():
    with MjpegSimulator(fps=10).start() as cam:
        frames = []
        with closing(read_frames(cam.url(), input_args=["-fflags", "nobuffer"])) as stream:
            for frame in stream:
                frames.append(frame)
                if len(frames) == 10:
                    cam.pause(1.5)
                if len(frames) == 15:
                    break
        walls = [f.wall_ms for f in frames]
        gaps = [b - a for a, b in zip(walls, walls[1:], strict=False)]
        assert max(gaps) == pytest.approx(1500, abs=150), gaps

        log: list[str] = []
        began = time.monotonic()
        stream = read_frames(cam.url(), input_args=["-fflags", "nobuffer"], log=log)
        next(stream)
        assert cam.drop() >= 1  # a client that just left may not be noticed yet
        # ffmpeg ends its input on the reset (with exit status 0 or an I/O error).
        with pytest.raises((StopIteration, RuntimeError)):
            while time.monotonic() - began < 10:
                next(stream)
        stream.close()
        assert time.monotonic() - began < 10


def test_mjpeg_simulator_runs_as_a_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mjpeg_sim", "--port", "0", "--fps", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == "ready" and ready[1].isdigit()
        frames = read_live(f"http://127.0.0.1:{ready[1]}/video", 1)
        assert len(frames) >= 4 and None not in [f.wall_ms for f in frames]
        proc.stdin.write("pause 1\nquit\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok pause 1.000"
        assert proc.stdout.readline().strip() == "ok quit"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
