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
    rate: float = 10.0  # fusion decisions per second
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
    out_mode: str = "new"  # an existing ``out``: new (refuse), append, or overwrite (--force)
    json_stdout: bool = True  # write JSON lines to stdout when ``out`` is None
    console: bool = False  # a readable line per decision (stderr when JSON goes to stdout)
    intra_op_threads: int = 1  # per ONNX Runtime session: two sessions share 2 cores
    degraded_hold: float = 1.0  # seconds a live sensor must keep being judged unreliable (and then reliable) before it is reported degraded (ok)
    require_reliability: bool = False  # refuse engine folders without the reliability output
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


# Every numeric knob and its valid range (edge_mla.validate.number's keywords).
# The flag a user typed is derived from the field name, except where the CLI's differs.
NUMERIC = {
    "rate": dict(lo=0, lo_open=True, hi=1000),
    "staleness": dict(lo=0, lo_open=True),
    "duration": dict(lo=0, lo_open=True, optional=True),
    "video_rate": dict(lo=0, lo_open=True, hi=1000, optional=True),
    "hop": dict(lo=0, lo_open=True, hi=60),
    "mic_rate": dict(lo=1000, hi=384000, integer=True),
    "camera_timeout": dict(lo=0, lo_open=True),
    "mic_timeout": dict(lo=0, lo_open=True),
    "open_timeout": dict(lo=0, lo_open=True),
    "silence_threshold": dict(lo=0, hi=1),  # RMS, full scale 1.0
    "blank_threshold": dict(lo=0, hi=255),  # grey-level standard deviation
    "backoff_initial": dict(lo=0, lo_open=True),
    "backoff_max": dict(lo=0, lo_open=True),
    "intra_op_threads": dict(lo=1, hi=256, integer=True),
    "degraded_hold": dict(lo=0, lo_open=True),
}
FLAG_OF = {"intra_op_threads": "--threads"}
OUT_MODES = ("new", "append", "overwrite")


def validate(cfg: RunConfig) -> None:
    """Reject nonsensical settings with one clear line (EdgeMlaError -> exit 2),
    before anything is opened: numbers finite and in range, the output writable."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.validate import number

    if cfg.camera is None and cfg.mic is None:
        raise EdgeMlaError("--camera none and --mic none: nothing to run")
    for name, kw in NUMERIC.items():
        setattr(cfg, name, number(getattr(cfg, name), FLAG_OF.get(name, name), **kw))
    if cfg.backoff_max < cfg.backoff_initial:
        raise EdgeMlaError(f"backoff_max ({cfg.backoff_max:g}) must be >= backoff_initial ({cfg.backoff_initial:g})")
    if cfg.precision not in (None, "fp32", "int8"):
        raise EdgeMlaError(f"--precision must be fp32 or int8 (got {cfg.precision})")
    if cfg.out_mode not in OUT_MODES:
        raise EdgeMlaError(f"out_mode must be one of {', '.join(OUT_MODES)} (got {cfg.out_mode!r})")
    if cfg.out is not None:
        from edge_mla.runtime.outputs import check_output_path

        check_output_path(cfg.out, cfg.out_mode)
