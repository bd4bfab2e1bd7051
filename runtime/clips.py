"""Event clips: the seconds around a sensor failure or an unsure model, on disk.

``--clips DIR`` keeps a rolling pre-roll of camera frames, audio and decision
records, and when a sensor changes state to or from lost/degraded/frozen/blank, or
the fused confidence stays below ``--clip-confidence`` for ``--clip-low-seconds``,
it keeps recording for the post-roll and writes one folder::

    DIR/clips/20261130-061502-123-camera-lost/
        video.avi        MJPG, the camera frames of pre-roll + post-roll
        frame.png        the frame at the trigger (the image of the pairs.csv row)
        audio.wav        the mic audio of the same span (the mic's capture rate)
        decisions.jsonl  the decision records of the span
        reason.json      why, when, the label at the trigger, the engine checksum
    DIR/pairs.csv        image,audio,label: one row per clip with a frame, audio and a label
    DIR/classes.txt      the model's classes (fixes the label order)

so relabelling the ``label`` column and running ``edge-mla train --dataset folder
--data-dir DIR`` feeds the clips straight back into training. A disk budget
(``--clips-max-mb``) deletes the oldest clips first; the index is rebuilt from the
folders that remain.

Why two threads and bounded queues: the fusion thread only puts the record into a
queue (a full queue counts a drop, it never waits); a collector thread follows the
sensors; a writer thread encodes and writes. A slow disk costs clips, never
decisions. Frames are kept as references to the arrays the camera already made
(no copy, no encoding until a clip is written), so the pre-roll costs memory
(about 5 s x fps x frame size, at most --clips-buffer-mb), not CPU.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now
from edge_mla.runtime.config import DEFAULT_STATION

log = logging.getLogger(__name__)

BAD_STATES = ("lost", "degraded", "frozen", "blank")
MIN_FREE_MB = 16.0
MAX_EXTRA_SECONDS = 30.0  # a clip extended by new triggers stops growing after this


def check_clips_dir(root: Path) -> None:
    """Writable, with some free space; EdgeMlaError naming --clips otherwise."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise EdgeMlaError(f"--clips {root}: not writable ({exc.strerror or exc})") from None
    free = shutil.disk_usage(root).free / 2**20
    if free < MIN_FREE_MB:
        raise EdgeMlaError(f"--clips {root}: disk full ({free:.0f} MB free, need at least {MIN_FREE_MB:.0f})")



def _bgr(frame: np.ndarray) -> np.ndarray:
    """The 8-bit, 3-channel frame MJPG takes: OpenCV's writer skips anything else
    without raising, and the clip would have been kept without its video."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2))
    return np.ascontiguousarray(frame[:, :, :3])


def _check_video(path: Path, frames: int) -> None:
    """Read the written video back: OpenCV's writer reports neither a skipped frame
    nor a failed write (a full disk), so a clip would keep an empty video.avi."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        got = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if got < frames:
        raise OSError(f"OpenCV wrote {got} of {frames} frames into {path.name}")

class ClipRecorder:
    """A clip is video + WAV: ``camera`` is the source feeding the image engine (its
    frames are watched in its slot, not taken), ``mic`` the one feeding audio
    (``Runtime.source_of``); either may be None."""

    def __init__(self, cfg, camera, mic, classes: list, checksum=lambda: "") -> None:
        self.root = Path(cfg.clips)
        check_clips_dir(self.root)
        station = getattr(cfg, "station", None)
        self._who = f" [{station}]" if station and station != DEFAULT_STATION else ""  # which station, in a --config run
        self.pre, self.post = cfg.clip_pre, cfg.clip_post
        self.conf_threshold, self.low_seconds = cfg.clip_confidence, cfg.clip_low_seconds
        self.budget = cfg.clips_max_mb * 2**20
        # Raw frames are kept by reference (no encoding), so the roll is bounded in bytes
        # too: 1080p at 30 fps is ~190 MB a second, and --clip-pre 60 took 11 GB.
        self.buffer = cfg.clips_buffer_mb * 2**20
        self._frame_bytes = 0
        self.trimmed = 0  # frames dropped from the roll to stay within --clips-buffer-mb
        self.camera, self.mic = camera, mic
        self.classes = list(classes)
        self.checksum = checksum
        self._events: queue.Queue = queue.Queue(maxsize=512)
        self._jobs: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._frames: collections.deque = collections.deque()  # (t, frame)
        self._audio: collections.deque = collections.deque()  # (t of newest sample, chunk)
        self._records: collections.deque = collections.deque()  # (t, record)
        self._states: dict = {}
        self._low_since: Optional[float] = None
        self._low_fired = False
        self._active: Optional[dict] = None
        self.written = self.dropped = self.deleted = self.errors = 0
        self._threads = [threading.Thread(target=self._collect, name="clips-collector", daemon=True), threading.Thread(target=self._write_loop, name="clips-writer", daemon=True)]

    # -- fusion-thread side -----------------------------------------------------
    def on_decision(self, rec: dict, timing: dict) -> None:
        try:
            self._events.put_nowait((timing["t_fuse"], rec))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        (self.root / "classes.txt").write_text("\n".join(self.classes) + "\n")
        for t in self._threads:
            t.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the clip being recorded (cut short) and write what is queued."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def snapshot(self) -> dict:
        return {"written": self.written, "dropped": self.dropped, "deleted": self.deleted, "trimmed": self.trimmed}

    # -- collector thread ----------------------------------------------------------
    def _collect(self) -> None:
        frame_seq, audio_seq = 0, 0
        if self.mic is not None:
            item = self.mic.latest(0)
            audio_seq = item.seq if item is not None else 0  # start from now, not from the ring's past
        while not self._stop.is_set():
            if self.camera is not None:
                item = self.camera.slot.wait_newer(frame_seq, 0.02)
                if item is not None:
                    frame_seq = item.seq
                    self._frames.append((item.t_capture, item.data))
                    self._frame_bytes += getattr(item.data, "nbytes", 0)
            else:
                self._stop.wait(0.02)
            if self.mic is not None:
                item = self.mic.latest(audio_seq)
                if item is not None:
                    chunk, _gap = item.data
                    audio_seq = item.seq
                    self._audio.append((item.t_capture, chunk))
            while True:
                try:
                    t, rec = self._events.get_nowait()
                except queue.Empty:
                    break
                self._records.append((t, rec))
                self._check(t, rec)
            t = now()
            if self._active is not None and t >= self._active["until"]:
                self._finish(t)
            keep_from = (self._active["t0"] if self._active else t) - self.pre
            for dq in (self._frames, self._audio, self._records):
                while dq and dq[0][0] < keep_from:
                    self._pop(dq)
            while self._frames and self._frame_bytes > self.buffer:
                self._pop(self._frames)
                self.trimmed += 1
                if self.trimmed == 1:
                    log.warning("clips: the camera frames of the roll exceed --clips-buffer-mb %.0f; clips keep fewer seconds of pre-roll", self.buffer / 2**20)
        if self._active is not None:
            self._finish(now())
        self._jobs.put(None)

    def _pop(self, dq: collections.deque) -> None:
        _t, item = dq.popleft()
        if dq is self._frames:
            self._frame_bytes -= getattr(item, "nbytes", 0)

    def _check(self, t: float, rec: dict) -> None:
        reasons = []
        for name, snap in rec.get("sensors", {}).items():
            old, new = self._states.get(name), snap.get("state")
            self._states[name] = new
            if old is not None and old != new and (old in BAD_STATES or new in BAD_STATES):
                reasons.append(f"{name}-{new if new in BAD_STATES else 'back'}")
        if self.conf_threshold > 0:
            low = not rec.get("decision") or (rec.get("confidence") or 0.0) < self.conf_threshold
            if low and rec.get("decision") is False and rec.get("reason") == "no result yet":
                low = False  # start-up, not an unsure model
            if not low:
                self._low_since, self._low_fired = None, False
            elif self._low_since is None:
                self._low_since = t
            elif not self._low_fired and t - self._low_since >= self.low_seconds:
                self._low_fired = True
                reasons.append("low-confidence")
        for reason in reasons:
            self._trigger(t, reason, rec)

    def _trigger(self, t: float, reason: str, rec: dict) -> None:
        if self._active is None:
            self._active = {"t0": t, "until": t + self.post, "reasons": [reason], "wall": time.time(), "record": rec}
            log.info("clip: %s; recording %.1fs of post-roll", reason, self.post)
        else:
            a = self._active
            a["reasons"].append(reason)
            a["until"] = min(t + self.post, a["t0"] + self.post + MAX_EXTRA_SECONDS)

    def _finish(self, t: float) -> None:
        a, self._active = self._active, None
        lo = a["t0"] - self.pre
        frames = [(ts, f) for ts, f in self._frames if lo <= ts <= t]
        audio = [c for ts, c in self._audio if lo <= ts <= t]
        records = [r for ts, r in self._records if lo <= ts <= t]
        trig = min(frames, key=lambda x: abs(x[0] - a["t0"]))[1] if frames else None
        job = {**a, "t_end": t, "frames": frames, "trigger_frame": trig, "audio": audio, "records": records, "checksum": self.checksum()}
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            log.warning("clip: writer busy, dropped the %s clip", a["reasons"][0])

    # -- writer thread -----------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            try:
                self._write(job)
            except Exception as exc:
                self.errors += 1
                self.dropped += 1
                log.error("clip%s: cannot write into %s (%s: %s); the runtime goes on", self._who, self.root, type(exc).__name__, exc)
                continue
            self.written += 1
            try:  # a clip on disk is written, even when the index after it fails (it was counted twice)
                self._enforce_budget()
            except Exception as exc:
                self.errors += 1
                log.error("clip%s: cannot update %s/pairs.csv (%s: %s); the runtime goes on", self._who, self.root, type(exc).__name__, exc)

    def _write(self, job: dict) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(job["wall"])) + f"-{int(job['wall'] * 1000) % 1000:03d}"
        name = f"{stamp}-{job['reasons'][0]}"
        clips = self.root / "clips"
        clips.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=clips))  # a fresh name: a fixed one collided
        try:
            self._write_into(tmp, job, clips, name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed clip left its temp folder for good
            raise

    def _write_into(self, tmp: Path, job: dict, clips: Path, name: str) -> None:
        import cv2

        frames = job["frames"]
        if frames:
            span = frames[-1][0] - frames[0][0]
            fps = (len(frames) - 1) / span if span > 0 and len(frames) > 1 else 10.0
            h, w = frames[0][1].shape[:2]
            video = tmp / "video.avi"
            vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
            if not vw.isOpened():
                raise OSError(f"OpenCV cannot open an MJPG writer for {w}x{h} frames")
            kept = 0
            for _, f in frames:
                if f.shape[:2] == (h, w):
                    vw.write(_bgr(f))
                    kept += 1
            vw.release()
            _check_video(video, kept)
            if not cv2.imwrite(str(tmp / "frame.png"), _bgr(job["trigger_frame"])):
                raise OSError("OpenCV cannot write frame.png")
        if job["audio"]:
            import soundfile as sf

            sf.write(str(tmp / "audio.wav"), np.concatenate(job["audio"]).astype(np.float32), int(self.mic.rate), subtype="PCM_16")
        with open(tmp / "decisions.jsonl", "w") as f:
            for r in job["records"]:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        rec = job["record"]
        labels = [r.get("label") for r in job["records"] if r.get("decision") and r.get("label") is not None]
        reason = {
            "reason": job["reasons"][0],
            "reasons": job["reasons"],
            "time": round(job["wall"], 3),
            "seconds": round(job["t_end"] - job["t0"] + self.pre, 3),
            "pre_roll": self.pre,
            "post_roll": self.post,
            "frames": len(frames),
            "audio_seconds": round(sum(len(c) for c in job["audio"]) / self.mic.rate, 3) if self.mic is not None else 0.0,
            "sensors": {k: v.get("state") for k, v in rec.get("sensors", {}).items()},
            "label": rec.get("label") if rec.get("decision") else (labels[-1] if labels else None),
            "confidence": rec.get("confidence"),
            "engines": job["checksum"],
        }
        (tmp / "reason.json").write_text(json.dumps(reason, indent=1) + "\n")
        final = clips / name
        n = 1
        while final.exists():
            n += 1
            final = clips / f"{name}-{n}"
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
        log.info("clip%s: wrote %s (%d frames, %.1fs audio)", self._who, final, len(frames), reason["audio_seconds"])

    def _enforce_budget(self) -> None:
        clips = sorted(p for p in (self.root / "clips").iterdir() if p.is_dir() and not p.name.startswith("."))
        sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in clips}
        total = sum(sizes.values())
        while len(clips) > 1 and total > self.budget:  # the clip just written always stays
            old = clips.pop(0)
            total -= sizes[old]
            shutil.rmtree(old, ignore_errors=True)
            self.deleted += 1
            log.info("clip: disk budget: deleted %s", old.name)
        self._write_index(clips)

    def _write_index(self, clips: list) -> None:
        """pairs.csv (image,audio,label) of every clip with a frame, audio and a label,
        and classes.txt beside it (again: a folder deleted mid-run came back without it)."""
        (self.root / "classes.txt").write_text("\n".join(self.classes) + "\n")
        tmp = self.root / f".pairs.csv.tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "audio", "label"])
            for p in clips:
                try:
                    label = json.loads((p / "reason.json").read_text()).get("label")
                except (OSError, ValueError):
                    continue
                if label is not None and (p / "frame.png").is_file() and (p / "audio.wav").is_file():
                    w.writerow([f"clips/{p.name}/frame.png", f"clips/{p.name}/audio.wav", label])
        os.replace(tmp, self.root / "pairs.csv")
