"""Camera inputs by allow-list: no camera URL makes ffmpeg read or write a file or open a listener."""

from pathlib import Path

import pytest

from nvr.base.errors import ConfigError
from nvr.config.settings import DEMO_CAMERAS, CameraConfig, camera_from_table
from nvr.config.sources import check_lavfi, protocol_whitelist
from nvr.recording.command import record_command

HOSTILE = [
    "lavfi:movie=/etc/passwd",                                         # records a local file as evidence
    "lavfi:amovie=/etc/passwd",
    "lavfi:testsrc2,drawtext=textfile=/etc/passwd",                    # reads a file into the footage
    "lavfi:color=c=red,metadata=mode=print:file=/tmp/keyring",         # truncates a file
    "lavfi:zmq=bind_address=tcp\\://127.0.0.1\\:5555",                 # opens a listener
    "lavfi:testsrc2,sendcmd=f=/etc/passwd",
    "lavfi:testsrc2=size=64x64[out0];movie=/etc/passwd[out1]",
    "lavfi:testsrc2=size=64x64:rate=15,format=gray",                   # any chain at all
    "lavfi:testsrc2=textfile=/etc/passwd",                             # an option off the list
    "lavfi:testsrc2=size=../../etc",                                   # a value that is not a number or size
    "file:///etc/passwd", "concat:/etc/passwd|/etc/hosts", "subfile,,start,0,end,0,,:/etc/passwd",
    "pipe:0", "fd:3", "data:text/plain,hi", "crypto:/etc/passwd",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_camera_urls_are_refused(url):
    with pytest.raises(ConfigError, match=r"^url: "):
        camera_from_table({"id": "x", "url": url}, "")


@pytest.mark.parametrize("graph", ["testsrc2=size=640x360:rate=15", "smptehdbars=size=640x360:rate=10",
                                   "color=c=red:s=64x64:r=5", "testsrc"])
def test_synthetic_sources_pass(graph):
    check_lavfi(graph)


def test_demo_cameras_pass():
    for cam in DEMO_CAMERAS:
        camera_from_table({"id": cam.id, "url": cam.url}, "")


def test_every_network_input_runs_with_its_protocol_whitelist(tmp_path: Path):
    for url, protocols in [("rtsp://u:p@cam/1", "rtsp,rtp,srtp,udp,tcp"), ("http://cam/video.mjpg", "http,tcp"),
                           ("https://cam/live.m3u8", "https,http,tcp,tls"), ("udp://239.0.0.1:1234", "udp")]:
        argv = record_command("ffmpeg", CameraConfig(id="c", url=url), tmp_path / "%06d.mp4",
                              segment_seconds=2, connect_timeout=3)
        assert argv[argv.index("-protocol_whitelist") + 1] == protocols
        assert argv.index("-protocol_whitelist") < argv.index("-i")
        assert protocol_whitelist(url) == protocols


def test_a_stored_hostile_lavfi_camera_never_reaches_ffmpeg(tmp_path: Path):
    """A camera an older release stored unchecked in the index is refused when its command is built."""
    with pytest.raises(ValueError, match="not one of"):
        record_command("ffmpeg", CameraConfig(id="c", url="lavfi:movie=/etc/passwd"), tmp_path / "%06d.mp4",
                       segment_seconds=2, connect_timeout=3)
