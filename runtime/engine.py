"""One engine per modality, opened through a backend Runner and checked against the
manifest.

Each engine gets its own small thread pool (``intra_op_threads``, default 1) so the
image and audio workers, running at the same time on a 2-core device, do not
oversubscribe the cores. The input/output names and ranks recorded in the
manifest are checked against the engine at load: a manifest that does not match
its engines fails at start with one clear line instead of on the first frame.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import EngineSpec
from edge_mla.runtime.backends import BackendChoice, OrtRunner, Runner, choose_backend, open_runner

log = logging.getLogger(__name__)


def cpu_session(path, threads: int = 1) -> OrtRunner:
    """The one way edge-mla opens an ONNX engine on the CPU (export checks, profiler)."""
    return OrtRunner(path, threads)


def _check_stamped_facts(path, metadata: dict, spec: EngineSpec, num_classes: int) -> None:
    """The facts the export stamps into each engine (``edge_mla.*`` metadata) against
    the manifest's: the modality, the class list, the image size and the audio rate
    and window. Why: the static checks compare names and shapes only, so a manifest
    with its classes reordered (every label wrong) or another sample rate (audio
    resampled wrongly) ran without a word. An engine without the stamp (another
    tool's, a TensorRT plan) is not checked here."""
    import json

    def stamped(key: str):
        raw = metadata.get(f"edge_mla.{key}")
        if raw is None:
            return None
        try:
            return json.loads(raw) if key != "modality" else raw
        except ValueError:
            return None

    where = spec.path.parent / "manifest.json"
    said = {"modality": spec.modality, "classes": list(spec.classes) if spec.classes is not None else None,
            "image size": spec.image_size, "audio sample_rate": spec.sample_rate, "audio window": spec.window}
    image, audio = stamped("image"), stamped("audio")
    own = {"modality": stamped("modality"), "classes": stamped("classes"),
           "image size": image.get("size") if isinstance(image, dict) else None,
           "audio sample_rate": audio.get("sample_rate") if isinstance(audio, dict) else None,
           "audio window": audio.get("window") if isinstance(audio, dict) else None}
    for key, value in own.items():
        if value is not None and said[key] is not None and value != said[key]:
            shown = (lambda v: v if not isinstance(v, list) or len(v) <= 12 else v[:12] + ["..."])
            raise EdgeMlaError(f"{where}: says {key} {shown(said[key])} for {path.name}, but the engine was exported with {shown(value)} (manifest does not match its engines)")


class Engine:
    """``infer_batch(x)`` -> (logits (N, C), reliability) for preprocessed examples
    ``x`` (batch first); ``infer(x)``/``run(x)`` for one example without a batch axis."""

    def __init__(self, spec: EngineSpec, num_classes: int, intra_op_threads: int = 1, backend: str = "auto", providers: Optional[list] = None) -> None:
        self.spec = spec
        if spec.entry.get("format", "onnx") != "onnx" or spec.path.suffix != ".onnx":
            raise EdgeMlaError(f"{spec.path}: the manifest's default engine is not ONNX (pick --precision fp32 or int8)")
        self.choice: BackendChoice = choose_backend(spec.entry, spec.path.name, spec.precision, backend, providers)
        log.info("%s engine: %s on %s (%s)", spec.modality, self.choice.file, self.choice.backend, self.choice.reason)
        self.runner: Runner = open_runner(spec.path.parent, self.choice, intra_op_threads)
        r = self.runner
        if spec.input_name not in r.input_shapes:
            raise EdgeMlaError(f"{r.path}: manifest says input {spec.input_name!r} but the engine's inputs are {', '.join(r.input_names)} (manifest does not match its engines)")
        if spec.output_name not in r.output_shapes:
            raise EdgeMlaError(f"{r.path}: manifest says output {spec.output_name!r} but the engine's outputs are {', '.join(r.output_names)} (manifest does not match its engines)")
        shape = r.input_shapes[spec.input_name]
        if len(shape) != len(spec.input_shape) or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(shape, spec.input_shape)):
            raise EdgeMlaError(f"{r.path}: engine input shape {shape} does not match the manifest's {spec.input_shape}")
        out_shape = r.output_shapes[spec.output_name]
        if out_shape and isinstance(out_shape[-1], int) and out_shape[-1] != num_classes:
            raise EdgeMlaError(f"{r.path}: engine has {out_shape[-1]} outputs but the manifest lists {num_classes} classes")
        self.input_name, self.output_name = spec.input_name, spec.output_name
        _check_stamped_facts(r.path, r.metadata, spec, num_classes)
        self.reliability_name: Optional[str] = spec.parsed.reliability_output if spec.parsed else None  # the second output (checked by the manifest's parse)
        if self.reliability_name is not None and self.reliability_name not in r.output_shapes:
            raise EdgeMlaError(f"{r.path}: manifest says reliability output {self.reliability_name!r} but the engine's outputs are {', '.join(r.output_names)} (manifest does not match its engines)")

    @property
    def runs(self) -> int:
        return self.runner.runs

    @property
    def seconds(self) -> float:
        return self.runner.seconds

    def describe(self) -> dict:
        return {**self.runner.describe(), "reason": self.choice.reason}

    def infer_batch(self, x: np.ndarray) -> tuple:
        """(logits (N, C), per-example reliability (N,) or None) for a batch ``x``."""
        outs = self.runner.run({self.input_name: x})
        rel = outs.get(self.reliability_name) if self.reliability_name else None
        return outs[self.output_name], (None if rel is None else np.asarray(rel, np.float32).reshape(-1))

    def infer(self, x: np.ndarray) -> tuple:
        """(logits (1, C), reliability or None) for one example without a batch axis."""
        logits, rel = self.infer_batch(x[None])
        return logits, (None if rel is None else float(rel[0]))

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.infer(x)[0]
