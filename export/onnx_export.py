"""PyTorch -> ONNX, one graph per modality: encoder + that modality's head logits.

torch 2.13's default exporter (dynamo, through onnxscript) is used with a dynamic
batch dimension and ``external_data=False`` (one self-contained file); it already
folds BatchNorm into the convolutions. If it fails on a model, the legacy
TorchScript exporter is tried and the manifest records which one wrote the file.
Opset 18 is the default: the dynamo exporter writes it natively (asking for 17 runs
the ONNX version converter, which fails on these graphs and keeps 18); ONNX Runtime
and TensorRT 10 accept it. TensorRT 8.6 (JetPack 5) needs 17: use the TorchScript
exporter with --opset 17 there.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
OUTPUT_NAME = "logits"
RELIABILITY_OUTPUT = "reliability"
BATCH_DIM = "batch"
# Initializer names the graph keeps for the Gaussian's precision and the fault gate's
# constants (module buffers keep their names through both exporters), so the INT8
# engine's gate can be refitted on its own features (export.reliability_int8).
PRECISION_CONSTANT = "precision"
GATE_CONSTANTS = ("fmp", "fmpm", "fcoef", "fbias")  # P m_j (D, J), m_j' P m_j (J,), coef, bias


def gate_constants(gate, precision) -> dict:
    """GATE_CONSTANTS name -> float32 array for a FaultGate under ``precision``: the
    distance to prototype j is h'Ph - 2 h'(P m_j) + m_j'P m_j, as for the class means."""
    mp = np.asarray(gate.means, np.float64) @ np.asarray(precision, np.float64)
    vals = (mp.T, np.sum(mp * gate.means, axis=1), np.float64(gate.coef), np.float64(gate.bias))
    return {n: np.ascontiguousarray(v, np.float32) for n, v in zip(GATE_CONSTANTS, vals)}


class ModalityLogits(nn.Module):
    """``x -> model.logits(modality, x)``: what one engine computes."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.model = model
        self.modality = modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.modality, x)


class ModalityWithReliability(nn.Module):
    """``x -> (logits / T, reliability)``: the engine with its second output, the
    reliability r in (0, 1) of ``edge_mla.reliability`` computed from constants
    baked into the graph (the same maths as ModalityReliability.score). Its logits
    are calibrated by the modality's fitted temperature T (Reliability.calibrate),
    so every consumer (the runtime's fusion and confidences, INT8, TensorRT) fuses
    calibrated uncertainties with no extra code; top-1 is unchanged (T > 0)."""

    def __init__(self, model: nn.Module, modality: str, rel) -> None:
        super().__init__()
        self.model = model
        self.modality = modality
        self.features = tuple(rel.features)
        self.temperature = float(rel.temperature)
        self.register_buffer("coef", torch.tensor([float(c) for c in rel.coef], dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(float(rel.bias), dtype=torch.float32))
        if "mahalanobis" in self.features:
            means = torch.tensor(rel.means, dtype=torch.float32)
            prec = torch.tensor(rel.precision, dtype=torch.float32)
            self.register_buffer(PRECISION_CONSTANT, prec)
            self.register_buffer("mp", (means @ prec).t().contiguous())  # (D, C): P mu_c
            self.register_buffer("mpm", ((means @ prec) * means).sum(1))  # (C,)
            self.dim = float(means.shape[1])
        self.fault = getattr(rel, "fault", None) is not None
        if self.fault:  # ModalityReliability.logit: min(map logit, fault gate logit)
            for name, value in gate_constants(rel.fault, rel.precision).items():
                self.register_buffer(name, torch.from_numpy(value))
            self.fdim = float(rel.fault.means.shape[1])

    def forward(self, x: torch.Tensor):
        h = self.model.embed(self.modality, x)
        z = self.model.head_logits(self.modality, h)
        zt = z / self.temperature
        cols = []
        for f in self.features:
            # max/min as TopK: ORT's symbolic shape inference (run before INT8
            # quantization) cannot type opset-18 ReduceMax/ReduceMin/ReduceLogSumExp.
            zmax = torch.topk(zt, 1, dim=1).values  # (N, 1)
            if f == "msp":
                cols.append(1.0 / torch.exp(zt - zmax).sum(1))
            elif f == "energy":
                cols.append(self.temperature * (zmax.squeeze(1) + torch.log(torch.exp(zt - zmax).sum(1))))
            else:
                quad = ((h @ self.precision) * h).sum(1, keepdim=True) - 2 * (h @ self.mp) + self.mpm
                d = torch.relu(-torch.topk(-quad, 1, dim=1).values.squeeze(1))
                cols.append(-torch.log1p(d / self.dim))
        f = torch.stack(cols, dim=1)
        logit = f @ self.coef + self.bias
        if self.fault:
            quad = ((h @ self.precision) * h).sum(1, keepdim=True) - 2 * (h @ self.fmp) + self.fmpm
            d = torch.relu(-torch.topk(-quad, 1, dim=1).values.squeeze(1))
            logit = torch.minimum(logit, self.fcoef * torch.log1p(d / self.fdim) + self.fbias)
        return zt, torch.sigmoid(logit)


@dataclass
class OnnxExportInfo:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    input_name: str
    input_shape: list  # with "batch" as the first dimension
    output_name: str
    output_shape: list
    reliability_name: str | None = None


def example_input(cfg, modality: str, batch: int = 2) -> torch.Tensor:
    """A random input of the engine's shape (the trace only needs the shape)."""
    g = torch.Generator().manual_seed(0)
    if modality == "image":
        return torch.rand(batch, 1, cfg.image_size, cfg.image_size, generator=g)
    if modality == "audio":
        return (torch.rand(batch, cfg.window, generator=g) - 0.5) * 0.2
    raise ValueError(f"unknown modality {modality!r}")


def _output_names(module: nn.Module) -> list:
    return [OUTPUT_NAME, RELIABILITY_OUTPUT] if isinstance(module, ModalityWithReliability) else [OUTPUT_NAME]


def _export_dynamo(module: nn.Module, x: torch.Tensor, path: Path, name: str, opset: int) -> None:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), input_names=[name], output_names=_output_names(module), opset_version=opset,
            dynamo=True, external_data=False, dynamic_shapes=({0: batch},), optimize=True, verbose=False,
        )


def _export_torchscript(module: nn.Module, x: torch.Tensor, path: Path, name: str, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), input_names=[name], output_names=_output_names(module), opset_version=opset,
            dynamo=False, dynamic_axes={name: {0: BATCH_DIM}, **{o: {0: BATCH_DIM} for o in _output_names(module)}}, do_constant_folding=True,
        )


def _dims(value_info) -> list:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def export_modality(model: nn.Module, modality: str, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "auto", reliability=None) -> OnnxExportInfo:
    """Write ``path`` (single file, onnx.checker clean, dynamic batch) for one modality.

    ``exporter``: "dynamo", "torchscript" or "auto" (dynamo, falling back to
    torchscript on failure). ``reliability`` (a ModalityReliability) adds the
    second output ``reliability`` (batch,)."""
    path = Path(path)
    module = (ModalityLogits(model, modality) if reliability is None else ModalityWithReliability(model, modality, reliability)).eval()
    x = example_input(model.cfg, modality)
    order = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[exporter]
    used, last_exc = None, None
    for kind in order:
        try:
            with torch.no_grad():
                (_export_dynamo if kind == "dynamo" else _export_torchscript)(module, x, path, modality, opset)
            used = kind
            break
        except Exception as exc:  # exporter internals raise many types
            last_exc = exc
            log.warning("%s exporter failed for %s (%s); %s", kind, modality, str(exc).splitlines()[0][:200], "trying the next" if kind != order[-1] else "giving up")
    if used is None:
        raise RuntimeError(f"ONNX export of the {modality} engine failed") from last_exc
    stray = Path(str(path) + ".data")
    if stray.exists():  # never ship a split model
        m = onnx.load(str(path))
        stray.unlink()
        onnx.save_model(m, str(path), save_as_external_data=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    inp, out = m.graph.input[0], m.graph.output[0]
    in_shape, out_shape = _dims(inp), _dims(out)
    if not isinstance(in_shape[0], str):
        raise RuntimeError(f"{path}: batch dimension is fixed ({in_shape}); the exporter ignored the dynamic shape")
    # One name for the batch axis whatever the exporter called it.
    in_shape[0] = BATCH_DIM
    out_shape[0] = BATCH_DIM
    actual = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), opset)
    if actual != opset:
        log.warning("%s: asked for opset %d, the %s exporter wrote opset %d", path.name, opset, used, actual)
    rel_name = m.graph.output[1].name if reliability is not None and len(m.graph.output) > 1 else None
    return OnnxExportInfo(path, used, int(actual), inp.name, in_shape, out.name, out_shape, rel_name)
