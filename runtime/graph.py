"""The sensor graph: the one table of the sensor kinds the runtime can serve.

Each row (a ``SensorKind``) says everything the runtime needs to know about one kind
of sensor: its name in records and reports, the modality (engine) it feeds, the
RunConfig option naming the device, how to build its source from the config, how to
turn the source's items into engine input, its cheap "no signal" gate and how often
its worker runs. ``Runtime`` builds sources, workers, watchdogs, gates and the
fusion inputs in a loop over the rows whose option is set; nothing else in the
runtime names a sensor kind. Why a table: the camera -> image and mic -> audio
branches used to be spelled out by hand in several modules, so a third kind of
sensor meant edits across the runtime.

How to add a sensor kind (say a vibration sensor read from a WAV-like stream):

1. write a source class that follows ``Source`` below (``take`` the newest item,
   ``stats``, ``stop``/``join``; keep its newest data in a ``LatestSlot``);
2. register one row::

       from edge_mla.runtime import graph
       graph.register(graph.SensorKind(
           name="vibration", modality="vibration", option="vibration",
           source=lambda cfg, device, spec: VibrationSource(device, ...),
           preprocess=lambda source, spec, cfg: to_window,   # item.data -> engine input
           gate=lambda cfg: None, rate=lambda cfg: 4.0))

3. export an engine folder whose manifest has a ``vibration`` engine, and run with
   ``RunConfig(..., sensors={"vibration": "sensor.wav"})`` (a kind whose option is
   not a RunConfig field is named in ``RunConfig.sensors``; a stations file takes
   ``sensors = {vibration = "sensor.wav"}``).

Records, reports, metrics and fusion follow: they are keyed by the sensor's name and
its modality. The camera and mic rows' builders live in ``runtime/sources/builtin.py``
(imported lazily, so this table loads without OpenCV or PortAudio).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from edge_mla.runtime.sources import builtin

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edge_mla.manifest import EngineSpec
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.sources.base import Item, SensorStatus


@runtime_checkable
class Source(Protocol):
    """What the runtime asks of every sensor source (camera, mic, ...)."""

    name: str  # the sensor's name in records ("camera")
    status: "SensorStatus"  # state and counters, reported in every record

    def start(self) -> None:
        """Open the device; a user error (a missing file) raises EdgeMlaError."""

    def take(self, seq: int, timeout: float) -> Optional["Item"]:
        """The newest item with ``item.seq > seq``, waiting up to ``timeout`` s (the worker's input)."""

    def supervise(self, t: float) -> None:
        """Watchdog hook: notice a silent failure, reconnect with back-off."""

    @property
    def drops(self) -> Optional[int]:
        """Items replaced before a worker took them; None: the worker's missed paced
        ticks count instead (a ring buffer loses nothing, its worker can fall behind)."""

    def stats(self) -> dict:
        """Counters merged into the run report's ``workers[modality]``."""

    def stop(self) -> None:
        """Ask the source to close (safe from a signal handler)."""

    def join(self, timeout: float = 5.0) -> None:
        """Wait for its threads; the state becomes "stopped"."""


Gate = Callable[[np.ndarray], bool]  # preprocessed input -> True when it carries signal


def no_gate(cfg: "RunConfig") -> Optional[Gate]:
    """Every input is classified."""
    return None


def every_item(cfg: "RunConfig") -> Optional[float]:
    """The worker runs on every new item (no pacing)."""
    return None


@dataclass(frozen=True)
class SensorKind:
    """One row of the sensor table (see the module docstring for how to add one)."""

    name: str  # the sensor's name in records and reports ("camera")
    modality: str  # the engine it feeds ("image")
    option: str  # the RunConfig field (or ``RunConfig.sensors`` key) naming the device ("camera")
    source: Callable[["RunConfig", str, "EngineSpec"], Source]  # (config, device, engine spec) -> source, not started
    preprocess: Callable[[Source, "EngineSpec", "RunConfig"], Callable[[Any], np.ndarray]]  # -> item.data -> engine input
    gate: Callable[["RunConfig"], Optional[Gate]] = no_gate  # the cheap worker-side "no signal" check (silence)
    rate: Callable[["RunConfig"], Optional[float]] = every_item  # worker runs per second; None: every new item
    gated_as: Optional[str] = None  # report counter of the inputs the gate held back ("silent_windows")
    doctor: Optional[Callable[[], Any]] = None  # `edge-mla doctor`'s check for this kind of device
    example: Optional[Callable[["EngineSpec"], np.ndarray]] = None  # a blank engine input exactly as ``preprocess`` shapes it (the start-up warm-up)

    @property
    def flag(self) -> str:
        """How a user turns this sensor off (in error messages)."""
        return f"--{self.option.replace('_', '-')} none" if _is_field(self.option) else f"sensors.{self.option} = none"


# The table. Camera: blank frames are gated in CameraSource itself (they set the
# sensor state "blank", --blank-threshold); mic: silent windows at the worker
# (--silence-threshold), the mic stays "ok".
CAMERA = SensorKind("camera", "image", "camera", builtin.camera_source, builtin.image_preprocess, rate=builtin.video_rate, doctor=builtin.camera_check, example=builtin.image_example)
MIC = SensorKind("mic", "audio", "mic", builtin.mic_source, builtin.audio_preprocess, gate=builtin.silence_gate, rate=builtin.audio_rate, gated_as="silent_windows", doctor=builtin.mic_check,
                 example=builtin.audio_example)

SENSORS: list = [CAMERA, MIC]  # in table order (records and reports list sensors in it); changed in place by register()
SENSOR_OF: dict = {}  # modality -> sensor name
MODALITY_OF: dict = {}  # sensor name -> modality


def _reindex() -> None:
    """Keep the lookup dicts in step with the table (in place: importers hold them)."""
    SENSOR_OF.clear()
    MODALITY_OF.clear()
    SENSOR_OF.update({k.modality: k.name for k in SENSORS})
    MODALITY_OF.update({k.name: k.modality for k in SENSORS})


_reindex()


def register(kind: SensorKind) -> SensorKind:
    """Add a sensor kind to the table; its name, modality and option must be new
    (one sensor feeds one modality, so fusion and reports stay unambiguous)."""
    for k in SENSORS:
        for attr in ("name", "modality", "option"):
            if getattr(k, attr) == getattr(kind, attr):
                raise ValueError(f"sensor kind {kind.name!r}: {attr} {getattr(kind, attr)!r} is already used by {k.name!r}")
    SENSORS.append(kind)
    _reindex()
    return kind


def unregister(name: str) -> None:
    """Remove a registered kind (tests, plugins that unload)."""
    SENSORS[:] = [k for k in SENSORS if k.name != name]
    _reindex()


def _is_field(option: str) -> bool:
    from edge_mla.runtime.config import RunConfig

    return option in {f.name for f in fields(RunConfig)}


def device(cfg: "RunConfig", kind: SensorKind) -> Optional[str]:
    """The device ``cfg`` names for ``kind``; None: not used."""
    if _is_field(kind.option):
        return getattr(cfg, kind.option)
    return (getattr(cfg, "sensors", None) or {}).get(kind.option)


def example_input(spec: "EngineSpec") -> Optional[np.ndarray]:
    """A blank input for ``spec``'s engine shaped as its sensor kind's preprocessing
    shapes it, or None when no kind declares one."""
    kind = next((k for k in SENSORS if k.modality == spec.modality), None)
    return kind.example(spec) if kind is not None and kind.example is not None else None


def configured(cfg: "RunConfig") -> list:
    """[(kind, device), ...] for the rows whose option ``cfg`` sets, in table order."""
    return [(k, d) for k in SENSORS for d in (device(cfg, k),) if d is not None]


def configured_modalities(cfg: "RunConfig") -> list:
    """The modalities a RunConfig asks for: those whose sensor option is not 'none'."""
    return [k.modality for k, _ in configured(cfg)]


def extra_options() -> set:
    """Options of registered kinds that are not RunConfig fields (``RunConfig.sensors`` keys)."""
    return {k.option for k in SENSORS if not _is_field(k.option)}


def options_text() -> str:
    """"camera and/or mic": the options that name sensors, for error messages."""
    names = [k.option for k in SENSORS]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and/or {names[-1]}"


@dataclass
class SensorNode:
    """One configured row at run time: its kind, its source and its preprocessing."""

    kind: SensorKind
    source: Source
    preprocess: Callable[[Any], np.ndarray]
