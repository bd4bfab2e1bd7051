"""Static INT8 quantization with ONNX Runtime: QDQ, signed 8-bit, per channel.

Why these settings (see shared/docs/design.md):
- QDQ with QInt8 weights and activations is what ONNX Runtime runs fast on x86 and
  what TensorRT builds explicit-precision plans from.
- Activations: symmetric int8 (zero point 0) when the engine is for TensorRT (it
  requires that; the scale is then amax/127, exactly what its calibration cache
  stores); asymmetric uint8 for ONNX Runtime on CPU, whose kernels fuse
  DQ->Conv->Relu->Q into QLinearConv only then (measured: resnet18 audio 1.92x
  FP32 speed asymmetric vs 0.97x symmetric on the AVX2 EPYC).
- The audio log-mel front end (DFT conv, power, mel MatMul, Log) stays float: its
  dynamic range spans many decades before the Log, and int8 there wrecks the
  features. The final head MatMul/Gemm stays float too: it is tiny, and keeping
  the logits float keeps the entropy weights of the fusion well calibrated.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantizeResult:
    path: Path
    method: str
    excluded_nodes: list
    activation_scales: dict  # tensor name -> float32 scale (zero point 0)
    qdq_nodes: int
    reduce_range: bool
    symmetric_activations: bool
    trt_scales: dict  # tensor -> amax/127 for the TensorRT cache (== activation_scales when symmetric)


def preprocess(src: Path, dst: Path) -> None:
    """ONNX Runtime's quant_pre_process: symbolic shape inference + basic graph
    optimisation (standard ONNX ops only), the graph quantization then sees."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_optimization=False, save_as_external_data=False)
    prune_opset_imports(dst)


def _producers(model: onnx.ModelProto) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


_COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


def frontend_nodes(model: onnx.ModelProto) -> list:
    """Names of the nodes that compute the log-mel features: every ancestor of a
    ``Log`` node, the Log itself, and the chain after it up to the first
    Conv/MatMul/Gemm of the backbone (transposes and the feature BatchNorm).
    Structural, so it does not depend on how an exporter names nodes. Empty for
    graphs without a Log (image engines)."""
    prod = _producers(model)
    consumers: dict = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: list = []
    seen: set = set()
    side = set(side_output_nodes(model))  # the reliability output's own Log is not the front end
    logs = [n for n in model.graph.node if n.op_type == "Log" and n.name not in side]
    stack = list(logs)
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n.name)
        stack.extend(prod[i] for i in n.input if i in prod)
    for n in logs:  # forward: single-consumer chain until the backbone starts
        cur = n
        while True:
            nxt = consumers.get(cur.output[0], [])
            if len(nxt) != 1 or nxt[0].op_type in _COMPUTE_OPS or id(nxt[0]) in seen:
                break
            cur = nxt[0]
            seen.add(id(cur))
            out.append(cur.name)
    return out


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI). Without it ONNX
    Runtime's u8s8 kernels multiply-add pairs into int16 (vpmaddubsw) and saturate
    with full 8-bit weights; measured on an AVX2-only EPYC: a tiny CNN fell from 35%
    to 15% accuracy, and 7-bit weights (reduce_range) brought it back to 34.5%."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux x86: assume no int16 saturation issue
    if "avx2" not in flags:
        return True  # ARM (sdot/udot kernels) or other: no vpmaddubsw path
    return "avx512_vnni" in flags or "avx_vnni" in flags


def resolve_reduce_range(mode: str) -> bool:
    """``auto``: 7-bit weights exactly where the CPU lacks VNNI."""
    if mode == "auto":
        return not cpu_has_vnni()
    return mode == "on"


def prune_opset_imports(path: Path) -> None:
    """Drop opset imports of domains no node uses (ORT's optimiser adds its own,
    e.g. com.microsoft); a plain graph keeps other consumers like TensorRT happy."""
    m = onnx.load(str(path))
    used = {n.domain or "" for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if (o.domain or "") in used]
    if len(keep) != len(m.opset_import):
        del m.opset_import[:]
        m.opset_import.extend(keep)
        onnx.save_model(m, str(path), save_as_external_data=False)


def head_nodes(model: onnx.ModelProto) -> list:
    """The node(s) computing the graph output from the last MatMul/Gemm: walk back
    from the output through Add/Reshape/Identity (and the Div/Mul by the
    temperature of calibrated logits) to the first MatMul or Gemm."""
    prod = _producers(model)
    names: list = []
    cur = prod.get(model.graph.output[0].name)
    inits = {i.name for i in model.graph.initializer}
    while cur is not None:
        names.append(cur.name)
        if cur.op_type in ("MatMul", "Gemm"):
            return names
        if cur.op_type not in ("Add", "Reshape", "Identity", "Flatten", "Div", "Mul"):
            return []
        nxt = [prod[i] for i in cur.input if i in prod and i not in inits]
        mm = [n for n in nxt if n.op_type in ("MatMul", "Gemm")]
        cur = mm[0] if len(mm) == 1 else (nxt[0] if len(nxt) == 1 else None)
    return []


def side_output_nodes(model: onnx.ModelProto) -> list:
    """Nodes that only the second and later graph outputs need (the reliability
    signal's distance and logistic map): kept float, so INT8 changes the signal only
    through the encoder features it shares with the logits."""
    prod = _producers(model)

    def ancestors(names) -> set:
        seen, stack = set(), [prod[n] for n in names if n in prod]
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            stack += [prod[i] for i in n.input if i in prod]
        return seen

    outs = [o.name for o in model.graph.output]
    if len(outs) < 2:
        return []
    main = ancestors(outs[:1])
    return sorted(ancestors(outs[1:]) - main)


def activation_scales(model: onnx.ModelProto) -> dict:
    """Scale of every activation a QuantizeLinear quantizes (weights excluded: they
    are initializers). Per-tensor only, which is what activations get."""
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    scales: dict = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        s_name = n.input[1]
        if s_name in inits:
            s = numpy_helper.to_array(inits[s_name])
        elif s_name in consts:
            s = numpy_helper.to_array(consts[s_name].attribute[0].t)
        else:
            continue
        if np.asarray(s).size != 1:
            continue
        scales[n.input[0]] = float(np.asarray(s, np.float32).reshape(()))
    return scales


def _methods() -> dict:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


# Histogram settings. ORT's entropy default (128 bins, 128 quantized bins) leaves the
# KL search a single candidate, the full range, i.e. minmax; quantize_static does not
# pass num_bins through, so calibration runs here. 2048 bins / 128 quantized bins is
# TensorRT's entropy calibrator's choice.
HIST_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128


def calibrate(src: Path, reader, method: str, ranges_path: Path, percentile: float = 99.999, symmetric: bool = True) -> dict:
    """Run ONNX Runtime's calibrator on ``src`` and save the ranges as ORT's JSON
    calibration cache (``quantize_static(calibration_cache_path=...)`` then
    quantizes with exactly these). Returns {tensor: amax = max(|lo|, |hi|)}."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    opts = {"symmetric": symmetric}
    if method == "entropy":
        opts.update(num_bins=HIST_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif method == "percentile":
        opts.update(num_bins=HIST_BINS, percentile=percentile)
    with tempfile.TemporaryDirectory(prefix="edge-mla-aug-") as tmp, contextlib.redirect_stdout(io.StringIO()) as chatter:
        calibrator = create_calibrator(Path(src), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=_methods()[method], extra_options=opts)
        calibrator.collect_data(reader)
        tensors = calibrator.compute_data()
        del calibrator
    log.debug("calibrator said: %s", chatter.getvalue().strip())
    save_tensors_data(tensors, ranges_path)
    out = {}
    for name in tensors:
        lo, hi = tensors[name].range_value
        out[name] = float(max(np.abs(np.asarray(lo, np.float64)).max(), np.abs(np.asarray(hi, np.float64)).max()))
    return out


def quantize_int8(
    src: Path, dst: Path, reader, method: str = "minmax", reduce_range: bool = False,
    exclude_frontend: bool = True, exclude_head: bool = True, percentile: float = 99.999,
    symmetric_activations: bool = True,
) -> QuantizeResult:
    """Quantize the pre-processed FP32 model ``src`` into ``dst`` (QDQ).

    ``reduce_range``: 7-bit weights, needed on x86 CPUs without VNNI (see
    ``cpu_has_vnni``); still plain int8 tensors that TensorRT accepts.
    ``symmetric_activations``: signed int8 activations with zero point 0 (what
    TensorRT requires). False: uint8 activations with a zero point, which ONNX
    Runtime's CPU kernels fuse far better (Conv+Relu -> QLinearConv); measured on
    the AVX2 EPYC, resnet18 audio: symmetric 0.97x, asymmetric 1.92x FP32 speed.
    The TensorRT cache is written from the same ranges either way (amax/127)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in CALIB_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    model = onnx.load(str(src))
    exclude: list = []
    if exclude_frontend:
        exclude += frontend_nodes(model)
    if exclude_head:
        exclude += head_nodes(model)
    exclude += side_output_nodes(model)
    exclude = [e for e in dict.fromkeys(exclude) if e]
    cal = _methods()[method]
    extra = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
    act_type = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
    log.debug("quantizing %s with %s; float nodes: %s", src.name, method, exclude)
    with tempfile.TemporaryDirectory(prefix="edge-mla-calib-") as tmp:
        ranges = Path(tmp) / "ranges.json"
        amax = calibrate(src, reader, method, ranges, percentile=percentile, symmetric=symmetric_activations)
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(src), str(dst), None,
                quant_format=QuantFormat.QDQ, activation_type=act_type, weight_type=QuantType.QInt8,
                per_channel=True, reduce_range=reduce_range, calibrate_method=cal, nodes_to_exclude=exclude,
                use_external_data_format=False, extra_options=extra, calibration_cache_path=str(ranges),
            )
    q = onnx.load(str(dst))
    n_qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in q.graph.node)
    prune_opset_imports(dst)
    scales = activation_scales(q)
    if symmetric_activations:
        trt_scales = dict(scales)
    else:  # same calibration, TensorRT's symmetric convention
        trt_scales = {t: amax[t] / 127.0 for t in scales if t in amax and amax[t] > 0}
    return QuantizeResult(Path(dst), method, exclude, scales, n_qdq, reduce_range, symmetric_activations, trt_scales)
