"""The camera path through a real network stream: a local HTTP MJPEG server
(127.0.0.1 only) read by OpenCV's FFmpeg backend, like an IP camera.

Mid-run the server is stopped and restarted (camera unplugged and back) and then
paused with its connection open (a hung camera): the runtime must keep deciding on
the microphone, mark the camera lost, and reconnect.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from test_runtime_support import Collect, digit_frame_fn, engines, one_label_media, sensor_state, using, wait_for  # noqa: F401

pytestmark = pytest.mark.sensors


def test_camera_over_http_mjpeg_survives_server_restart_and_hang(engines, tmp_path):
    from edge_mla.runtime import RunConfig, Runtime
    from edge_mla.runtime.testing.mjpeg import MjpegServer

    media = one_label_media(tmp_path / "media", label=7, seconds=24)
    srv = MjpegServer(digit_frame_fn(7), fps=15).start()
    out = Collect()
    cfg = RunConfig(engines=engines, camera=srv.url, mic=str(media.audio), loop=True, camera_timeout=1.0, open_timeout=1.0, staleness=1.0, backoff_max=1.0, json_stdout=False)
    rt = Runtime(cfg, outputs=[out])
    rt.start()
    try:
        wait_for(lambda: sensor_state(out, "camera") == "ok" and using(out, "image"), 8)
        time.sleep(1.5)
        seen = [r["modalities"]["image"]["label"] for r in out.since(len(out) - 10)]
        assert np.mean([s == "7" for s in seen]) >= 0.8, seen

        # 1) unplug: the server goes away
        srv.stop()
        n0 = len(out)
        wait_for(lambda: sensor_state(out, "camera") == "lost", 5)
        time.sleep(2.5)
        during = out.since(n0)
        assert len(during) >= 20  # the runtime keeps running
        tail = during[-10:]
        assert all(r["used"] == ["audio"] and r["sensors"]["camera"]["state"] == "lost" for r in tail)
        assert np.mean([r["label"] == "7" for r in tail]) >= 0.6  # on the mic alone
        srv.start()  # same port
        wait_for(lambda: sensor_state(out, "camera") == "ok" and using(out, "image"), 10)

        # 2) hang: connection open, no frames (FFmpeg read timeout -> lost -> reopen)
        srv.pause(True)
        wait_for(lambda: sensor_state(out, "camera") == "lost", 6)
        srv.pause(False)
        wait_for(lambda: sensor_state(out, "camera") == "ok" and using(out, "image"), 10)
    finally:
        report = rt.join()
        srv.stop()
    assert report.sensors["camera"]["reconnects"] >= 2
    assert report.workers["image"]["errors"] == 0


def test_a_stream_that_stalls_at_open_does_not_hold_up_the_start(tmp_path):
    """A stream camera that accepts the connection and never answers held up
    ``start()`` (and so its station, and every station after it in a --config run)
    for its whole open timeout. It now opens in the grabber thread: start returns,
    the camera reports lost, and it is retried; with --require-sensors it still
    must open before the start goes on."""
    import socket
    import threading

    from edge_mla.runtime.clock import now
    from edge_mla.runtime.sources.camera import CameraSource

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():  # accept, then say nothing
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/video"
    cam = CameraSource(url, timeout=1.0, open_timeout=20.0, strict=False)
    try:
        t0 = time.monotonic()
        cam.start()
        assert time.monotonic() - t0 < 10.0  # it waited the 20 s open timeout before
        wait_for(lambda: len(held) >= 1, 10)  # the grabber is the one connecting
        wait_for(lambda: cam.supervise(now()) or cam.status.state == "lost", 10)  # the watchdog's check: no frame within --camera-timeout
        assert cam.status.reconnects == 0
    finally:
        cam.stop()
        stop.set()
        for c in held:
            c.close()
        srv.close()
        cam.join(25)
