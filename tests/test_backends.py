"""Execution backends: selection with only a CPU present (the CI machine), the
provider list, and the TensorRT runner's glue against a stand-in for TensorRT and
CUDA (real TensorRT and a GPU do not exist here; README says what ran where)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime import backends
from edge_mla.runtime.backends import OrtRunner, choose_backend, open_runner, parse_providers, plan_for
from test_runtime_support import engines  # noqa: F401

ENTRY = {"file": "image.int8.onnx", "precision": "int8", "variants": {"fp32": {"file": "image.fp32.onnx"}, "int8": {"file": "image.int8.onnx"}}}
ENTRY_PLAN = {**ENTRY, "variants": {**ENTRY["variants"], "trt": {"file": "image.int8.plan", "format": "trt"}}}


def test_cpu_only_auto_picks_onnxruntime_cpu_and_says_why():
    c = choose_backend(ENTRY, "image.int8.onnx", "int8", "auto")
    assert c.backend == "onnxruntime" and c.file == "image.int8.onnx"
    assert c.providers[-1] == "CPUExecutionProvider"
    assert "no TensorRT plan" in c.reason


def test_auto_with_plan_but_no_tensorrt_falls_back(monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_version", lambda: None)
    c = choose_backend(ENTRY_PLAN, "image.int8.onnx", "int8", "auto")
    assert c.backend == "onnxruntime" and "TensorRT is not installed" in c.reason


def test_auto_with_plan_tensorrt_and_gpu_picks_tensorrt(monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.9")
    monkeypatch.setattr(backends, "cuda_device_count", lambda: 1)
    c = choose_backend(ENTRY_PLAN, "image.int8.onnx", "int8", "auto")
    assert (c.backend, c.file) == ("tensorrt", "image.int8.plan")
    # an fp32 request has no fp32/fp16 plan in this entry: ONNX Runtime
    assert choose_backend(ENTRY_PLAN, "image.fp32.onnx", "fp32", "auto").backend == "onnxruntime"


def test_explicit_tensorrt_without_it_is_one_line():
    with pytest.raises(EdgeMlaError) as e:
        choose_backend(ENTRY_PLAN, "image.int8.onnx", "int8", "tensorrt")
    assert "--backend tensorrt" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EdgeMlaError, match="unknown backend"):
        choose_backend(ENTRY, "image.int8.onnx", "int8", "openvino-native")


def test_plan_for_ignores_malformed_variants():
    assert plan_for({"variants": {"trt": {"file": 3}}}, "int8") is None
    assert plan_for({"variants": {"trt_fp16": {"file": "a.plan"}}}, "fp32") == "a.plan"
    assert plan_for({}, "int8") is None


def test_parse_providers():
    assert parse_providers(None) is None and parse_providers("auto") is None
    assert parse_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(EdgeMlaError, match="unknown execution provider 'gpu'"):
        parse_providers("gpu")
    with pytest.raises(EdgeMlaError, match="has no CUDAExecutionProvider"):
        parse_providers("cuda,cpu")  # the CPU build of onnxruntime


def test_ort_runner_runs_a_real_engine(engines):  # noqa: F811
    from edge_mla.manifest import load_manifest

    man = load_manifest(engines)
    spec = man.engine("image", "fp32")
    r = open_runner(man.root, choose_backend(spec.entry, spec.path.name, "fp32", "onnxruntime"))
    assert isinstance(r, OrtRunner) and r.describe()["providers"] == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).random((3, *spec.input_shape[1:]), dtype=np.float32)
    out = r.run({spec.input_name: x})
    assert out[spec.output_name].shape == (3, len(man.classes)) and r.runs == 1
    np.testing.assert_allclose(r.run1(x[:1]), out[spec.output_name][:1], rtol=1e-5, atol=1e-5)


class _FakeCuda:
    """Device memory as numpy buffers keyed by fake pointers: enough to check that
    the runner copies inputs in, sets shapes and addresses, and copies outputs back."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        self.mem, self.next = {}, 1000

    def cudaStreamCreate(self):
        return (0, 7)

    def cudaMalloc(self, n):
        self.next += 1
        self.mem[self.next] = bytearray(n)
        return (0, self.next)

    def cudaFree(self, p):
        self.mem.pop(p)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        import ctypes

        if kind == 1:
            self.mem[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.mem[src][:n]), n)
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)


def _fake_tensorrt(cuda: _FakeCuda, classes: int = 4):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99-fake"

    class TensorIOMode:
        INPUT, OUTPUT = 0, 1

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["x", "logits"][i]

        def get_tensor_shape(self, n):
            return [-1, 3] if n == "x" else [-1, classes]

        def get_tensor_mode(self, n):
            return TensorIOMode.INPUT if n == "x" else TensorIOMode.OUTPUT

        def create_execution_context(self):
            return Ctx()

    class Ctx:
        def __init__(self):
            self.shapes, self.addr = {}, {}

        def set_input_shape(self, n, s):
            self.shapes[n] = s

        def get_tensor_shape(self, n):
            return (self.shapes["x"][0], classes)

        def set_tensor_address(self, n, p):
            self.addr[n] = p

        def execute_async_v3(self, stream):  # logits[:, j] = sum(x) + j
            b = self.shapes["x"][0]
            x = np.frombuffer(bytes(cuda.mem[self.addr["x"]][: b * 3 * 4]), np.float32).reshape(b, 3)
            y = (x.sum(1, keepdims=True) + np.arange(classes, dtype=np.float32)).astype(np.float32)
            cuda.mem[self.addr["logits"]][: y.nbytes] = y.tobytes()
            return True

    trt.TensorIOMode = TensorIOMode
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None, "deserialize_cuda_engine": lambda self, b: Engine() if b == b"PLAN" else None})
    return trt


def test_tensorrt_runner_glue_with_a_stand_in(tmp_path, monkeypatch):
    cuda = _FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(cuda))
    monkeypatch.setattr(backends, "cuda_runtime", lambda: cuda)
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN")
    r = backends.TensorRTRunner(plan)
    assert r.input_names == ["x"] and r.output_shapes["logits"] == ["batch", 4]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = r.run1(x)
    np.testing.assert_array_equal(y, x.sum(1, keepdims=True) + np.arange(4))
    y2 = r.run1(np.ones((5, 3), np.float32))  # a bigger batch re-allocates the buffers
    assert y2.shape == (5, 4) and np.all(y2[:, 0] == 3)
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"not a plan")
    with pytest.raises(EdgeMlaError, match="cannot deserialize"):
        backends.TensorRTRunner(bad)
