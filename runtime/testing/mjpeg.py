"""A local MJPEG-over-HTTP server standing in for an IP camera (127.0.0.1 only).

    srv = MjpegServer(frame_fn).start()      # frame_fn(t) -> BGR frame
    url = srv.url                            # http://127.0.0.1:PORT/video
    srv.stop(); srv.start()                  # unplug / replug (same port)
    srv.pause(True)                          # connection stays open, no frames

Frames are multipart/x-mixed-replace JPEGs at ``fps``, generated per client from
the server's clock, so every client sees "live" video. OpenCV's FFmpeg backend
opens the URL like any HTTP camera.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

BOUNDARY = b"edgemlaframe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        import cv2

        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        period = 1.0 / owner.fps
        nxt = time.monotonic()
        try:
            while not self.server.closing.is_set():
                if owner.paused.is_set():
                    self.server.closing.wait(0.05)
                    continue
                ok, buf = cv2.imencode(".jpg", owner.frame_fn(time.monotonic() - owner.t0), [cv2.IMWRITE_JPEG_QUALITY, 90])
                data = buf.tobytes()
                self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                self.wfile.flush()
                owner.frames_sent += 1
                nxt += period
                self.server.closing.wait(max(nxt - time.monotonic(), 0))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MjpegServer:
    def __init__(self, frame_fn: Callable[[float], np.ndarray], fps: float = 30.0, port: Optional[int] = None) -> None:
        self.frame_fn = frame_fn
        self.fps = fps
        self.port = port or free_port()
        self.paused = threading.Event()
        self.frames_sent = 0
        self.t0 = time.monotonic()
        self._srv: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video"

    def start(self) -> "MjpegServer":
        srv = _Server(("127.0.0.1", self.port), _Handler)
        srv.owner = self
        srv.closing = threading.Event()
        self._srv = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name=f"mjpeg-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open stream (camera unplugged)."""
        srv, self._srv = self._srv, None
        if srv is None:
            return
        srv.closing.set()
        srv.shutdown()
        srv.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def pause(self, on: bool) -> None:
        """Keep connections open but send nothing (a hung camera)."""
        (self.paused.set if on else self.paused.clear)()

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
