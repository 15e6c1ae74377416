"""Time codes: a frame's capture wall time drawn as black/white blocks, and read back.

The time-coded test cameras (``rtsp_sim.py --timecoded``, ``mjpeg_sim.py``)
draw on every frame the wall time at which it was captured, so that a test
can tell, frame by frame, where a recording placed each picture.

Layout: the frame is a grid of 20 x 15 cells, each all black or all white
(at 320x240 a cell is one 16x16 macroblock, which survives H.264 and JPEG
compression intact).  The 300 cells hold three copies of one 100-bit code,
five rows each, top to bottom, read left to right::

    4 marker bits 1010 | 64 bits: wall time, ms since the epoch | 32 bits: CRC-32 of those 8 bytes

The CRC turns a misread into ``None`` instead of a wrong time; with three
copies a frame stays readable when one copy is damaged, and a bitwise
majority of the copies rescues frames where each copy lost a different cell.

Drawing (``gray_frame``, ``i420_frame``, ``jpeg_frame``) needs only the
stdlib, because ``rtsp_sim.py`` imports this module under Debian's
``/usr/bin/python3``.  Reading (``read_frames``, ``frame_times``) runs the
ffmpeg binary of the ``imageio_ffmpeg`` wheel, imported only when called.
"""

from __future__ import annotations

import math
import queue
import re
import subprocess
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

COLS = 20
ROWS = 15
COPIES = 3
MARKER = (1, 0, 1, 0)
CODE_BITS = len(MARKER) + 64 + 32
assert CODE_BITS * COPIES == COLS * ROWS

# Video-range luma, what a camera's encoder gets; decoding adapts its threshold.
BLACK = 16
WHITE = 235
NEUTRAL_CHROMA = 128


def code_cells(wall_ms: int) -> list[int]:
    """The grid's 300 cells, row by row, 1 for white, for a frame captured at ``wall_ms``."""
    payload = wall_ms.to_bytes(8, "big")  # OverflowError outside 0 .. 2**64 - 1
    data = payload + zlib.crc32(payload).to_bytes(4, "big")
    value = int.from_bytes(data, "big")
    bits = [*MARKER, *((value >> shift) & 1 for shift in range(len(data) * 8 - 1, -1, -1))]
    return bits * COPIES


def decode_cells(cells: Sequence[int]) -> int | None:
    """The wall time (ms) held by 300 cells, or None when no copy checks out."""
    copies = [cells[k * CODE_BITS : (k + 1) * CODE_BITS] for k in range(COPIES)]
    # Each copy alone first, then a bitwise majority vote across them.
    majority = [1 if sum(bits) * 2 > COPIES else 0 for bits in zip(*copies, strict=True)]
    for bits in (*copies, majority):
        if tuple(bits[: len(MARKER)]) != MARKER:
            continue
        value = 0
        for bit in bits[len(MARKER) :]:
            value = (value << 1) | bit
        data = value.to_bytes(12, "big")
        if zlib.crc32(data[:8]) == int.from_bytes(data[8:], "big"):
            return int.from_bytes(data[:8], "big")
    return None


def _edges(size: int, count: int) -> list[int]:
    return [round(i * size / count) for i in range(count + 1)]


def gray_frame(wall_ms: int, width: int, height: int) -> bytes:
    """An 8-bit luma plane (``width`` x ``height``) showing ``wall_ms``."""
    cells = code_cells(wall_ms)
    xs, ys = _edges(width, COLS), _edges(height, ROWS)
    runs = [(bytes([BLACK]) * (b - a), bytes([WHITE]) * (b - a)) for a, b in zip(xs, xs[1:], strict=False)]
    plane = bytearray()
    for row in range(ROWS):
        line = b"".join(run[cells[row * COLS + col]] for col, run in enumerate(runs))
        plane += line * (ys[row + 1] - ys[row])
    return bytes(plane)


def i420_frame(wall_ms: int, width: int, height: int) -> bytes:
    """A raw I420 picture (``width`` and ``height`` even) showing ``wall_ms`` in grey levels."""
    chroma = bytes([NEUTRAL_CHROMA]) * ((width // 2) * (height // 2))
    return gray_frame(wall_ms, width, height) + chroma + chroma


# --- JPEG ------------------------------------------------------------------
# Each 8x8 block of a time-code picture is flat, so its DCT is a lone DC
# coefficient: a baseline JPEG needs no transform, only the DC differences
# and an end-of-block per block.  With a DC quantiser of 8 the quantised DC is
# exactly level - 128.  The Huffman tables are minimal but standard-conforming:
# DC categories 0-11 as 4-bit codes, and a one-symbol AC table (EOB = "0").

_DQT = b"\xff\xdb\x00\x43\x00" + bytes([8] * 64)
_HUFFMAN_TABLES = (
    b"\x00" + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12))  # DC table 0
    + b"\x10" + bytes([1] + [0] * 15) + b"\x00"  # AC table 0
)
_DHT = b"\xff\xc4" + (2 + len(_HUFFMAN_TABLES)).to_bytes(2, "big") + _HUFFMAN_TABLES
_SOS = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00"


def _sof0(width: int, height: int) -> bytes:
    # Three components, 4:2:0 like a camera's: Y sampled 2x2, Cb and Cr 1x1, one quantiser.
    return (
        b"\xff\xc0\x00\x11\x08"
        + height.to_bytes(2, "big") + width.to_bytes(2, "big")
        + b"\x03\x01\x22\x00\x02\x11\x00\x03\x11\x00"
    )  # fmt: skip


def jpeg_frame(wall_ms: int, width: int, height: int) -> bytes:
    """A baseline 4:2:0 JPEG (``width`` and ``height`` multiples of 16) showing ``wall_ms``."""
    if width % 16 or height % 16 or width < COLS or height < ROWS:
        raise ValueError(f"JPEG time codes need a size in multiples of 16, not {width}x{height}")
    cells = code_cells(wall_ms)
    acc = nbits = 0
    out = bytearray()

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc = (acc << length) | value
        nbits += length
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)  # byte stuffing: 0xFF in entropy data is followed by 0
        acc &= (1 << nbits) - 1

    def block(diff: int) -> None:
        size = abs(diff).bit_length()
        put(size, 4)
        if size:
            put(diff if diff > 0 else diff + (1 << size) - 1, size)
        put(0, 1)  # end of block: no AC coefficients

    previous = 0
    for y in range(0, height, 16):
        for x in range(0, width, 16):
            for dy, dx in ((0, 0), (0, 8), (8, 0), (8, 8)):
                # The cell under the block's centre: cells are at least 16 px wide here.
                cx, cy = x + dx + 4, y + dy + 4
                white = cells[(cy * ROWS // height) * COLS + cx * COLS // width]
                dc = (WHITE if white else BLACK) - 128
                block(dc - previous)
                previous = dc
            block(0)  # Cb, neutral
            block(0)  # Cr, neutral
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)  # pad the last byte with ones
    return b"\xff\xd8" + _DQT + _sof0(width, height) + _DHT + _SOS + bytes(out) + b"\xff\xd9"


# --- reading ---------------------------------------------------------------

# Frames are scaled to 4x4 pixels per cell before they are read, whatever
# their size; the centre 2x2 of each cell is then clear of block edges.
SCAN_CELL = 4
SCAN_WIDTH = COLS * SCAN_CELL
SCAN_HEIGHT = ROWS * SCAN_CELL
SCAN_BYTES = SCAN_WIDTH * SCAN_HEIGHT
# Below this spread between the darkest and brightest cell a frame holds no code.
MIN_CONTRAST = 64

PTS_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
STDERR_TAIL_LINES = 30

_SHOWINFO = re.compile(r"\] n:\s*(\d+)\s+pts:\s*\S+\s+pts_time:\s*(\S+)")


def decode_scan(pixels: bytes) -> int | None:
    """The wall time (ms) shown by a ``SCAN_WIDTH`` x ``SCAN_HEIGHT`` grey picture, or None."""
    half = SCAN_CELL // 2
    levels = []
    for row in range(ROWS):
        top = (row * SCAN_CELL + half // 2) * SCAN_WIDTH
        for col in range(COLS):
            at = top + col * SCAN_CELL + half // 2
            levels.append(sum(pixels[at : at + half]) + sum(pixels[at + SCAN_WIDTH : at + SCAN_WIDTH + half]))
    low, high = min(levels), max(levels)
    if high - low < MIN_CONTRAST * half * 2:
        return None
    threshold = (low + high) / 2
    return decode_cells([1 if level > threshold else 0 for level in levels])


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its presentation time, the wall time it shows, when it was read."""

    pts: float  # seconds, as the demuxer reports them (ffmpeg -copyts); nan if it has none
    wall_ms: int | None  # None if the picture holds no readable time code
    received: float  # time.time() when the frame came out of ffmpeg


def read_frames(
    source: str | Path,
    *,
    input_args: Sequence[str] = (),
    extra_outputs: Sequence[str] = (),
    log: list[str] | None = None,
    ffmpeg: str | None = None,
) -> Iterator[Frame]:
    """Decode ``source`` (a file or a live URL) with ffmpeg, yielding every video frame as it comes.

    ``input_args`` go before ``-i`` (e.g. ``-rtsp_transport tcp -t 6``);
    ``extra_outputs`` are further ffmpeg outputs fed by the same input, such
    as ``-map 0:v -c copy rec.mp4`` to record exactly what was decoded.
    ``log``, if given, collects ffmpeg's log lines other than showinfo's.
    ``ffmpeg``: the binary (Debian's, to check with a decoder nvr does not
    record with); the wheel's by default.
    ffmpeg's exit status is checked once its output is exhausted; closing
    the generator early stops ffmpeg as SIGTERM does, which still finishes
    the extra outputs.  To read a live source for a while, break out of the
    loop rather than use ffmpeg's ``-t``: after a timestamp fault (a jump
    back, a reset) ffmpeg may take ``-t`` as reached at once.
    """
    # Imported here: drawing must work without the venv (see the module docstring).
    import imageio_ffmpeg

    cmd = [
        ffmpeg or imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
        # One decoding thread: frame threads would hold back frames and delay
        # ``received``; -copyts keeps the timestamps the demuxer read.
        "-threads", "1", "-copyts", *input_args, "-i", str(source),
        "-map", "0:v:0", "-vf", f"showinfo,scale={SCAN_WIDTH}:{SCAN_HEIGHT}:flags=area,format=gray",
        "-fps_mode", "passthrough", "-flush_packets", "1", "-f", "rawvideo", "pipe:1",
        *extra_outputs,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pts_queue: queue.Queue[float] = queue.Queue()
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    reader = threading.Thread(
        target=_read_showinfo, args=(proc.stderr, pts_queue, tail, log), daemon=True
    )
    reader.start()
    try:
        while True:
            pixels = _read_exactly(proc.stdout, SCAN_BYTES)
            if pixels is None:
                break
            received = time.time()
            try:
                pts = pts_queue.get(timeout=PTS_TIMEOUT)
            except queue.Empty:
                raise RuntimeError(f"no showinfo line for a frame of {source}:\n" + "\n".join(tail)) from None
            yield Frame(pts=pts, wall_ms=decode_scan(pixels), received=received)
        status = proc.wait()
        reader.join()
        if status != 0:
            raise RuntimeError(f"ffmpeg exited with {status} reading {source}:\n" + "\n".join(tail))
    finally:
        if proc.poll() is None:
            # SIGTERM lets ffmpeg finish its other outputs (an MP4 needs its
            # index written); draining the pipe keeps it from blocking on a
            # frame nobody reads meanwhile.
            proc.terminate()
            drain = threading.Thread(target=proc.stdout.read, daemon=True)
            drain.start()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            drain.join(timeout=STOP_TIMEOUT)
        proc.stdout.close()
        reader.join(timeout=STOP_TIMEOUT)
        proc.stderr.close()


def frame_times(path: str | Path) -> list[tuple[float, int | None]]:
    """(presentation time in s, wall time in ms or None) of every decoded video frame of ``path``."""
    return [(frame.pts, frame.wall_ms) for frame in read_frames(path)]


def _read_exactly(stream, size: int) -> bytes | None:
    """``size`` bytes from ``stream``; None at its end (a partial last frame is dropped)."""
    chunks, missing = [], size
    while missing:
        chunk = stream.read(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _read_showinfo(
    stream, pts_queue: queue.Queue[float], tail: deque[str], log: list[str] | None
) -> None:
    """Queue the pts of every frame showinfo reports (in order) and keep the rest of the log."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        match = _SHOWINFO.search(line)
        if match:
            pts_queue.put(math.nan if match[2] == "NOPTS" else float(match[2]))
        elif "Parsed_showinfo" not in line:
            tail.append(line)
            if log is not None:
                log.append(line)
