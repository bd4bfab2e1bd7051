"""The sensor table (runtime/graph.py): a third kind of sensor is one source class,
one table row and an engine for its modality, with no edit to the runtime.

The proof registers a vibration sensor at test time (read from a WAV file, as a
current or vibration probe on a factory line would stream), builds a small
vibration engine with the ``onnx`` helper API (no torch) into an engine folder,
and runs the real Runtime on it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime import graph
from edge_mla.runtime.clock import now
from edge_mla.runtime.sources.base import ENDED, OK, STOPPED, Item, LatestSlot, SensorStatus
from test_runtime_support import Collect

VIB_RATE = 2000  # Hz of the vibration stream
VIB_WINDOW = 400  # samples per engine input (0.2 s)
VIB_CLASS = 7  # the vibration engine's bias makes it answer this class


# -- the one new source class --------------------------------------------------------
class VibrationSource:
    """A vibration sensor streamed from a WAV file in real time: every ``hop`` seconds
    the newest ``window`` samples go into a LatestSlot (the runtime's back-pressure
    primitive: a slow engine skips windows, it never queues them)."""

    def __init__(self, path: str, window: int, hop: float = 0.05, name: str = "vibration") -> None:
        import soundfile as sf

        pcm, self.rate = sf.read(path, dtype="float32", always_2d=True)
        self.pcm = np.ascontiguousarray(pcm[:, 0])
        self.window, self.hop, self.name = int(window), hop, name
        self.status = SensorStatus(name)
        self.slot = LatestSlot()
        self.windows = 0
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-reader", daemon=True)

    def start(self) -> None:
        self._t0 = now()
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(self.hop):
            end = min(int((now() - self._t0) * self.rate), self.pcm.size)
            if end >= self.pcm.size:
                self.status.set(ENDED, "end of file")
                return
            x = self.pcm[max(end - self.window, 0) : end]
            x = np.pad(x, (self.window - x.size, 0))
            seq += 1
            self.windows += 1
            t = now()
            self.status.last_data = t
            self.slot.put(Item(x, t, seq))
            self.status.set(OK)

    def take(self, seq: int, timeout: float) -> Optional[Item]:
        return self.slot.get_newer(seq, timeout)

    def supervise(self, t: float) -> None:
        """A file cannot be unplugged: nothing to watch."""

    @property
    def drops(self) -> int:
        return self.slot.drops

    def stats(self) -> dict:
        return {"windows": self.windows}

    def stop(self) -> None:
        self._stop.set()
        self.slot.wake()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        self.status.set(STOPPED)


# -- the one table row -----------------------------------------------------------------
VIBRATION = graph.SensorKind(
    name="vibration",
    modality="vibration",
    option="vibration",
    source=lambda cfg, device, spec: VibrationSource(device, spec.entry["vibration"]["window"]),
    preprocess=lambda source, spec, cfg: (lambda x: np.asarray(x, np.float32)),
    rate=lambda cfg: 10.0,
)


@pytest.fixture
def vibration_kind():
    graph.register(VIBRATION)
    yield VIBRATION
    graph.unregister(VIBRATION.name)


# -- the model with that modality --------------------------------------------------------
def _vibration_engine(path: Path, n_classes: int) -> None:
    """logits = x @ W + b, with a bias that favours VIB_CLASS (a distinguishable answer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    b = np.zeros(n_classes, np.float32)
    b[VIB_CLASS] = 6.0
    graph_ = helper.make_graph(
        [helper.make_node("MatMul", ["vibration", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["logits"])],
        "vibration_probe",
        [helper.make_tensor_value_info("vibration", TensorProto.FLOAT, ["batch", VIB_WINDOW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[numpy_helper.from_array((rng.standard_normal((VIB_WINDOW, n_classes)) * 0.01).astype(np.float32), "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph_, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-mla-tests")
    model.ir_version = 8
    onnx.save_model(model, str(path))


@pytest.fixture
def engines_with_vibration(tmp_path) -> Path:
    """The tiny image + audio engine folder plus a vibration engine in its manifest."""
    import json

    from edge_mla.manifest import sha256_of, write_manifest
    from edge_mla.runtime.testing.tiny_engines import build_tiny_engines

    root = build_tiny_engines(tmp_path / "engines")
    data = json.loads((root / "manifest.json").read_text())
    f = root / "vibration.fp32.onnx"
    _vibration_engine(f, len(data["classes"]))
    sha = sha256_of(f)
    data["engines"]["vibration"] = {
        "file": f.name, "precision": "fp32", "sha256": sha, "format": "onnx",
        "input": {"name": "vibration", "shape": ["batch", VIB_WINDOW], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", len(data["classes"])], "dtype": "float32"},
        "vibration": {"sample_rate": VIB_RATE, "window": VIB_WINDOW},
        "variants": {"fp32": {"file": f.name, "sha256": sha, "format": "onnx"}},
    }
    write_manifest(root, data)
    return root


def _wav(path: Path, seconds: float, rate: int, freq: float) -> str:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")
    return str(path)


# -- the proof ---------------------------------------------------------------------------
def test_a_registered_third_sensor_runs_through_the_whole_runtime(vibration_kind, engines_with_vibration, tmp_path):
    from edge_mla.runtime import RunConfig, Runtime

    cfg = RunConfig(engines=engines_with_vibration, camera=None, mic=_wav(tmp_path / "mic.wav", 6, 8000, 300), sensors={"vibration": _wav(tmp_path / "vib.wav", 6, VIB_RATE, 50)}, json_stdout=False)
    out = Collect()
    rt = Runtime(cfg, outputs=[out])
    assert list(rt.sources) == ["mic", "vibration"] and isinstance(rt.source_of("vibration"), VibrationSource)
    report = rt.run(2.5)

    recs = out.records
    assert recs and all(set(r["modalities"]) == {"audio", "vibration"} for r in recs)
    fused = [r for r in recs if r["decision"] and "vibration" in r["used"]]
    assert fused, "no decision used the vibration modality"
    assert any({"audio", "vibration"} <= set(r["used"]) for r in recs)  # fused with the mic, by the manifest's rule
    assert any(r["sensors"].get("vibration", {}).get("state") == "ok" for r in recs)
    assert all(r["modalities"]["vibration"].get("label", str(VIB_CLASS)) == str(VIB_CLASS) for r in recs)
    w = report.workers["vibration"]
    assert w["results"] >= 5 and w["windows"] >= w["results"] and w["errors"] == 0 and w["dropped"] >= 0
    assert report.sensors["vibration"]["state"] in ("ok", "ended")
    assert report.latency["vibration"]["n"] >= 1
    assert report.workers["audio"]["results"] >= 1 and "silent_windows" in report.workers["audio"]


def test_the_third_sensor_alone_decides_on_its_own_modality(vibration_kind, engines_with_vibration, tmp_path):
    from edge_mla.runtime import RunConfig, run_for

    out = Collect()
    cfg = RunConfig(engines=engines_with_vibration, camera=None, mic=None, sensors={"vibration": _wav(tmp_path / "vib.wav", 4, VIB_RATE, 50)}, json_stdout=False)
    report = run_for(cfg, 1.5, outputs=[out])
    decided = [r for r in out.records if r["decision"]]
    assert decided and all(r["used"] == ["vibration"] and r["label"] == str(VIB_CLASS) for r in decided)
    assert all(set(r["sensors"]) == {"vibration"} for r in out.records)
    assert list(report.workers) == ["vibration"] and list(report.sensors) == ["vibration"]


def test_the_table_checks_what_is_registered_and_configured(vibration_kind, engines_with_vibration, tmp_path):
    from edge_mla.runtime import RunConfig, Runtime
    from edge_mla.runtime.config import validate

    with pytest.raises(ValueError, match="modality 'audio' is already used by 'mic'"):
        graph.register(graph.SensorKind("geophone", "audio", "geophone", VIBRATION.source, VIBRATION.preprocess))
    with pytest.raises(EdgeMlaError, match="no registered sensor kind named 'vibraton'"):
        validate(RunConfig(engines=engines_with_vibration, camera=None, mic=None, sensors={"vibraton": "x.wav"}))
    # "none" turns a registered sensor off like --camera none
    with pytest.raises(EdgeMlaError, match="nothing to run"):
        validate(RunConfig(engines=engines_with_vibration, camera=None, mic=None, sensors={"vibration": "none"}))
    # an engine folder without that modality: one line saying how to run without it
    from edge_mla.runtime.testing.tiny_engines import build_tiny_engines

    plain = build_tiny_engines(tmp_path / "plain")
    with pytest.raises(EdgeMlaError, match="no vibration engine .*run with sensors.vibration = none"):
        Runtime(RunConfig(engines=plain, camera=None, mic=None, sensors={"vibration": "x.wav"}, json_stdout=False))
    assert graph.configured_modalities(RunConfig(engines=plain, camera="0", mic=None, sensors={"vibration": "x.wav"})) == ["image", "vibration"]


def test_a_stations_file_names_a_registered_sensor(vibration_kind, engines_with_vibration, tmp_path):
    from edge_mla.runtime.stations import read_stations

    f = tmp_path / "stations.toml"
    f.write_text(f'[runtime]\nengines = "{engines_with_vibration}"\n\n[[station]]\nname = "press1"\nsensors = {{vibration = "probe.wav"}}\n\n[[station]]\nname = "press2"\nmic = "default"\n')
    a, b = read_stations(f)
    assert graph.configured_modalities(a.cfg) == ["vibration"] and graph.configured_modalities(b.cfg) == ["audio"]


def test_built_in_rows_are_camera_and_mic():
    assert [(k.name, k.modality, k.option) for k in graph.SENSORS] == [("camera", "image", "camera"), ("mic", "audio", "mic")]
    assert graph.SENSOR_OF == {"image": "camera", "audio": "mic"} and graph.MODALITY_OF == {"camera": "image", "mic": "audio"}


def test_every_source_follows_the_one_protocol(tmp_path):
    from edge_mla.runtime.sources.camera import CameraSource
    from edge_mla.runtime.sources.microphone import MicSource

    wav = _wav(tmp_path / "a.wav", 1, 8000, 300)
    for src in (CameraSource("0"), MicSource(wav, 1.0), VibrationSource(wav, VIB_WINDOW)):
        assert isinstance(src, graph.Source), type(src).__name__
        assert src.take(0, 0.0) is None and isinstance(src.stats(), dict)
