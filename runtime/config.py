"""RunConfig: every knob of `edge-mla run` in one dataclass.

The CLI maps its flags onto this one object and the library (Runtime, the profiler,
the demo) takes the same object, so a programmatic run and a command-line run
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class Outage:
    """A span [start, end) in seconds from the start of a replayed media file during
    which the replay source behaves like an unplugged device (cannot open, no data)."""

    start: float
    end: float


@dataclass
class RunConfig:
    engines: Path
    camera: Optional[str] = "0"  # index, file, URL, or None for no camera
    mic: Optional[str] = "default"  # "default", index, name, a .wav file, or None
    precision: Optional[str] = None  # fp32 | int8 | None (the manifest's default)
    rate: float = 10.0  # decisions per second each modality's fresh results may trigger (event-driven fusion)
    staleness: float = 1.0  # seconds: older results are left out of fusion
    duration: Optional[float] = None  # seconds; None: until stopped
    loop: bool = False  # loop video/WAV files
    video_rate: Optional[float] = None  # video encoder runs per second; None: every new frame
    hop: float = 0.25  # seconds between audio encoder runs (sliding window hop)
    mic_rate: int = 48000  # capture rate asked of the device (the null sink needs 48 kHz)
    camera_timeout: float = 2.0  # seconds without a new frame before the camera is "lost"
    mic_timeout: float = 1.5  # seconds without an audio callback before the mic is "lost"
    open_timeout: float = 3.0  # seconds allowed to open a stream URL
    silence_threshold: float = 0.002  # audio windows with RMS below this (about -54 dBFS) are not classified (0: off)
    blank_threshold: float = 8.0  # frames with grey-level std below this are "blank" (0: off)
    backoff_initial: float = 0.5  # reconnect back-off: first delay ...
    backoff_max: float = 2.0  # ... doubling up to this
    out: Optional[Path] = None  # JSON lines file; None: stdout
    json_stdout: bool = True  # write JSON lines to stdout when ``out`` is None
    console: bool = False  # a readable line per decision (stderr when JSON goes to stdout)
    intra_op_threads: int = 1  # per ONNX Runtime session: two sessions share 2 cores
    backend: str = "auto"  # auto | onnxruntime | tensorrt (edge_mla.runtime.backends.BACKENDS)
    providers: Optional[str] = None  # ONNX Runtime providers, e.g. "cuda,cpu"; None: the best this build has
    batch_wait: float = 0.005  # seconds a shared engine waits for other stations' inputs to batch them
    camera_outages: list = field(default_factory=list)  # list[Outage], replay only
    mic_outages: list = field(default_factory=list)  # list[Outage], replay only

    def __post_init__(self) -> None:
        self.engines = Path(self.engines)
        if self.out is not None:
            self.out = Path(self.out)
        if isinstance(self.camera, str) and self.camera.lower() == "none":
            self.camera = None
        if isinstance(self.mic, str) and self.mic.lower() == "none":
            self.mic = None


def validate(cfg: RunConfig) -> None:
    """Reject nonsensical settings with one clear line (EdgeMlaError -> exit 2)."""
    from edge_mla.errors import EdgeMlaError

    if cfg.camera is None and cfg.mic is None:
        raise EdgeMlaError("--camera none and --mic none: nothing to run")
    for name in ("rate", "staleness", "hop", "camera_timeout", "mic_timeout"):
        if getattr(cfg, name) <= 0:
            raise EdgeMlaError(f"--{name.replace('_', '-')} must be positive (got {getattr(cfg, name)})")
    if cfg.duration is not None and cfg.duration <= 0:
        raise EdgeMlaError(f"--duration must be positive (got {cfg.duration})")
    if cfg.video_rate is not None and cfg.video_rate <= 0:
        raise EdgeMlaError(f"--video-rate must be positive (got {cfg.video_rate})")
    from edge_mla.runtime.backends import BACKENDS

    if not 0 <= cfg.batch_wait <= 1:
        raise EdgeMlaError(f"--batch-wait must be between 0 and 1 second (got {cfg.batch_wait})")
    if cfg.backend not in BACKENDS:
        raise EdgeMlaError(f"--backend must be one of {', '.join(BACKENDS)} (got {cfg.backend})")
    if cfg.precision not in (None, "fp32", "int8"):
        raise EdgeMlaError(f"--precision must be fp32 or int8 (got {cfg.precision})")
