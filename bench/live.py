"""Measurement 10, live view: capture → client latency, server CPU per viewer, and a stalled viewer.

Three parts, each against ``nvr serve`` as a real subprocess (``bench.common.NvrProc``)
recording the RTSP simulator into the embedded S3:

* **Latency.** The simulator's time-coded mount draws each frame's capture wall
  time into the picture (``tests/support/timecode.py``; 320x240, one keyframe a
  second). nvr records it; at the same time, for the same window, three clients
  read it: Debian's ffmpeg on ``live.mp4`` (through a signed live link), an
  aiohttp WebSocket client on ``/live`` (messages kept with their arrival time,
  decoded afterwards by Debian's ffmpeg), and Debian's ffmpeg on the camera's
  RTSP URL directly. Per frame, latency = when the client had it − the time code
  (``received`` of the decoded frame for ffmpeg; the arrival of the WebSocket
  message that carried it, frames mapped to messages in order by their sample
  counts). The first ``WARMUP_S`` of each client are left out (ffmpeg's stream
  probing holds the first frames back); the time to the first frame is reported
  apart. The ratio is nvr's p50 ÷ the direct RTSP p50, same run.
* **CPU per viewer.** The 1080p ~4 Mbit/s clip camera; one camera. For 0, 1, 10
  and 50 viewers (WebSocket clients in a separate process, reading all the time)
  the CPU of nvr's own Python process (not its ffmpeg, not what it reaped) and of
  its recording ffmpeg is read over the same window. Per viewer = (nvr with N −
  with 0) ÷ N; recording per camera = nvr (with what it reaped) + ffmpeg with 0
  viewers. 0 viewers is measured again at the end: that pair is the run's noise.
  Each viewer's bytes over the window ÷ the bytes the recorder stored per second
  says whether every viewer got the whole stream.
* **A stalled viewer.** A raw TCP client with a 4 KiB receive buffer asks for
  ``live.mp4``, reads the response headers, then reads nothing for the stall,
  then reads again. Meanwhile: the camera's spool directory (files, bytes), the
  spool files nvr holds open after ingest removed them, nvr's RSS, the skips
  ``/metrics`` counts, a second (healthy) WebSocket viewer, and afterwards the
  stored segments' continuity over the stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    CLIP_FPS,
    Mode,
    NvrProc,
    Row,
    Sampler,
    clip,
    clip_bitrate,
    fresh_dir,
    indexed_counts,
    log,
    median,
    mount_url,
    pct,
    pids_cpu,
    print_rows,
    s3_server,
    save,
    simulator,
    tree_cpu,
    wait_for,
)

GOAL_P50_S, GOAL_P99_S, GOAL_PER_VIEWER = 1.5, 2.5, 0.1
WARMUP_S = 3.0  # left out of each latency client's frames: ffmpeg's probing holds the first ones back
VIEWERS_PER_TOKEN = 10  # the server's default allows 32 sessions per token; the fleet spreads over several
STALL_RCVBUF = 4096
MIB = 2**20

# The viewer fleet of the CPU part: N WebSocket viewers in one asyncio process, reading as fast as
# messages come. stdin "mark" prints the counters (JSON); "quit" (or EOF) ends it.
FLEET = r'''
import asyncio, json, sys, threading, time
import aiohttp

base, camera, tokens, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
stats = [{"bytes": 0, "media": 0, "init": 0, "skipped": 0, "end": None, "error": None} for _ in range(n)]
ready = [False] * n


async def viewer(i, http):
    s = stats[i]
    headers = {"Authorization": "Bearer " + tokens[i % len(tokens)]}
    try:
        async with http.ws_connect(f"{base}/api/v1/cameras/{camera}/live", headers=headers, max_msg_size=0,
                                   compress=0) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    data = msg.data
                    s["bytes"] += len(data)
                    head = data[:data.find(b"\r\n\r\n")]
                    if head.startswith(b"Type: media"):
                        s["media"] += 1
                        ready[i] = True
                        at = head.find(b"X-Skipped: ")
                        if at >= 0:
                            s["skipped"] = max(s["skipped"], int(head[at + 11:].split(b"\r\n", 1)[0]))
                    else:
                        s["init"] += 1
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    s["end"] = msg.data
                    return
                else:
                    s["end"] = str(msg.type)
                    return
    except asyncio.CancelledError:
        raise
    except Exception as e:
        s["error"] = repr(e)


async def main():
    loop = asyncio.get_running_loop()
    lines = asyncio.Queue()

    def read_stdin():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(viewer(i, http)))
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 60
        while not all(ready):
            failed = [s for s in stats if s["error"] or s["end"]]
            if failed or time.monotonic() > deadline:
                print("failed " + json.dumps(failed or "timeout"), flush=True)
                return
            await asyncio.sleep(0.1)
        print("ready", flush=True)
        while True:
            line = await lines.get()
            if line == "mark":
                print(json.dumps({"t": time.time(), "stats": stats}), flush=True)
            elif line == "quit":
                break
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


asyncio.run(main())
'''


# ---------------------------------------------------------------------- helpers


def make_tokens(nvr: NvrProc, count: int, role: str = "viewer") -> list[str]:
    """``count`` tokens in the server's index, made before it starts (as NvrProc makes its admin token)."""
    from nvr.api.auth import create_token
    from storage.index import Index

    nvr.data_dir.mkdir(parents=True, exist_ok=True)
    index = Index(nvr.index_path)
    try:
        return [create_token(index, name=f"live-bench-{os.getpid()}-{role}-{i}", role=role, cameras=None)
                for i in range(count)]
    finally:
        index.close()


def api_json(nvr: NvrProc, method: str, path: str, body: dict | None = None) -> dict:
    req = nvr.request(path)
    req.method = method
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def metric(nvr: NvrProc, name: str, camera: str) -> float | None:
    with urllib.request.urlopen(nvr.request("/metrics"), timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^{re.escape(name)}{{camera="{re.escape(camera)}"}} (\S+)$', text, re.M)
    return float(m[1]) if m else None


def spool_usage(nvr: NvrProc, camera: str) -> dict[str, int]:
    """Files and bytes in the camera's spool directory, and spool files nvr holds open that are already removed."""
    from storage.spool import SEGMENT_RE

    d = nvr.spool_dir / camera
    files = segments = size = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(d):
            with contextlib.suppress(FileNotFoundError):
                size += entry.stat().st_size
                files += 1
                segments += bool(SEGMENT_RE.match(entry.name))
    held = 0
    fd_dir = Path(f"/proc/{nvr.pid}/fd")
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(fd_dir / fd)
                if target.startswith(str(d)) and target.endswith("(deleted)"):
                    held += 1
    return {"files": files, "segment_files": segments, "bytes": size, "removed_but_open": held}


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def stored_rate(nvr: NvrProc, camera: str) -> float:
    """Bytes per second of media the recorder stored (whole segments in the index)."""
    from storage.index import Index

    index = Index(nvr.index_path, migrate_schema=False)
    try:
        rows = [r for r in index.segments(camera) if not r.partial]
    finally:
        index.close()
    ms = sum(r.end_ms - r.start_ms for r in rows)
    return sum(r.size for r in rows) / (ms / 1000) if ms else math.nan


def stats_of(values: list[float]) -> dict[str, Any]:
    return {"p50": median(values), "p99": pct(values, 99), "max": max(values, default=None),
            "min": min(values, default=None), "n": len(values)}


class AsyncThread:
    """A coroutine run on its own loop in a thread; ``result()`` joins it."""

    def __init__(self, coro):
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(coro,), daemon=True)
        self._thread.start()

    def _run(self, coro) -> None:
        try:
            self._result = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in result()
            self._error = e

    def result(self, timeout: float | None = None) -> Any:
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self._result


async def ws_collect(url: str, token: str, seconds: float) -> list[tuple[float, bytes | str]]:
    """Every message of a live WebSocket for ``seconds``, each with its arrival time (time.time())."""
    import aiohttp

    out: list[tuple[float, bytes | str]] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0,
                                   compress=0) as ws:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await asyncio.wait_for(ws.receive(), left)
                except TimeoutError:
                    break
                if msg.type == aiohttp.WSMsgType.BINARY:
                    out.append((time.time(), msg.data))
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    out.append((time.time(), msg.data))
                    break
                else:
                    break
    return out


# ---------------------------------------------------------------------- 1. latency


def frames_of(source: str, input_args: list[str], seconds: float) -> tuple[list[Any], float]:
    """Frames Debian's ffmpeg decodes from ``source`` for ``seconds``, and when it started (time.time())."""
    from tests.support.rtsp import independent_ffmpeg
    from tests.support.timecode import read_frames

    started = time.time()
    end = time.monotonic() + seconds
    frames = []
    gen = read_frames(source, input_args=input_args, ffmpeg=independent_ffmpeg())
    try:
        for f in gen:
            frames.append(f)
            if time.monotonic() >= end:
                break
    finally:
        gen.close()
    return frames, started


def door_latency(frames: list[Any], started: float) -> dict[str, Any]:
    timed = [f for f in frames if f.wall_ms is not None]
    steady = [f.received * 1000 - f.wall_ms for f in timed if f.received >= started + WARMUP_S]
    first = timed[0] if timed else None
    return {"latency_ms": stats_of(steady), "frames": len(frames), "frames_unreadable": len(frames) - len(timed),
            "first_frame_s": round(first.received - started, 3) if first else None,
            "first_frame_latency_ms": round(first.received * 1000 - first.wall_ms) if first else None}


def ws_latency(messages: list[tuple[float, bytes | str]], started: float, work: Path) -> dict[str, Any]:
    """Decode the WebSocket's bytes as a client appends them and give each frame its message's arrival time."""
    from nvr.base.mp4 import parse_segment
    from nvr.live import framing
    from tests.support.rtsp import independent_ffmpeg
    from tests.support.timecode import read_frames

    init: bytes | None = None
    generations: set[str] = set()
    media: list[tuple[float, dict[str, str], bytes, int]] = []  # arrival, headers, body, video samples
    end_reason = None
    for at, raw in messages:
        if isinstance(raw, str):
            end_reason = raw
            continue
        h, body = framing.decode(raw)
        if h["Type"] == "init":
            generations.add(h["X-Init"])
            if init is None:
                init = body
            continue
        if init is None or len(generations) > 1:
            continue  # only the first configuration's stream is decoded
        seg = parse_segment(init + body)
        traf = seg.fragments[0].traf(seg.init.lead.track_id)
        media.append((at, h, body, traf.sample_count if traf else 0))
    out: dict[str, Any] = {"messages": len(messages), "media_messages": len(media), "inits": len(generations),
                           "end": end_reason}
    if init is None or not media:
        out["latency_ms"] = stats_of([])
        return out
    path = work / "ws.mp4"
    path.write_bytes(init + b"".join(body for _, _, body, _ in media))
    frames = list(read_frames(path, input_args=["-f", "mp4"], ffmpeg=independent_ffmpeg()))
    arrivals = [at for at, _, _, n in media for _ in range(n)]
    out["frames"], out["samples"] = len(frames), len(arrivals)
    pairs = list(zip(frames, arrivals, strict=False))
    timed = [(f, at) for f, at in pairs if f.wall_ms is not None]
    out["frames_unreadable"] = len(pairs) - len(timed)
    out["latency_ms"] = stats_of([at * 1000 - f.wall_ms for f, at in timed if at >= started + WARMUP_S])
    first = media[0]
    out["first_frame_s"] = round(first[0] - started, 3)
    out["skipped_max"] = max(int(h.get("X-Skipped", "0")) for _, h, _, _ in media)
    # What the server says a fragment's first frame was captured at (X-Wall-Clock) − what its picture shows.
    from datetime import datetime

    errs, k = [], 0
    for _, h, _, n in media:
        if k < len(frames) and frames[k].wall_ms is not None and "X-Wall-Clock" in h:
            said = datetime.fromisoformat(h["X-Wall-Clock"].replace("Z", "+00:00")).timestamp() * 1000
            errs.append(said - frames[k].wall_ms)
        k += n
    out["wall_clock_header_error_ms"] = stats_of(errs)
    out["wall_clock_sources"] = sorted({h.get("X-Wall-Clock-Source", "") for _, h, _, _ in media})
    return out


def latency(mode: Mode, work: Path, s3) -> dict[str, Any]:
    from tests.support.rtsp import RtspSimulator, gst_available

    seconds = mode.pick(60.0, 300.0, smoke=10.0)
    reason = gst_available(timecoded=True)
    if reason:
        raise RuntimeError(f"RTSP simulator unavailable: {reason}")
    sim = RtspSimulator().start(mounts=(), timecoded=("tc1",), fps=CLIP_FPS)
    try:
        cam = "tc1"
        nvr = NvrProc(work / "latency", s3, s3.make_bucket(f"live-lat-{os.getpid()}"),
                      [{"id": cam, "url": sim.url("tc1")}])
        try:
            nvr.start()
            wait_for(lambda: indexed_counts(nvr.index_path).get(cam), timeout=90, what="tc1's first segment",
                     proc=nvr.proc)
            link = api_json(nvr, "POST", f"/api/v1/cameras/{cam}/live-links", {"seconds": 3600})
            load0 = os.getloadavg()
            log(f"live latency: three clients for {seconds:.0f} s (live.mp4, WebSocket, direct RTSP)")
            t0 = time.time()
            ws = AsyncThread(ws_collect(nvr.url(f"/api/v1/cameras/{cam}/live"), nvr.token, seconds + 1))
            results: dict[str, Any] = {}

            def door(name: str, source: str, args: list[str]) -> None:
                try:
                    results[name] = frames_of(source, args, seconds)
                except BaseException as e:  # noqa: BLE001
                    results[name] = e

            threads = [threading.Thread(target=door, args=("mp4", nvr.url(link["mp4"]), ["-f", "mp4"])),
                       threading.Thread(target=door, args=("rtsp", sim.url("tc1"), ["-rtsp_transport", "tcp"]))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(seconds + 60)
            messages = ws.result(60)
            load1 = os.getloadavg()
        finally:
            nvr.stop()
    finally:
        sim.stop()
    out: dict[str, Any] = {"seconds": seconds, "warmup_s": WARMUP_S, "fps": CLIP_FPS, "gop_s": 1.0,
                           "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1]}
    for name in ("mp4", "rtsp"):
        r = results.get(name)
        if isinstance(r, BaseException) or r is None:
            raise RuntimeError(f"the {name} client failed: {r!r}")
        out[name] = door_latency(*r)
    out["ws"] = ws_latency(messages, t0, work)
    rtsp = out["rtsp"]["latency_ms"]["p50"]
    for name in ("mp4", "ws"):
        p50 = out[name]["latency_ms"]["p50"]
        out[name]["ratio_p50_over_rtsp"] = p50 / rtsp if p50 is not None and rtsp else None
    return out


# ---------------------------------------------------------------------- 2. CPU per viewer, 3. a stalled viewer


class Fleet:
    """N WebSocket viewers in a child process (so their CPU is not the server's)."""

    def __init__(self, nvr: NvrProc, camera: str, tokens: list[str], n: int, script: Path):
        self.proc = subprocess.Popen(
            [sys.executable, str(script), nvr.url(""), camera, json.dumps(tokens), str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"the viewer fleet ({n}) did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def mark(self) -> dict[str, Any]:
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cpu_steps(mode: Mode, nvr: NvrProc, cam: str, tokens: list[str], work: Path) -> dict[str, Any]:
    window = mode.pick(30.0, 120.0, smoke=8.0)
    steps = mode.pick((0, 1, 10, 50), (0, 1, 10, 50, 100), smoke=(0, 1, 10))
    script = work / "fleet.py"
    script.write_text(FLEET)
    out: list[dict[str, Any]] = []
    for n in (*steps, 0):
        fleet = Fleet(nvr, cam, tokens, n, script) if n else None
        try:
            time.sleep(3.0)  # the feed and every viewer in their stride
            load0 = os.getloadavg()
            m0 = fleet.mark() if fleet else None
            c0, f0, w0 = tree_cpu(nvr.pid), pids_cpu([fleet.proc.pid]) if fleet else 0.0, time.monotonic()
            skip0 = metric(nvr, "nvr_live_skipped_fragments_total", cam) or 0
            time.sleep(window)
            m1 = fleet.mark() if fleet else None
            c1, f1, w1 = tree_cpu(nvr.pid), pids_cpu([fleet.proc.pid]) if fleet else 0.0, time.monotonic()
            skip1 = metric(nvr, "nvr_live_skipped_fragments_total", cam) or 0
            load1 = os.getloadavg()
        finally:
            if fleet:
                fleet.stop()
        secs = w1 - w0
        step: dict[str, Any] = {
            "viewers": n, "window_s": round(secs, 2),
            "nvr_self_pct": 100 * (c1["root_self"] - c0["root_self"]) / secs,
            "nvr_reaped_pct": 100 * (c1["root_reaped"] - c0["root_reaped"]) / secs,
            "ffmpeg_pct": 100 * (c1["ffmpeg"] - c0["ffmpeg"]) / secs,
            "fleet_client_pct": 100 * (f1 - f0) / secs,
            "skipped_fragments": skip1 - skip0,
            "loadavg": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
        }
        if fleet:
            per = [(b["bytes"] - a["bytes"]) / (m1["t"] - m0["t"]) for a, b in zip(m0["stats"], m1["stats"],
                                                                                   strict=True)]
            step["bytes_per_viewer_s"] = {"min": min(per), "median": median(per), "max": max(per)}
            step["viewer_errors"] = [s for s in m1["stats"] if s["error"] or s["end"]]
            step["viewer_skipped_max"] = max(s["skipped"] for s in m1["stats"])
        log(f"live cpu: {n:>3} viewers: nvr {step['nvr_self_pct']:.2f} % core (+reaped "
            f"{step['nvr_reaped_pct']:.2f}), ffmpeg {step['ffmpeg_pct']:.2f} %, client {step['fleet_client_pct']:.1f} %"
            f", load {load0[0]:.2f}")
        out.append(step)
        time.sleep(4.0)  # the feed lingers 3 s after its last viewer
    return {"window_s": window, "steps": out}


def stall(mode: Mode, nvr: NvrProc, cam: str, token: str, other_token: str) -> dict[str, Any]:
    """A viewer that stops reading: what it costs the server, the spool, the recording, the other viewers."""
    from storage.index import Index

    stall_s = mode.pick(30.0, 120.0, smoke=10.0)
    read_again_s = 5.0
    before = {"spool": spool_usage(nvr, cam), "rss": rss(nvr.pid),
              "skipped": metric(nvr, "nvr_live_skipped_fragments_total", cam) or 0,
              "sent_bytes": metric(nvr, "nvr_live_sent_bytes_total", cam) or 0}
    # A healthy viewer alongside, for the whole stall and the read-again.
    other = AsyncThread(ws_collect(nvr.url(f"/api/v1/cameras/{cam}/live"), other_token, stall_s + read_again_s + 4))
    time.sleep(2.0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALL_RCVBUF)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", nvr.port))
    sock.sendall((f"GET /api/v1/cameras/{cam}/live.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # one byte at a time: nothing past the headers is read before the stall
        if not chunk:
            raise RuntimeError(f"live.mp4 closed before its headers: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"live.mp4 answered {head[:200]!r}")
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    log(f"live stall: reading nothing for {stall_s:.0f} s (SO_RCVBUF {STALL_RCVBUF}, kernel: {rcvbuf})")
    t0w = time.time()

    def sample() -> dict[str, Any]:
        return {"spool": spool_usage(nvr, cam), "rss": rss(nvr.pid),
                "skipped": metric(nvr, "nvr_live_skipped_fragments_total", cam) or 0}

    with Sampler(sample, 0.5) as sampler:
        time.sleep(stall_s)
        t1w = time.time()
        got, first_at = 0, None
        sock.settimeout(0.5)
        end = time.monotonic() + read_again_s
        per_s: list[int] = [0] * int(read_again_s)
        while (now := time.monotonic()) < end:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += len(chunk)
            first_at = first_at if first_at is not None else now - (end - read_again_s)
            per_s[min(len(per_s) - 1, int(read_again_s - (end - now)))] += len(chunk)
    sock.close()
    after = {"skipped": metric(nvr, "nvr_live_skipped_fragments_total", cam) or 0}
    messages = other.result(stall_s + 60)
    # The recording over the stall: segments until one ends after it, and no hole between them.
    wait_for(lambda: _last_end(nvr, cam) >= t1w * 1000, timeout=60, what="a segment ending after the stall",
             proc=nvr.proc)
    index = Index(nvr.index_path, migrate_schema=False)
    try:
        rows = index.segments(cam, int(t0w * 1000), int(t1w * 1000))
    finally:
        index.close()
    holes = [b.start_ms - a.end_ms for a, b in itertools.pairwise(rows)]
    samples = [v for _, v in sampler.samples]
    other_media = [raw for _, raw in messages if isinstance(raw, bytes) and raw.startswith(b"Type: media")]
    other_skipped = max((int(re.search(rb"X-Skipped: (\d+)", m)[1]) for m in other_media), default=None)
    return {
        "stall_s": stall_s, "read_again_s": read_again_s, "rcvbuf_asked": STALL_RCVBUF, "rcvbuf_kernel": rcvbuf,
        "spool_before": before["spool"],
        "spool_max": {k: max(s["spool"][k] for s in samples) for k in before["spool"]},
        "rss_before": before["rss"], "rss_max": max(s["rss"] for s in samples),
        "rss_after": rss(nvr.pid),
        "skipped_during": max(s["skipped"] for s in samples) - before["skipped"],
        "skipped_total_after": after["skipped"] - before["skipped"],
        "read_again_bytes": got, "read_again_first_byte_s": first_at, "read_again_bytes_per_s": per_s,
        "segments_over_stall": len(rows),
        "covered": bool(rows) and rows[0].start_ms <= t0w * 1000 and rows[-1].end_ms >= t1w * 1000,
        "holes_ms": holes, "gaps_over_1s": sum(1 for h in holes if h > 1000),
        "other_viewer": {"media_messages": len(other_media), "skipped_max": other_skipped,
                         "expected_about": round(stall_s + read_again_s + 2)},
        "samples": len(samples),
    }


def _last_end(nvr: NvrProc, cam: str) -> int:
    from storage.index import Index

    index = Index(nvr.index_path, migrate_schema=False)
    try:
        return index.last_end_ms(cam) or 0
    finally:
        index.close()


def cost_and_stall(mode: Mode, work: Path, s3) -> dict[str, Any]:
    cam = "cam000"
    with simulator(1) as sim:
        nvr = NvrProc(work / "cost", s3, s3.make_bucket(f"live-cost-{os.getpid()}"),
                      [{"id": cam, "url": mount_url(sim, 0)}])
        most = max(mode.pick((0, 1, 10, 50), (0, 1, 10, 50, 100), smoke=(0, 1, 10)))
        tokens = make_tokens(nvr, math.ceil(most / VIEWERS_PER_TOKEN) + 2)
        try:
            nvr.start()
            wait_for(lambda: indexed_counts(nvr.index_path).get(cam), timeout=90, what="the first segment",
                     proc=nvr.proc)
            cpu = cpu_steps(mode, nvr, cam, tokens[:-2], work)
            cpu["stored_bytes_per_s"] = stored_rate(nvr, cam)
            st = stall(mode, nvr, cam, tokens[-2], tokens[-1])
        finally:
            nvr.stop()
    return {"cpu": cpu, "stall": st}


# ---------------------------------------------------------------------- results


def summarize(data: dict[str, Any]) -> None:
    cpu = data["cpu"]
    steps = cpu["steps"]
    zero, again = steps[0], steps[-1]
    assert zero["viewers"] == 0 and again["viewers"] == 0
    rec = zero["nvr_self_pct"] + zero["nvr_reaped_pct"] + zero["ffmpeg_pct"]
    cpu["recording_pct_per_camera"] = rec
    cpu["noise_zero_again_over_zero"] = ((again["nvr_self_pct"] + again["nvr_reaped_pct"] + again["ffmpeg_pct"])
                                         / rec)
    cpu["noise_nvr_self_zero_again_minus_zero_pct"] = again["nvr_self_pct"] - zero["nvr_self_pct"]
    rate = cpu["stored_bytes_per_s"]
    per: dict[str, Any] = {}
    one = next((s for s in steps if s["viewers"] == 1), None)
    # The feed (one spool tail per camera, whatever the number of viewers) is in the first viewer's cost;
    # each further viewer adds only its own sending: (N − 1 viewer) ÷ (N − 1).
    cpu["feed_and_first_viewer_pct"] = one["nvr_self_pct"] - zero["nvr_self_pct"] if one else None
    for s in steps[1:-1]:
        n = s["viewers"]
        pv = (s["nvr_self_pct"] - zero["nvr_self_pct"]) / n
        marginal = (s["nvr_self_pct"] - one["nvr_self_pct"]) / (n - 1) if one and n > 1 else None
        per[str(n)] = {"per_viewer_pct": pv, "ratio": pv / rec,
                       "marginal_pct": marginal, "marginal_ratio": marginal / rec if marginal is not None else None,
                       "bytes_ratio_median": s["bytes_per_viewer_s"]["median"] / rate,
                       "bytes_ratio_min": s["bytes_per_viewer_s"]["min"] / rate,
                       "ffmpeg_over_zero": s["ffmpeg_pct"] / zero["ffmpeg_pct"]}
    cpu["per_viewer"] = per


def rows_for(data: dict[str, Any]) -> list[Row]:
    lat, cpu, st = data["latency"], data["cpu"], data["stall"]
    rows = []
    r = lat["rtsp"]["latency_ms"]
    for door, label in (("mp4", "live.mp4 (Debian ffmpeg)"), ("ws", "WebSocket (aiohttp, decoded by Debian ffmpeg)")):
        d = lat[door]["latency_ms"]
        ok = (d["p50"] or 1e9) <= GOAL_P50_S * 1000 and (d["p99"] or 1e9) <= GOAL_P99_S * 1000
        rows.append(Row(
            f"10. Live latency, {label}", lat[door]["ratio_p50_over_rtsp"], "p50 nvr live ÷ direct RTSP",
            f"p50 ≤ {GOAL_P50_S} s, p99 ≤ {GOAL_P99_S} s {'✓' if ok else '✗'}",
            f"capture → client p50 {d['p50'] / 1000:.2f} s, p99 {d['p99'] / 1000:.2f} s, max {d['max'] / 1000:.2f} s "
            f"({d['n']} frames past a {lat['warmup_s']:g} s warm-up); direct RTSP p50 {r['p50'] / 1000:.2f} s, "
            f"p99 {r['p99'] / 1000:.2f} s ({r['n']} frames); first frame after {lat[door]['first_frame_s']:.1f} s; 1 s GOP, {lat['fps']} fps, "
            f"{lat['seconds']:.0f} s; load {lat['loadavg_start'][0]:.2f}"))
    zero = cpu["steps"][0]
    per = cpu["per_viewer"]
    ns = sorted(per, key=int)
    big = ns[-1]
    p = per[big]
    rows.append(Row(
        f"10. Live: server CPU per viewer ÷ recording CPU per camera, at {big} viewers", p["ratio"],
        "nvr CPU per viewer ÷ recording per camera",
        f"≤ {GOAL_PER_VIEWER} at " + ", ".join(f"{n} {'✓' if per[n]['ratio'] <= GOAL_PER_VIEWER else '✗'}" for n in ns),
        "; ".join(f"{n} viewers: {per[n]['per_viewer_pct']:.3f} % core per viewer, ratio {per[n]['ratio']:.3f}"
                  for n in ns)
        + f"; the feed + first viewer {cpu['feed_and_first_viewer_pct']:.2f} % core, each further viewer "
        + ", ".join(f"{per[n]['marginal_pct']:.3f} % ({per[n]['marginal_ratio']:.3f}× rec.) at {n}"
                    for n in ns if per[n]["marginal_pct"] is not None)
        + f"; recording {cpu['recording_pct_per_camera']:.2f} % core (Python {zero['nvr_self_pct']:.2f} + reaped "
          f"{zero['nvr_reaped_pct']:.2f} + ffmpeg {zero['ffmpeg_pct']:.2f}); noise: 0 viewers again ÷ 0 = "
          f"{cpu['noise_zero_again_over_zero']:.2f}; 1080p {clip_bitrate():.1f} Mbit/s, {cpu['window_s']:.0f} s each; "
          f"load {zero['loadavg'][0]:.2f}–{max(s['loadavg'][0] for s in cpu['steps']):.2f}"))
    step_big = next(s for s in cpu["steps"] if str(s["viewers"]) == big)
    rows.append(Row(
        f"10. Live: recorder's ffmpeg CPU with {big} viewers ÷ with 0", p["ffmpeg_over_zero"], "ffmpeg CPU N ÷ 0",
        "≈ 1", f"ffmpeg {step_big['ffmpeg_pct']:.2f} vs {zero['ffmpeg_pct']:.2f} % core; bytes per viewer per s ÷ "
               f"stored bytes per s: median {p['bytes_ratio_median']:.3f}, lowest {p['bytes_ratio_min']:.3f} "
               f"({cpu['stored_bytes_per_s'] * 8 / 1e6:.2f} Mbit/s stored); skips {step_big['skipped_fragments']:.0f}"))
    rows.append(Row(
        "10. Live: a viewer stalled (4 KiB receive buffer)", st["rss_max"] / st["rss_before"], "nvr RSS max ÷ before",
        "bounded; no spool growth, no gap",
        f"{st['stall_s']:.0f} s stalled: spool {st['spool_before']['segment_files']} → max "
        f"{st['spool_max']['segment_files']} segment files ({st['spool_before']['bytes'] / MIB:.1f} → max "
        f"{st['spool_max']['bytes'] / MIB:.1f} MiB), removed-but-open max {st['spool_max']['removed_but_open']}; "
        f"RSS {st['rss_before'] / MIB:.0f} → max {st['rss_max'] / MIB:.0f} MiB; {st['gaps_over_1s']} gaps > 1 s in "
        f"{st['segments_over_stall']} segments; skipped {st['skipped_total_after']:.0f} fragments; then "
        f"{st['read_again_bytes'] / MIB:.1f} MiB in {st['read_again_s']:.0f} s; the other viewer: "
        f"{st['other_viewer']['media_messages']} fragments, {st['other_viewer']['skipped_max']} skipped"))
    return rows


def run(mode: Mode) -> list[Row]:
    work = fresh_dir("live")
    clip()  # encoded (cached) before any server starts
    data: dict[str, Any] = {"loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        with s3_server(work) as s3:
            data["latency"] = latency(mode, work, s3)
            log(f"live latency: mp4 p50 {data['latency']['mp4']['latency_ms']['p50']} ms, ws p50 "
                f"{data['latency']['ws']['latency_ms']['p50']} ms, rtsp p50 {data['latency']['rtsp']['latency_ms']['p50']} ms")
            data.update(cost_and_stall(mode, work, s3))
    finally:
        data["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summarize(data)
    rows = rows_for(data)
    save("live", mode, rows, data)
    print_rows(rows)
    shutil.rmtree(work, ignore_errors=True)
    return rows
