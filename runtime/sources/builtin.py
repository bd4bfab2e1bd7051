"""The builders behind the sensor table's two built-in rows (runtime/graph.py):
camera -> image and mic -> audio.

Each builder reads its knobs from the RunConfig, so Runtime never names a sensor
kind. OpenCV and PortAudio are imported only when a row is used: a device with
only a microphone never loads cv2, and the table itself loads without either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.sources.base import Backoff

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edge_mla.manifest import EngineSpec
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.sources.camera import CameraSource
    from edge_mla.runtime.sources.microphone import MicSource


# -- camera -> image -----------------------------------------------------------------
def camera_source(cfg: "RunConfig", device: str, spec: "EngineSpec") -> "CameraSource":
    """The camera, with its blank-frame gate (--blank-threshold) inside: a blank frame
    changes the sensor's state, so the source, not the worker, must see it."""
    from edge_mla.runtime.sources.camera import CameraSource

    return CameraSource(device, loop=cfg.loop, timeout=cfg.camera_timeout, open_timeout=cfg.open_timeout, backoff=Backoff(cfg.backoff_initial, cfg.backoff_max), outages=cfg.camera_outages, blank_threshold=cfg.blank_threshold, strict=cfg.require_sensors)


def image_preprocess(source, spec: "EngineSpec", cfg: "RunConfig") -> Callable[[np.ndarray], np.ndarray]:
    """Frame -> (1, S, S) float32 through the shared preprocessing code."""
    from edge_mla.runtime.workers import image_preprocessor

    return image_preprocessor(spec.image_size or 28)


def image_example(spec: "EngineSpec") -> np.ndarray:
    """A black frame through the same preprocessing: what the camera worker feeds."""
    size = spec.image_size or 28
    return image_preprocess(None, spec, None)(np.zeros((size, size), np.uint8))


def video_rate(cfg: "RunConfig") -> Optional[float]:
    """--video-rate, or None: frames as they arrive (the worker limits them to --rate)."""
    return cfg.video_rate


def camera_check():
    from edge_mla.runtime.doctor import check_cameras

    return check_cameras()


# -- mic -> audio ---------------------------------------------------------------------
def mic_source(cfg: "RunConfig", device: str, spec: "EngineSpec") -> "MicSource":
    """The microphone's ring buffer holds one engine window (plus slack), so the
    engine entry must say its rate and window."""
    from edge_mla.runtime.sources.microphone import MicSource

    if not spec.sample_rate or not spec.window:
        raise EdgeMlaError(f"{spec.path.parent}: the audio engine entry has no sample_rate/window")
    return MicSource(device, spec.window / spec.sample_rate, capture_rate=cfg.mic_rate, timeout=cfg.mic_timeout, backoff=Backoff(cfg.backoff_initial, cfg.backoff_max), loop=cfg.loop, outages=cfg.mic_outages, strict=cfg.require_sensors)


def audio_preprocess(source: "MicSource", spec: "EngineSpec", cfg: "RunConfig"):
    """Device-rate chunks -> the newest engine window (streamed resampling)."""
    from edge_mla.runtime.audio_stream import AudioWindow

    return AudioWindow(source.rate, spec.sample_rate, spec.window)


def audio_example(spec: "EngineSpec") -> np.ndarray:
    """One silent engine window: what the microphone worker feeds."""
    if not spec.window:
        raise EdgeMlaError(f"{spec.path.parent}: the audio engine entry has no sample_rate/window")
    return np.zeros(int(spec.window), np.float32)


def silence_gate(cfg: "RunConfig") -> Optional[Callable[[np.ndarray], bool]]:
    """A window whose RMS is below --silence-threshold (a muted mic) is not
    classified, so the last result ages out of fusion instead of voting garbage."""
    thr = cfg.silence_threshold
    return (lambda x: float(np.sqrt(np.mean(np.square(x)))) >= thr) if thr > 0 else None


def audio_rate(cfg: "RunConfig") -> float:
    """One audio engine run per --hop seconds on the sliding window."""
    return 1.0 / cfg.hop


def mic_check():
    from edge_mla.runtime.doctor import check_mics

    return check_mics()
