"""The recorder's ffmpeg command line, built with ffmpeg-python (never through a shell)."""

from __future__ import annotations

from pathlib import Path

import ffmpeg as ffmpeg_python

from nvr.base.ffmpeg import FMP4_FLAGS
from nvr.base.redact import has_credentials
from nvr.config.settings import CameraConfig
from nvr.config.sources import check_lavfi, protocol_whitelist, scheme_of

# Each fragment reaches the spool file when it is complete: without flush_packets the inner mp4 muxer
# writes in 256 KiB chunks, so a kill -9 lost up to a whole segment instead of at most one fragment (GOP).
SPOOL_FORMAT_OPTIONS = f"{FMP4_FLAGS}:flush_packets=1"


# A camera's timestamps are made continuous before the muxer: each frame's decode time is the previous
# frame's plus the camera's own step when that step is in (0, MAX_FRAME_STEP], else plus one nominal frame.
# A camera clock that steps back or ahead (firmware, NTP) then moves nothing: without this ffmpeg's muxer
# stacked a step back's frames one tick apart ("Non-monotonic DTS") and a 15 s step froze the stream time
# for 15 s. 2 s is above the frame interval of the slowest cameras (1 fps, "smart" variable-rate codecs);
# a longer real pause is caught by the placement check at the segment's end (see docs/timing.md).
SEGMENT_TIME_DELTA = 0.05  # seconds: under a frame at 20 fps, far under any camera's GOP
MAX_FRAME_STEP = 2.0
NOMINAL_FRAME = 0.04
_STEP = "(DTS-PREV_INDTS)"
_NEXT_DTS = (f"if(eq(PREV_INDTS,NOPTS),DTS,PREV_OUTDTS+if(gt({_STEP},0)*lte({_STEP},{MAX_FRAME_STEP:g}/TB),"
             f"{_STEP},if(gt(DURATION,0),DURATION,{NOMINAL_FRAME:g}/TB)))")
CONTINUOUS_TIMESTAMPS = f"setts=dts='{_NEXT_DTS}':pts='{_NEXT_DTS}+PTS-DTS'"


# Streaming protocols whose URL ffmpeg can open through a concat list: no playlist, so the list's own
# "file" protocol (needed to read it) can't be reached by anything the camera serves.
_LISTED_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt")


def input_options(camera: CameraConfig, connect_timeout: float) -> dict[str, object]:
    """The ffmpeg input options of a network camera."""
    # Whatever the camera (or a playlist or redirect it serves) names, ffmpeg opens only these.
    opts: dict[str, object] = {"protocol_whitelist": protocol_whitelist(camera.url)}
    scheme = scheme_of(camera.url)
    if scheme in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = camera.rtsp_transport
        opts["timeout"] = int(connect_timeout * 1_000_000)  # socket I/O timeout, microseconds
    elif scheme in ("http", "https", "tcp", "rtmp", "rtmps"):
        opts["rw_timeout"] = int(connect_timeout * 1_000_000)
    if camera.arrival_time:
        # Each frame timed when it arrives: MJPEG over HTTP carries no timestamps, and ffmpeg would
        # otherwise assume 25 fps, so a 10 fps camera's "10 s" segment held 25 s of real time.
        opts["use_wallclock_as_timestamps"] = 1
    return opts


def hidden_input(camera: CameraConfig, connect_timeout: float) -> str | None:
    """An ffconcat list naming the camera's URL when it carries credentials, so they are not in argv.

    Any local user can read every process's argv (``/proc/<pid>/cmdline``); the list is a 0600 file in
    the private spool. None when the URL has no secret, or its scheme can't go through a list (HLS and
    HTTP: the deployment hides processes instead, see docs/security.md).
    """
    if not has_credentials(camera.url) or scheme_of(camera.url) not in _LISTED_SCHEMES:
        return None
    in_opts = input_options(camera, connect_timeout)
    quoted = camera.url.replace("'", "'\\''")
    lines = ["ffconcat version 1.0", f"file '{quoted}'"]
    lines += [f"option {k} {v}" for k, v in in_opts.items() if k != "protocol_whitelist"]
    return "\n".join(lines) + "\n"


def record_command(
    ffmpeg: str,
    camera: CameraConfig,
    out_pattern: Path,
    *,
    segment_seconds: float,
    connect_timeout: float,
    input_list: Path | None = None,
    audio_to_aac: bool = False,
) -> list[str]:
    """The argv of one recording run: copy the camera's streams into fragmented-MP4 segments.

    The segment list goes to stdout as CSV (``file,start,end`` in stream
    seconds), one line the moment each segment is closed. With ``input_list``
    (a file holding :func:`hidden_input`), ffmpeg reads
    the camera URL from it instead of from argv.
    """
    scheme = camera.url.split(":", 1)[0].lower()
    if scheme == "lavfi":
        # The synthetic demo source has no encoded stream to copy, so it is encoded here (small and fast).
        graph = camera.url.split(":", 1)[1]
        check_lavfi(graph)  # again here: a camera stored by an older release was never checked
        src = ffmpeg_python.input(graph, f="lavfi", re=None)
        codec = {
            "vcodec": "libx264", "preset": "ultrafast", "tune": "zerolatency", "pix_fmt": "yuv420p",
            # A keyframe every second whatever the frame rate, so segments cut on time.
            "force_key_frames": "expr:gte(t,n_forced*1)", "b:v": "400k", "threads": 1,
        }
    else:
        in_opts = input_options(camera, connect_timeout)
        if input_list is not None:
            whitelist = f"file,{in_opts['protocol_whitelist']}"  # "file" reads the list, not the camera
            src = ffmpeg_python.input(str(input_list), f="concat", safe=0, protocol_whitelist=whitelist)
        else:
            src = ffmpeg_python.input(camera.url, **in_opts)
        # Video is always copied. Audio too, unless mp4 can't carry it (G.711 and kin): then AAC, cheap at 8 kHz.
        codec = {"c:v": "copy", **({"c:a": "aac", "b:a": "32k"} if audio_to_aac else {"c:a": "copy"})}
        if camera.clock == "camera":  # arrival times are wall-clock already: nothing to make continuous
            codec["bsf:v"] = CONTINUOUS_TIMESTAMPS
            if camera.audio:
                codec["bsf:a"] = CONTINUOUS_TIMESTAMPS
    streams = [src["v"], src["a?"]] if camera.audio else [src["v"]]
    out = ffmpeg_python.output(
        *streams,
        str(out_pattern),
        f="segment",
        segment_time=f"{segment_seconds:g}",
        segment_format="mp4",
        segment_format_options=SPOOL_FORMAT_OPTIONS,
        segment_list="pipe:1",
        segment_list_type="csv",
        # A keyframe a tick before the cut time still starts the segment: without this a one-tick wobble
        # of the camera's timestamps moved a cut by a whole GOP (1 s and 3 s segments instead of 2 s).
        segment_time_delta=f"{SEGMENT_TIME_DELTA:g}",
        reset_timestamps=1,
        **codec,
    )
    # -progress on stderr: a frame count every second, so a camera that connects but sends nothing shows.
    return ffmpeg_python.compile(out.global_args("-hide_banner", "-nostats", "-loglevel", "warning",
                                                 "-progress", "pipe:2", "-stats_period", "1"), cmd=ffmpeg)
