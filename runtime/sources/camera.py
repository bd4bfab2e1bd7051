"""The camera: an OpenCV capture read by one grabber thread that keeps only the
newest frame, stamped on the runtime clock.

``spec`` is a device index ("0"), a video file, or a stream URL (rtsp://, http://).
Why each behaviour:
- Files are played in real time (paced by their FPS, frames skipped with ``grab()``
  when behind) so a recorded session exercises the runtime exactly like a live
  camera; ``loop`` restarts them, otherwise the camera ends.
- Streams get FFmpeg open/read timeouts so an unplugged IP camera fails a read
  instead of blocking forever; a failed read or the end of a live stream closes
  the capture and reopens it with exponential back-off.
- A frame byte-identical to the previous one (a stuck pipeline, "frozen frames")
  is not new data: its timestamp does not advance, so fusion ages it out and the
  watchdog reports the camera "frozen".
- A blank frame (grey-level standard deviation below ``blank_threshold``: a covered
  lens, a dead sensor, a black frame from a failing encoder) is not data either:
  the camera state becomes "blank" and the image result ages out of fusion. The
  replay benchmark shows why: the image engine called black frames a digit with
  near-certainty, so entropy weighting alone trusted it (fused accuracy 0.09 on
  that span without the check). 0 disables the check (a scene that is legitimately
  uniform).
- ``outages`` (replay only) make a file behave like an unplugged device for scripted
  spans of media time: reads fail and reopening fails until the span ends, which
  runs the same reconnect path as a real failure; the file then resumes at the
  current media time, as a live camera would.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now
from edge_mla.runtime.sources.base import ENDED, LOST, OK, STARTING, STOPPED, Backoff, Item, LatestSlot, SensorStatus, in_outage

log = logging.getLogger(__name__)

FROZEN = "frozen"
MAX_CAMERA_INDEX = 2**31 - 1  # OpenCV takes the index as a C int
BLANK = "blank"
MAX_BAD_FRAMES = 30  # files: consecutive frames that do not decode, skipped before the file counts as ended
FILE_FPS_RANGE = (0.01, 1000.0)  # a header frame rate outside this is wrong (1e9 skipped a whole file at once)
DEFAULT_FILE_FPS = 30.0


def file_fps(fps: float, spec: str) -> float:
    """The frame rate a video file is played at: its header's, unless that is missing
    (OpenCV gives 0) or not a frame rate, then DEFAULT_FILE_FPS with a warning."""
    if FILE_FPS_RANGE[0] <= fps <= FILE_FPS_RANGE[1]:
        return fps
    if fps:
        log.warning("camera: %s declares %g frames per second; played at %g", spec, fps, DEFAULT_FILE_FPS)
    return DEFAULT_FILE_FPS


def shown(spec: str) -> str:
    """``spec`` as logs and errors show it: a stream URL's password masked
    (``rtsp://admin:***@cam``); it was written to every reconnect log line."""
    if "://" not in spec or "@" not in spec:
        return spec
    from urllib.parse import urlsplit, urlunsplit

    try:
        u = urlsplit(spec)
        if u.password is None:
            return spec
        host = u.netloc.rsplit("@", 1)[1]
        return urlunsplit(u._replace(netloc=f"{u.username}:***@{host}"))
    except ValueError:
        return spec.split("://", 1)[0] + "://***"


def camera_kind(spec: str) -> str:
    """"index", "url" or "file" for a --camera value; a malformed one (a negative
    index, a URL without a host) is fatal at start, whatever --require-sensors says."""
    if spec.isascii() and spec.lstrip("-").isdigit():
        if spec.startswith("-") or int(spec) > MAX_CAMERA_INDEX:
            raise EdgeMlaError(f"--camera {spec}: a camera index must be 0 to {MAX_CAMERA_INDEX}")
        return "index"
    if spec.lower().startswith("file://"):
        raise EdgeMlaError(f"--camera {spec}: give a video file as a path, without file://")
    if "://" in spec:
        from urllib.parse import urlsplit

        try:
            u = urlsplit(spec)
            u.port
        except ValueError as exc:
            raise EdgeMlaError(f"--camera {shown(spec)}: malformed URL ({exc})") from None
        if not u.hostname:
            raise EdgeMlaError(f"--camera {shown(spec)}: malformed URL (no host)")
        return "url"
    return "file"


class CameraSource:
    """Grabber thread around ``cv2.VideoCapture``; read ``slot`` for the newest frame."""

    def __init__(
        self,
        spec: str,
        loop: bool = False,
        timeout: float = 2.0,
        open_timeout: float = 3.0,
        backoff: Optional[Backoff] = None,
        outages: Optional[list] = None,
        name: str = "camera",
        blank_threshold: float = 8.0,
        strict: bool = True,
    ) -> None:
        self.spec = str(spec)
        self.strict = strict  # --require-sensors: a device that cannot open at start is fatal
        self.kind = camera_kind(self.spec)
        self.loop = loop
        self.timeout = timeout
        self.open_timeout = open_timeout
        self.backoff = backoff or Backoff()
        self.outages = list(outages or [])
        self.name = name
        self.slot = LatestSlot()
        self.status = SensorStatus(name)
        self.frames = 0  # frames delivered
        self.repeats = 0  # byte-identical frames not delivered
        self.blanks = 0  # blank frames not delivered
        self.blank_threshold = float(blank_threshold)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._cap = None
        self._seq = 0
        self._fps = 0.0
        self._frame_index = 0  # files: index of the next frame to read
        self._media_t0 = 0.0  # runtime clock at media time 0 (files)
        self._last_sig: Optional[int] = None
        self._last_new = 0.0  # last frame with new content
        self._last_read = 0.0  # last successful read, new content or not
        self._opened = False  # opened once: a later open is a reconnect
        self._looped = False  # files: the next open restarts the loop
        self._frame_count = 0  # files: frames the header announces (0: unknown)
        self.bad_frames = 0  # files: frames skipped because they do not decode
        self._warned_short = False

    # -- opening ------------------------------------------------------------------
    def _media_time(self) -> float:
        return now() - self._media_t0

    def _open(self):
        import cv2

        if self.kind == "file" and in_outage(self.outages, self._media_time()):
            return None
        if self.kind == "index":
            cap = cv2.VideoCapture(int(self.spec))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # no driver queue: the newest frame, not a stale one
        elif self.kind == "url":
            ms = int(self.open_timeout * 1000)
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.timeout * 1000)])
        else:
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind == "file":
            if not self._fps:  # once: a reopen (--loop, an outage) reads the same header
                self._fps = file_fps(float(cap.get(cv2.CAP_PROP_FPS)), self.spec)
                self._frame_count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            pos = int(self._media_time() * self._fps)
            if pos > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, pos)
                self._frame_index = pos
            else:
                self._frame_index = 0
        return cap

    def start(self) -> None:
        """Open the camera and start the grabber thread. A file that does not open is
        a user error; a device or stream that does not open yet (a USB camera still
        enumerating, an IP camera booting) is reported lost and retried with
        back-off, unless ``strict`` (--require-sensors)."""
        if self.kind == "file" and not os.path.isfile(self.spec):
            raise EdgeMlaError(f"--camera {self.spec}: no such file (give an index like 0, a video file or a stream URL)")
        self._media_t0 = now()
        scripted = self.kind == "file" and in_outage(self.outages, 0.0)
        if self.kind == "file":
            # the file must open and give a frame, even when a scripted outage from t=0
            # (a replay) keeps it closed for now: a 0-frame video was accepted and then
            # "ended" at once (or, with --loop, reconnected for ever)
            import cv2

            probe = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)
            try:
                if not probe.isOpened():
                    raise EdgeMlaError(f"--camera {shown(self.spec)}: cannot open the camera ({self.kind}) with OpenCV")
                ok, frame = probe.read()
                if not ok or frame is None:
                    raise EdgeMlaError(f"--camera {self.spec}: the video holds no frame OpenCV can decode")
            finally:
                probe.release()
        self._opened = False
        if self.strict or self.kind == "file":
            cap = self._open()
            if cap is None and not scripted:
                raise EdgeMlaError(f"--camera {shown(self.spec)}: cannot open the camera ({self.kind}) with OpenCV")
            self._cap, self._opened = cap, True  # None only in a scripted outage, after the probe opened
        # else a device or stream opens in the grabber thread: a stream that stalls
        # for its whole open timeout held up the start of its station (and of every
        # station after it in a --config run) for those seconds
        self._last_new = self._last_read = now()
        if self._cap is None and self._opened:
            self._fail("device gone (scripted outage)")
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-grabber", daemon=True)
        self._thread.start()

    # -- grabbing -------------------------------------------------------------------
    def _close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            except Exception:  # pragma: no cover - release of a broken capture
                log.debug("%s: release failed", self.name, exc_info=True)
            self._cap = None

    def _fail(self, why: str) -> None:
        self.status.failures += 1
        wait = self.backoff.failed(now())
        self.status.set(LOST, f"{why}; reconnecting in {wait:.1f}s")  # before releasing: a release can block on a dead device
        self._close()

    def _pace(self) -> bool:
        """Files: wait until this frame's media time; skip (grab) frames when behind.
        Returns False when stopping."""
        target = self._frame_index / self._fps
        delay = target - self._media_time()
        if delay > 0:
            return not self._stop.wait(delay)
        behind = int(-delay * self._fps)
        for _ in range(min(behind, int(self._fps))):  # cheap skip, no decode
            if not self._cap.grab():
                break
            self._frame_index += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._cap is None:
                if not self.backoff.due(now()):
                    self._stop.wait(min(0.1, max(self.backoff.next_try - now(), 0.01)))
                    continue
                cap = self._open()
                if cap is None:
                    self._fail("cannot open" if self._opened else "cannot open at start; retrying (--require-sensors makes this fatal)")
                    continue
                self._cap = cap
                self._last_new = self._last_read = now()
                self._last_sig = None
                if self._opened and not self._looped:
                    self.status.reconnects += 1
                    log.info("%s: reopened %s", self.name, shown(self.spec))
                self._opened, self._looped = True, False
            if self.kind == "file":
                if not self._pace():
                    break
                if in_outage(self.outages, self._media_time()):
                    self._fail("device gone (scripted outage)")
                    continue
            ok, frame = self._cap.read()
            if (not ok or frame is None) and self.kind == "file":
                ok, frame = self._skip_bad_frames()
            t = now()
            if not ok or frame is None:
                if self.kind == "file":
                    if self._frame_index > 0 and self.loop:
                        self._media_t0 = t
                        self._close()
                        self.backoff.reset()
                        self._looped = True  # the reopen is the loop, not a reconnect (a 1-frame video counted 30 a second)
                        continue
                    if self._frame_index > 0:
                        self.status.set(ENDED, "end of file")
                        break
                self._fail("read failed" if self.kind != "url" else "read failed or timed out")
                continue
            if self.kind == "file":
                self._frame_index += 1
            self._deliver(frame, t)
        self._close()

    def _skip_bad_frames(self) -> tuple:
        """Files: after a failed read, read on over frames that do not decode (one
        corrupt frame ended the camera as if the file were over, and --loop replayed
        only what came before it). Returns the next good frame, or (False, None) at
        the real end, where a file shorter than its header says is named."""
        for skipped in range(1, MAX_BAD_FRAMES + 1):
            if self._frame_count and self._frame_index + skipped >= self._frame_count:
                break  # the end the header announces
            ok, frame = self._cap.read()
            if ok and frame is not None:
                self.bad_frames += skipped
                self._frame_index += skipped
                log.warning("%s: skipped %d frame(s) that do not decode at frame %d of %s", self.name, skipped, self._frame_index - skipped, self.spec)
                return ok, frame
        missing = self._frame_count - self._frame_index  # the header's count can be off by a frame or two (a duration x fps estimate)
        if self._frame_count and missing > max(2, self._frame_count // 50) and not self._warned_short:
            self._warned_short = True
            log.warning("%s: %s ends at frame %d of the %d its header announces (cut short or corrupt)", self.name, self.spec, self._frame_index, self._frame_count)
        return False, None

    def _deliver(self, frame: np.ndarray, t: float) -> None:
        self._last_read = t
        sig = zlib.crc32(np.ascontiguousarray(frame[::4, ::4]).data)
        if sig == self._last_sig:
            self.repeats += 1
            if t - self._last_new > self.timeout:
                self.status.set(FROZEN, f"identical frames for {t - self._last_new:.1f}s")
            return
        self._last_sig, self._last_new = sig, t
        if self.blank_threshold > 0 and float(frame[::8, ::8].std()) < self.blank_threshold:
            self.blanks += 1
            self.status.set(BLANK, "blank frames")
            return
        self._seq += 1
        self.frames += 1
        self.status.last_data = t
        self.backoff.reset()
        self.slot.put(Item(frame, t, self._seq))
        if self.status.state != OK:
            self.status.set(OK)

    # -- the Source protocol (runtime/graph.py) -------------------------------------------
    def take(self, seq: int, timeout: float) -> Optional[Item]:
        """The newest frame after ``seq`` (the image worker's input)."""
        return self.slot.get_newer(seq, timeout)

    @property
    def drops(self) -> int:
        """Frames replaced in the slot before the worker took them."""
        return self.slot.drops

    def stats(self) -> dict:
        return {"frames": self.frames, "repeats": self.repeats, "blanks": self.blanks}

    # -- supervision ------------------------------------------------------------------
    def supervise(self, t: float) -> None:
        """Called by the watchdog: a camera that delivers nothing for ``timeout``
        (a blocked read on a device without read timeouts) is reported lost; the
        grabber reconnects as soon as the read returns."""
        allowed = self.timeout + (1.0 / self._fps if self.kind == "file" and self._fps > 0 else 0.0)  # a 0.1 fps file is slow, not lost
        if self.status.state in (OK, STARTING, FROZEN, BLANK) and t - self._last_read > allowed:
            self.status.set(LOST, f"no frame for {t - self._last_read:.1f}s")

    def stop(self) -> None:
        self._stop.set()
        self.slot.wake()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: grabber thread did not stop within %.0fs (blocked read)", self.name, timeout)
        self.status.set(STOPPED)
