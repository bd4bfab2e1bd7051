"""RunConfig: every knob of `edge-mla run` in one dataclass.

The CLI maps its flags onto this one object and the library (Runtime, the profiler,
the demo) takes the same object, so a programmatic run and a command-line run
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from edge_mla.preprocess import AUDIO_RATES

DEFAULT_STATION = "default"  # the one station a run without --config describes


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
    video_rate: Optional[float] = None  # video encoder runs per second on a clock; None: frames as they arrive, at most `rate` per second
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
    # -- execution backends and stations (issue 9): flags derived like the factory ones below
    backend: str = field(default="auto", metadata={"help": "how engines run: auto (TensorRT when a plan, TensorRT and a GPU are there, else ONNX Runtime with the best providers it has), onnxruntime, tensorrt (default auto)", "choices": ["auto", "onnxruntime", "tensorrt"]})
    providers: Optional[str] = field(default=None, metadata={"help": "ONNX Runtime execution providers in order, e.g. cuda,cpu (cpu, cuda, tensorrt, openvino; default: every one this onnxruntime build has)", "metavar": "LIST"})
    batch_wait: float = field(default=0.005, metadata={"help": "stations sharing an engine (--config): seconds the first input waits for the others to run them as one batch (default 0.005)", "metavar": "S"})
    camera_outages: list = field(default_factory=list)  # list[Outage], replay only
    mic_outages: list = field(default_factory=list)  # list[Outage], replay only
    sensors: dict = field(default_factory=dict)  # option -> device of sensor kinds registered beyond camera and mic (runtime/graph.py); "none": not used
    # -- on the factory floor (issue 10): each field with a "help" is an `edge-mla run`
    # flag (runtime/flags.py derives them), so a config file can map onto the same names.
    station: str = DEFAULT_STATION  # station name in records, MQTT status topic and client id, seq counters, metrics labels
    require_sensors: bool = field(default=False, metadata={"help": "a sensor that cannot be opened at start is fatal (exit 2) instead of reported lost and retried with back-off"})
    mqtt: Optional[str] = field(default=None, metadata={"help": "publish decisions to mqtt://HOST:PORT/TOPIC (or mqtts://); spooled on disk while the broker is away", "metavar": "URL"})
    mqtt_username: Optional[str] = field(default=None, metadata={"help": "MQTT user name", "metavar": "NAME"})
    mqtt_password_file: Optional[Path] = field(default=None, metadata={"help": "file holding the MQTT password (first line)", "metavar": "FILE"})
    mqtt_ca: Optional[Path] = field(default=None, metadata={"help": "CA certificate (PEM) for mqtts:// (default: the system's)", "metavar": "FILE"})
    mqtt_client_id: Optional[str] = field(default=None, metadata={"help": "MQTT client id (default edge-mla-HOSTNAME-STATION)", "metavar": "ID"})
    mqtt_qos: int = field(default=1, metadata={"help": "MQTT QoS of decision messages (0, 1 or 2; default 1)", "choices": [0, 1, 2]})
    mqtt_required: bool = field(default=False, metadata={"help": "exit 2 at start when the broker cannot be reached (default: run and spool)"})
    mqtt_spool: Optional[Path] = field(default=None, metadata={"help": "spool file for unsent decisions (default ~/.local/state/edge-mla/spool-STATION.db)", "metavar": "FILE"})
    mqtt_spool_max: int = field(default=100000, metadata={"help": "most decisions kept in the spool; the oldest are dropped (counted) beyond it (default 100000)", "metavar": "N"})
    metrics: Optional[str] = field(default=None, metadata={"help": "serve Prometheus /metrics and /healthz on HOST:PORT", "metavar": "HOST:PORT"})
    health_window: float = field(default=5.0, metadata={"help": "/healthz is 200 while every station decided within this many seconds (default 5)", "metavar": "S"})
    clips: Optional[Path] = field(default=None, metadata={"help": "write event clips (video + WAV + decisions) into DIR on sensor state changes and low confidence", "metavar": "DIR"})
    clip_pre: float = field(default=5.0, metadata={"help": "seconds of pre-roll in a clip (default 5)", "metavar": "S"})
    clip_post: float = field(default=2.0, metadata={"help": "seconds of post-roll in a clip (default 2)", "metavar": "S"})
    clip_confidence: float = field(default=0.5, metadata={"help": "fused confidence below this for --clip-low-seconds triggers a clip (default 0.5; 0: off)", "metavar": "P"})
    clip_low_seconds: float = field(default=2.0, metadata={"help": "how long confidence must stay low before a clip (default 2)", "metavar": "S"})
    clips_max_mb: float = field(default=1024.0, metadata={"help": "disk budget of --clips; the oldest clips are deleted beyond it (default 1024)", "metavar": "MB"})
    clips_buffer_mb: float = field(default=512.0, metadata={"help": "memory for the camera frames of --clips' pre- and post-roll; the oldest frames go beyond it (default 512)", "metavar": "MB"})
    watch: bool = field(default=False, metadata={"help": "swap engines when the engine folder's manifest.json changes (SIGHUP always does)"})
    watch_period: float = 1.0  # seconds between manifest.json checks under --watch

    def __post_init__(self) -> None:
        from edge_mla.validate import not_empty_path

        for name in ("engines", "out", "mqtt_password_file", "mqtt_ca", "mqtt_spool", "clips", "camera", "mic"):
            not_empty_path(getattr(self, name), name)  # --mic "": "Multiple input devices found for ''"
        self.engines = Path(self.engines)
        if self.out is not None:
            self.out = Path(self.out)
        for name in ("mqtt_password_file", "mqtt_ca", "mqtt_spool", "clips"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if isinstance(self.camera, str) and self.camera.lower() == "none":
            self.camera = None
        if isinstance(self.mic, str) and self.mic.lower() == "none":
            self.mic = None
        self.sensors = {k: v for k, v in dict(self.sensors or {}).items() if v is not None and not (isinstance(v, str) and v.lower() == "none")}


# Every numeric knob and its valid range (edge_mla.validate.number's keywords).
# The flag a user typed is derived from the field name, except where the CLI's differs.
# Upper bounds on times and lower bounds on rates: a wait longer than
# threading.TIMEOUT_MAX (about 292 years) raised OverflowError in a worker, fusion or
# swap thread, which died while the run went on; OpenCV takes its timeouts as int32 ms.
HOUR, DAY = 3600.0, 86400.0
NUMERIC = {
    "rate": dict(lo=1e-3, hi=1000),
    "staleness": dict(lo=0, lo_open=True, hi=DAY),
    "duration": dict(lo=0, lo_open=True, hi=1e9, optional=True),
    "video_rate": dict(lo=1e-3, hi=1000, optional=True),
    "hop": dict(lo=0, lo_open=True, hi=60),
    "mic_rate": dict(lo=AUDIO_RATES[0], hi=AUDIO_RATES[1], integer=True),
    "camera_timeout": dict(lo=0, lo_open=True, hi=HOUR),
    "mic_timeout": dict(lo=0, lo_open=True, hi=HOUR),
    "open_timeout": dict(lo=0, lo_open=True, hi=HOUR),
    "silence_threshold": dict(lo=0, hi=1),  # RMS, full scale 1.0
    "blank_threshold": dict(lo=0, hi=255),  # grey-level standard deviation
    "backoff_initial": dict(lo=0, lo_open=True, hi=HOUR),
    "backoff_max": dict(lo=0, lo_open=True, hi=HOUR),
    "intra_op_threads": dict(lo=1, hi=256, integer=True),
    "degraded_hold": dict(lo=0, lo_open=True, hi=DAY),
    "health_window": dict(lo=0, lo_open=True, hi=DAY),
    "clip_pre": dict(lo=0, lo_open=True, hi=600),
    "clip_post": dict(lo=0, lo_open=True, hi=600),
    "clip_confidence": dict(lo=0, hi=1),
    "clip_low_seconds": dict(lo=0, lo_open=True, hi=DAY),
    "clips_max_mb": dict(lo=0, lo_open=True),
    "clips_buffer_mb": dict(lo=1, hi=1 << 20),
    "mqtt_spool_max": dict(lo=1, integer=True),
    "watch_period": dict(lo=0, lo_open=True, hi=DAY),
    "batch_wait": dict(lo=0, hi=1),
}
FLAG_OF = {"intra_op_threads": "--threads"}
OUT_MODES = ("new", "append", "overwrite")


def validate(cfg: RunConfig) -> None:
    """Reject nonsensical settings with one clear line (EdgeMlaError -> exit 2),
    before anything is opened: numbers finite and in range, the output writable."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.validate import number

    from edge_mla.runtime import graph

    unknown = sorted(set(cfg.sensors) - graph.extra_options())
    if unknown:
        raise EdgeMlaError(f"sensors: no registered sensor kind named {unknown[0]!r} (sensors takes: {', '.join(sorted(graph.extra_options())) or 'nothing until a sensor kind is registered'})")
    if not graph.configured(cfg):
        raise EdgeMlaError(" and ".join(k.flag for k in graph.SENSORS) + ": nothing to run")
    for f in fields(cfg):  # a NUL cannot be in a path, a host or a device name: open() and bind() raised a traceback
        values = getattr(cfg, f.name).items() if isinstance(getattr(cfg, f.name), dict) else [(f.name, getattr(cfg, f.name))]
        for key, v in values:
            if isinstance(v, (str, Path)) and "\x00" in str(v):
                raise EdgeMlaError(f"{FLAG_OF.get(key, key)}: holds a NUL character ({str(v).replace(chr(0), '<NUL>')!r})")
    for name, kw in NUMERIC.items():
        setattr(cfg, name, number(getattr(cfg, name), FLAG_OF.get(name, name), **kw))
    if cfg.backoff_max < cfg.backoff_initial:
        raise EdgeMlaError(f"backoff_max ({cfg.backoff_max:g}) must be >= backoff_initial ({cfg.backoff_initial:g})")
    from edge_mla.runtime.backends import BACKENDS

    if cfg.backend not in BACKENDS:
        raise EdgeMlaError(f"--backend must be one of {', '.join(BACKENDS)} (got {cfg.backend})")
    if cfg.mqtt_qos not in (0, 1, 2):
        raise EdgeMlaError(f"--mqtt-qos must be 0, 1 or 2 (got {cfg.mqtt_qos})")
    if cfg.precision not in (None, "fp32", "int8"):
        raise EdgeMlaError(f"--precision must be fp32 or int8 (got {cfg.precision})")
    if cfg.out_mode not in OUT_MODES:
        raise EdgeMlaError(f"out_mode must be one of {', '.join(OUT_MODES)} (got {cfg.out_mode!r})")
    if cfg.out is not None:
        from edge_mla.runtime.outputs import check_output_path

        check_output_path(cfg.out, cfg.out_mode)


def flag_fields() -> list:
    """The RunConfig fields that are `edge-mla run` flags derived from the dataclass
    (those with a "help" in their metadata)."""
    return [f for f in fields(RunConfig) if "help" in f.metadata]
