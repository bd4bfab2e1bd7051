"""One ONNX Runtime session per modality, checked against the manifest.

Each session gets its own small thread pool (``intra_op_threads``, default 1) so the
image and audio workers, running at the same time on a 2-core device, do not
oversubscribe the cores. The input/output names and ranks recorded in the
manifest are checked against the ONNX file at load: a manifest that does not match
its engines fails at start with one clear line instead of on the first frame.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import EngineSpec

log = logging.getLogger(__name__)


def cpu_session(path, threads: int = 1):
    """The one way edge-mla opens an engine on the CPU: ``threads`` intra-op
    threads and sequential execution, so two sessions on a 2-core device (or the
    export's FP32/INT8 timing pair) do not oversubscribe the cores."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(int(threads), 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Engine:
    """``run(x)`` -> logits (1, C) for one preprocessed example ``x`` (no batch axis);
    ``infer(x)`` -> (logits, reliability or None), reading the engine's second output
    when the manifest declares one."""

    def __init__(self, spec: EngineSpec, num_classes: int, intra_op_threads: int = 1) -> None:
        self.spec = spec
        if spec.entry.get("format", "onnx") != "onnx" or spec.path.suffix != ".onnx":
            raise EdgeMlaError(f"{spec.path}: the CPU runtime runs ONNX engines only (pick --precision fp32 or int8)")
        try:
            self.session = cpu_session(spec.path, intra_op_threads)
        except Exception as exc:
            raise EdgeMlaError(f"{spec.path}: ONNX Runtime cannot load this engine ({str(exc).splitlines()[0]})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if spec.input_name not in inputs:
            raise EdgeMlaError(f"{spec.path}: manifest says input {spec.input_name!r} but the engine's inputs are {', '.join(inputs)} (manifest does not match its engines)")
        if spec.output_name not in outputs:
            raise EdgeMlaError(f"{spec.path}: manifest says output {spec.output_name!r} but the engine's outputs are {', '.join(outputs)} (manifest does not match its engines)")
        shape = inputs[spec.input_name].shape
        if len(shape) != len(spec.input_shape) or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(shape, spec.input_shape)):
            raise EdgeMlaError(f"{spec.path}: engine input shape {shape} does not match the manifest's {spec.input_shape}")
        out_shape = outputs[spec.output_name].shape
        if isinstance(out_shape[-1], int) and out_shape[-1] != num_classes:
            raise EdgeMlaError(f"{spec.path}: engine has {out_shape[-1]} outputs but the manifest lists {num_classes} classes")
        self.input_name, self.output_name = spec.input_name, spec.output_name
        rel = spec.entry.get("reliability_output")
        self.reliability_name = rel.get("name") if isinstance(rel, dict) else None
        if self.reliability_name is not None and self.reliability_name not in outputs:
            raise EdgeMlaError(f"{spec.path}: manifest says reliability output {self.reliability_name!r} but the engine's outputs are {', '.join(outputs)} (manifest does not match its engines)")
        self._fetch = [self.output_name] + ([self.reliability_name] if self.reliability_name else [])
        self.runs = 0
        self.seconds = 0.0

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.infer(x)[0]

    def infer(self, x: np.ndarray) -> tuple:
        """(logits (1, C), reliability in [0, 1] or None): one engine call for both."""
        t = time.perf_counter()
        outs = self.session.run(self._fetch, {self.input_name: np.ascontiguousarray(x[None], np.float32)})
        self.seconds += time.perf_counter() - t
        self.runs += 1
        rel = float(np.asarray(outs[1]).reshape(-1)[0]) if len(outs) > 1 else None
        return np.asarray(outs[0], np.float32), rel
