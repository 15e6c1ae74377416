"""MJPEG-over-HTTP camera simulator for the tests: time-coded JPEGs as ``multipart/x-mixed-replace``.

Every client of ``http://127.0.0.1:PORT/<any path>`` gets its own stream of
``fps`` JPEG frames a second, each showing the wall time at which it was
drawn (``tests.support.timecode`` draws and encodes them, no ffmpeg needed),
in the form ffmpeg's ``mpjpeg`` demuxer and browsers read::

    --frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: N\\r\\n\\r\\n<JPEG>\\r\\n

In the test process (threads)::

    with MjpegSimulator(fps=10).start() as cam:
        url = cam.url()
        cam.pause(2)   # no frames for 2 s, connections kept open
        cam.drop()     # reset the current connections

Or as a process, for tests that want it out of their own interpreter::

    python -m tests.support.mjpeg_sim --port 0 --fps 10

which prints ``ready PORT`` once it listens and stops on ``quit``, on a
closed stdin and on SIGTERM; ``pause SECONDS`` and ``drop`` work there too
(answered ``ok ...`` or ``err ...``).
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from tests.support.timecode import jpeg_frame

BOUNDARY = "frame"
DEFAULT_SIZE = (320, 240)


class MjpegSimulator:
    """A threaded HTTP server streaming time-coded MJPEG to every client."""

    def __init__(self, *, fps: float = 10, size: tuple[int, int] = DEFAULT_SIZE) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        jpeg_frame(0, *size)  # fail now on a size JPEG time codes cannot have
        self.fps = fps
        self.size = size
        self.port: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._hold_until = 0.0
        self._stopping = threading.Event()

    def start(self, port: int = 0) -> MjpegSimulator:
        """Listen on 127.0.0.1:``port`` (0: a free one, then in ``self.port``) and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("MJPEG simulator already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-sim", daemon=True)
        self._thread.start()
        return self

    def url(self, path: str = "video") -> str:
        """URL of the stream (every path serves it)."""
        if self.port is None:
            raise RuntimeError("MJPEG simulator not started")
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def pause(self, seconds: float) -> None:
        """Send no frames for ``seconds``; connections stay open, new ones are accepted."""
        self._hold_until = time.monotonic() + seconds

    def drop(self) -> int:
        """Reset the current clients' connections; returns how many there were."""
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            _reset(sock)
        return len(clients)

    def stop(self) -> None:
        """Stop serving and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        self.drop()
        server.server_close()
        self._thread.join(timeout=5)
        self.port = None

    def __enter__(self) -> MjpegSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Send frames to one client until it leaves or the simulator stops."""
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sock = handler.connection
        with self._lock:
            self._clients.add(sock)
        period = 1 / self.fps
        due = time.monotonic()
        try:
            while not self._stopping.wait(max(0.0, due - time.monotonic())):
                due += period
                late = time.monotonic() - due
                if late > 0:
                    due += math.ceil(late / period) * period  # skip frames rather than burst
                if time.monotonic() < self._hold_until:
                    continue
                jpeg = jpeg_frame(time.time_ns() // 1_000_000, *self.size)
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                handler.wfile.write(head + jpeg + b"\r\n")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client left, or drop() reset it
        finally:
            with self._lock:
                self._clients.discard(sock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Tests restart simulators quickly; the port is usually ephemeral anyway.
    allow_reuse_address = True


def _handler_for(sim: MjpegSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sim._stream(self)

        def log_message(self, format: str, *args) -> None:
            pass  # keep the tests' output quiet

    return Handler


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset, as a camera losing power or network does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port, 0 for a free one")
    parser.add_argument("--fps", type=float, default=10, help="frames a second")
    parser.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), help="WIDTHxHEIGHT, multiples of 16")
    args = parser.parse_args()
    try:
        width, height = (int(n) for n in args.size.lower().split("x"))
        sim = MjpegSimulator(fps=args.fps, size=(width, height))
    except ValueError as exc:
        parser.error(f"--size/--fps: {exc}")
    # SystemExit from the handler interrupts the blocking read of stdin; finally stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sim.start(args.port)
    print(f"ready {sim.port}", flush=True)
    try:
        for line in sys.stdin:
            match line.split():
                case ["quit"]:
                    print("ok quit", flush=True)
                    break
                case ["pause", seconds]:
                    try:
                        sim.pause(float(seconds))
                        print(f"ok pause {float(seconds):.3f}", flush=True)
                    except ValueError:
                        print(f"err bad seconds: {seconds}", flush=True)
                case ["drop"]:
                    print(f"ok drop closed={sim.drop()}", flush=True)
                case []:
                    pass
                case words:
                    print(f"err unknown command: {' '.join(words)}", flush=True)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
