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

import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"


class ModalityLogits(nn.Module):
    """``x -> model.logits(modality, x)``: what one engine computes."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.model = model
        self.modality = modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.modality, x)


@dataclass
class OnnxExportInfo:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    input_name: str
    input_shape: list  # with "batch" as the first dimension
    output_name: str
    output_shape: list


def example_input(cfg, modality: str, batch: int = 2) -> torch.Tensor:
    """A random input of the engine's shape (the trace only needs the shape)."""
    g = torch.Generator().manual_seed(0)
    if modality == "image":
        return torch.rand(batch, 1, cfg.image_size, cfg.image_size, generator=g)
    if modality == "audio":
        return (torch.rand(batch, cfg.window, generator=g) - 0.5) * 0.2
    raise ValueError(f"unknown modality {modality!r}")


def _export_dynamo(module: nn.Module, x: torch.Tensor, path: Path, name: str, opset: int) -> None:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), input_names=[name], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamo=True, external_data=False, dynamic_shapes=({0: batch},), optimize=True, verbose=False,
        )


def _export_torchscript(module: nn.Module, x: torch.Tensor, path: Path, name: str, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), input_names=[name], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamo=False, dynamic_axes={name: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}}, do_constant_folding=True,
        )


def _dims(value_info) -> list:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def export_modality(model: nn.Module, modality: str, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "auto") -> OnnxExportInfo:
    """Write ``path`` (single file, onnx.checker clean, dynamic batch) for one modality.

    ``exporter``: "dynamo", "torchscript" or "auto" (dynamo, falling back to
    torchscript on failure)."""
    path = Path(path)
    module = ModalityLogits(model, modality).eval()
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
    return OnnxExportInfo(path, used, int(actual), inp.name, in_shape, out.name, out_shape)
