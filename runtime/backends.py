"""Execution backends: one ``Runner`` shape for every way edge-mla runs an engine.

The runtime, the export gate and the profiler all open engines through
``open_runner`` (loaders and runners that compose, as in Polygraphy), so an
execution provider or a TensorRT plan is chosen in one place and timed, checked and
run the same way everywhere.

Backends (``BACKENDS``):

- ``onnxruntime``: an ONNX file with an execution-provider list. CPU is always there;
  the CUDA, TensorRT and OpenVINO providers are used where the installed onnxruntime
  build has them (``ort_providers``).
- ``tensorrt``: a serialized TensorRT plan (the ``trt*`` variants of the manifest),
  run with TensorRT's own runtime and CUDA buffers. ``import tensorrt`` happens only
  when such a runner is opened; nothing on the CPU path needs it.

``--backend auto`` (``choose_backend``) takes TensorRT when it imports, a CUDA device
answers and the manifest has a plan for the engine; otherwise ONNX Runtime with the
best providers its build offers. The choice and its reason are logged.

OpenVINO's own runtime is not a backend: on this project's x86 machines it was not
faster than ONNX Runtime for the shipped engines (BENCHMARKS.md, issue 9), and its
ONNX Runtime execution provider covers builds that have it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from edge_mla.errors import EdgeMlaError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")  # RunConfig.backend's choices list the same
# ONNX Runtime execution providers in order of preference; CPU is always last and always present.
ORT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


class Runner:
    """Runs one engine on batches. ``run(feeds)`` maps input name -> array (batch
    first) to a dict output name -> float32 array; ``describe()`` says what runs it."""

    backend = "?"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.input_names: list = []
        self.output_names: list = []
        self.input_shapes: dict = {}  # name -> list of int | str (symbolic)
        self.output_shapes: dict = {}
        self.metadata: dict = {}  # the engine's own key -> value strings (ONNX metadata_props; none for a plan)
        self.runs = 0
        self.seconds = 0.0

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict:
        t = time.perf_counter()
        out = self._run({k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        self.seconds += time.perf_counter() - t
        self.runs += 1
        return out

    def run1(self, x: np.ndarray) -> np.ndarray:
        """The first output for a batch ``x`` fed to the first input (export checks, profiling)."""
        return self.run({self.input_names[0]: x})[self.output_names[0]]

    def describe(self) -> dict:
        return {"backend": self.backend, "file": self.path.name}


def ort_providers() -> list:
    """Execution providers of the installed onnxruntime, in edge-mla's preference order."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in ORT_PREFERENCE if p in have]


def parse_providers(spec: Optional[str]) -> Optional[list]:
    """``"cuda,cpu"`` -> the ONNX Runtime provider names; None: the default list.
    Unknown or unavailable providers are the user's mistake: one line."""
    if spec is None or str(spec).strip() in ("", "auto"):
        return None
    names = []
    for part in str(spec).split(","):
        key = part.strip()
        name = PROVIDER_ALIASES.get(key.lower(), key)
        if name not in ORT_PREFERENCE:
            raise EdgeMlaError(f"--providers: unknown execution provider {key!r}; choose from {', '.join(PROVIDER_ALIASES)}")
        names.append(name)
    have = ort_providers()
    missing = [n for n in names if n not in have]
    if missing:
        raise EdgeMlaError(f"--providers: this onnxruntime build has no {', '.join(missing)} (it has: {', '.join(have)})")
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # the fallback for ops other providers do not take
    return names


class OrtRunner(Runner):
    """ONNX Runtime with ``threads`` intra-op threads (at least 1),
    sequential execution and no spin-waiting, so several sessions on a 2-core device
    (or the export's FP32/INT8 timing pair) do not starve each other (design.md)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1, providers: Optional[Sequence[str]] = None) -> None:
        super().__init__(path)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(int(threads), 1)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), so, providers=self.providers)
        except Exception as exc:
            raise EdgeMlaError(f"{path}: ONNX Runtime cannot load this engine ({(str(exc).splitlines() or ['?'])[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict:
        outs = self.session.run(None, dict(feeds))
        return {n: np.asarray(o, np.float32) for n, o in zip(self.output_names, outs)}

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.session.get_providers()}


class TensorRTRunner(Runner):
    """A TensorRT plan (TensorRT 10 or 11 I/O-tensor API) with device buffers from
    CUDA's runtime bindings (``cuda-python``). Thin on purpose: it cannot run on the
    CI machines (no GPU, no TensorRT), so everything around it is tested instead and
    this class only moves arrays in and out of the plan."""

    backend = "tensorrt"

    def __init__(self, path: Path, max_batch: int = 8) -> None:
        super().__init__(path)
        try:
            import tensorrt as trt
        except Exception as exc:
            raise EdgeMlaError(f"{path}: the tensorrt backend needs TensorRT's Python package ({exc})") from None
        self._cudart = cuda_runtime()
        logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(logger)
        self._engine = self._trt_runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self._engine is None:
            raise EdgeMlaError(f"{path}: TensorRT {trt.__version__} cannot deserialize this plan (built for another TensorRT version or GPU?)")
        self._ctx = self._engine.create_execution_context()
        self._input_mode = trt.TensorIOMode.INPUT
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = [int(d) if int(d) >= 0 else "batch" for d in self._engine.get_tensor_shape(name)]
            if self._engine.get_tensor_mode(name) == self._input_mode:
                self.input_names.append(name)
                self.input_shapes[name] = shape
            else:
                self.output_names.append(name)
                self.output_shapes[name] = shape
        self.max_batch = max_batch
        self._buffers: dict = {}  # name -> (device pointer, bytes)
        self._stream = _check(self._cudart.cudaStreamCreate())

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (None, 0))
        if ptr is None or size < nbytes:
            if ptr is not None:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict:
        cu = self._cudart
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            x = feeds[name]
            self._ctx.set_input_shape(name, tuple(x.shape))
            ptr = self._buffer(name, x.nbytes)
            _check(cu.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream))
            self._ctx.set_tensor_address(name, ptr)
        outs = {}
        for name in self.output_names:
            shape = tuple(self._ctx.get_tensor_shape(name))
            outs[name] = np.empty(shape, np.float32)
            self._ctx.set_tensor_address(name, self._buffer(name, outs[name].nbytes))
        if not self._ctx.execute_async_v3(self._stream):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
        for name, host in outs.items():
            _check(cu.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, d2h, self._stream))
        _check(cu.cudaStreamSynchronize(self._stream))
        return outs

    def describe(self) -> dict:
        import tensorrt as trt

        return {**super().describe(), "tensorrt": trt.__version__}


def cuda_runtime():
    """CUDA's runtime API from cuda-python (module layout of 12.x and 13.x)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise EdgeMlaError(f"the tensorrt backend needs CUDA's Python bindings (pip install cuda-python): {exc}") from None
    return cudart


def _check(ret):
    """cuda-python returns (error, value...) tuples; raise on an error, return the value."""
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) or None)


def cuda_device_count() -> int:
    """CUDA devices visible through cuda-python; 0 when the bindings or a driver are absent."""
    try:
        cudart = cuda_runtime()
        return int(_check(cudart.cudaGetDeviceCount()))
    except Exception:
        return 0


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt
    except Exception:  # ImportError, or a stub package that fails on import
        return None
    return getattr(tensorrt, "__version__", "unknown")


@dataclass
class BackendChoice:
    """Which backend runs an engine, on which file, and why (logged and reported)."""

    backend: str  # onnxruntime | tensorrt
    file: str  # relative to the engine folder
    reason: str
    providers: list = field(default_factory=list)  # onnxruntime only


# Manifest variant keys of TensorRT plans per ONNX precision (export/pipeline.py writes them).
PLAN_VARIANTS = {"int8": ("trt", "trt_int8_dla"), "fp32": ("trt_fp16", "trt_fp32")}


def plan_for(entry: Mapping, precision: str) -> Optional[str]:
    """The manifest's TensorRT plan for an engine entry at ``precision``, if any."""
    variants = entry.get("variants", {}) or {}
    for key in PLAN_VARIANTS.get(precision, ()):
        v = variants.get(key)
        if isinstance(v, Mapping) and isinstance(v.get("file"), str):
            return v["file"]
    return None


def choose_backend(entry: Mapping, onnx_file: str, precision: str, requested: str = "auto", providers: Optional[list] = None) -> BackendChoice:
    """Pick the backend for one engine. ``auto``: TensorRT when it imports, a CUDA
    device answers and the manifest has a plan; else ONNX Runtime with the best
    providers this build has (or ``providers`` when given)."""
    if requested not in BACKENDS:
        raise EdgeMlaError(f"--backend: unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    plan = plan_for(entry, precision)
    if requested in ("auto", "tensorrt"):
        why_not = None
        version = tensorrt_version()
        if plan is None:
            why_not = f"the manifest has no TensorRT plan for the {precision} engine"
        elif version is None:
            why_not = "TensorRT is not installed"
        elif cuda_device_count() < 1:
            why_not = "no CUDA device"
        if why_not is None:
            return BackendChoice("tensorrt", plan, f"TensorRT {version} with a plan built for this engine")
        if requested == "tensorrt":
            raise EdgeMlaError(f"--backend tensorrt: {why_not}")
    provs = providers or ort_providers()
    reason = "ONNX Runtime with " + ", ".join(p.replace("ExecutionProvider", "") for p in provs)
    if requested == "auto":
        reason += f" ({why_not})"
    return BackendChoice("onnxruntime", onnx_file, reason, provs)


def open_runner(root: Path, choice: BackendChoice, threads: int = 1) -> Runner:
    """The Runner for a BackendChoice (files relative to the engine folder ``root``)."""
    path = Path(root) / choice.file
    if choice.backend == "tensorrt":
        return TensorRTRunner(path)
    return OrtRunner(path, threads, choice.providers)


def available_backends(entry: Mapping, precision: str) -> list:
    """Every backend that can run this engine here, for the profiler: ONNX Runtime once
    per available accelerator provider (CPU always), TensorRT when a plan runs."""
    out = [("onnxruntime", [p, "CPUExecutionProvider"] if p != "CPUExecutionProvider" else [p]) for p in ort_providers()]
    if plan_for(entry, precision) and tensorrt_version() and cuda_device_count() > 0:
        out.append(("tensorrt", []))
    return out
