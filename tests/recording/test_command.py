"""The recorder's ffmpeg command: whose clock times the frames, and what the audio becomes."""

from pathlib import Path

import pytest

from nvr.config.settings import CameraConfig
from nvr.recording.command import record_command


def argv_of(tmp_path: Path, **camera) -> list[str]:
    return record_command("ffmpeg", CameraConfig(id="c", **camera), tmp_path / "%06d.mp4", segment_seconds=2,
                          connect_timeout=3)


@pytest.mark.parametrize(("url", "timestamps", "arrival"), [
    ("http://cam/video.mjpg", "auto", True),     # MJPEG over HTTP: no usable timestamps
    ("rtsp://cam/1", "auto", False),
    ("rtsp://cam/1", "arrival", True),           # forced for a camera whose clock can't be trusted
    ("https://cam/live.m3u8", "camera", False),
])
def test_arrival_time_by_scheme_or_per_camera(tmp_path, url, timestamps, arrival):
    argv = argv_of(tmp_path, url=url, timestamps=timestamps)
    i = argv.index("-i")
    assert (argv[:i].count("-use_wallclock_as_timestamps") == 1) is arrival


def test_video_is_copied_and_audio_only_transcoded_when_mp4_cant_carry_it(tmp_path):
    copy = record_command("ffmpeg", CameraConfig(id="c", url="rtsp://cam/1", audio=True), tmp_path / "%06d.mp4",
                          segment_seconds=2, connect_timeout=3)
    aac = record_command("ffmpeg", CameraConfig(id="c", url="rtsp://cam/1", audio=True), tmp_path / "%06d.mp4",
                         segment_seconds=2, connect_timeout=3, audio_to_aac=True)
    assert copy[copy.index("-c:v") + 1] == "copy" and copy[copy.index("-c:a") + 1] == "copy"
    assert aac[aac.index("-c:v") + 1] == "copy" and aac[aac.index("-c:a") + 1] == "aac"
