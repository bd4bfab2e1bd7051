"""Refit an INT8 engine's reliability map on its own outputs.

The reliability constants are fitted on FP32 features. Quantizing the encoder moves
those features by 1-3%, and the Mahalanobis distance amplifies that noise in the
feature directions where the clean data barely varies. The *ranking* survives
(AUROC within 0.01 of FP32), but the *level* does not: on held-out speakers 80% of
clean validation audio fell below r = 0.5 in INT8, against 2% in FP32. A
down-weighted sensor is then weighted as if it were broken.

The fix is Platt scaling of the INT8 engine's own reliability logit. The logit ``L``
is the input of the graph's final Sigmoid (with a fault gate, the map's side of the
Min in front of it). The map ``r = sigmoid(a * L + b)`` is
fitted on the same kind of data as the FP32 map: clean validation inputs against
the *train* corruption families, never the held-out ones. It is then written into
the INT8 graph as a Mul and an Add before the Sigmoid. The map is monotone, so the
ranking (and AUROC) is unchanged and only the level moves back to where FP32 puts
it. The reliability subgraph is kept in float by the quantizer
(``export.quantize.side_output_nodes``), so the new nodes run in float too.

The fault gate (``edge_mla.reliability.FaultGate``) needs more than a new level: its
prototypes are points in feature space, and quantization moves the point a dead
microphone maps to (on one official run, digital silence went from r 0.06 in FP32 to
0.56 in INT8 with the FP32 prototypes). ``refit_fault_gate`` therefore re-estimates
the prototypes and the clean edge from the INT8 engine's own features on the same
validation blocks (keeping the FP32 slope where INT8's would be shallower), before
the Platt step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


def _sigmoid_input(model, output_name: str) -> Optional[str]:
    """The tensor the graph's final Sigmoid turns into ``output_name``, or None when
    that output is not a Sigmoid's (an exporter that fused it away)."""
    for node in model.graph.node:
        if output_name in node.output:
            return node.input[0] if node.op_type == "Sigmoid" else None
    return None


def _map_logit(model, output_name: str) -> Optional[tuple]:
    """(node, i): the node whose input i is the reliability *map's* logit L, the one
    the Platt step rescales: the final Sigmoid's input, or, where a fault gate caps
    it (Sigmoid(Min(L, gate))), the Min's first input, because the gate is refitted
    on its own (``refit_fault_gate``). None when the output is not a Sigmoid's."""
    logit = _sigmoid_input(model, output_name)
    if logit is None:
        return None
    sig = next(n for n in model.graph.node if output_name in n.output)
    src = next((n for n in model.graph.node if logit in n.output), None)
    if src is not None and src.op_type == "Min":
        return src, 0
    return sig, 0


def _tensor_values(model, tensor: str, inputs: list, batch_size: int) -> list:
    """The values of ``tensor`` (any tensor of ``model``, made an extra output) for each
    array in ``inputs``, as float64."""
    import onnx
    import onnxruntime as ort

    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for x in inputs:
        parts = [sess.run([tensor], {name: x[s : s + batch_size]})[0] for s in range(0, len(x), batch_size)]
        out.append(np.concatenate(parts).astype(np.float64) if parts else np.zeros(0))
    return out


def reliability_logits(path: Path, output_name: str, inputs: list, batch_size: int = 256) -> Optional[list]:
    """The map's reliability logit (``_map_logit``) of the engine at ``path`` for each
    array in ``inputs`` (one (N,) array each), or None when the graph has no such Sigmoid."""
    import onnx

    model = onnx.load(str(path))
    at = _map_logit(model, output_name)
    if at is None:
        return None
    return [v.reshape(-1) for v in _tensor_values(model, at[0].input[at[1]], inputs, batch_size)]


def fit_map(clean: np.ndarray, corrupted: np.ndarray) -> tuple:
    """(scale, shift) of the class-balanced logistic map from the logit to
    P(clean), the same fit as the FP32 map's (edge_mla.reliability.fit_logistic)."""
    from edge_mla.reliability import fit_logistic

    x = np.concatenate([clean, corrupted])[:, None]
    coef, bias = fit_logistic(x, np.r_[np.ones(len(clean)), np.zeros(len(corrupted))])
    return float(coef[0]), float(bias)


def apply_map(path: Path, output_name: str, scale: float, shift: float) -> None:
    """Rewrite the engine at ``path`` so that the map's logit L (``_map_logit``) is
    read as ``scale * L + shift``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    found = _map_logit(model, output_name)
    if found is None:
        raise ValueError(f"{path}: output {output_name!r} is not produced by a Sigmoid")
    consumer, i = found
    logit = consumer.input[i]
    names = {"scale": f"{output_name}_int8_scale", "shift": f"{output_name}_int8_shift", "mul": f"{output_name}_int8_scaled", "add": f"{output_name}_int8_logit"}
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), names["scale"]),
                                    numpy_helper.from_array(np.array(shift, np.float32), names["shift"])])
    mul = helper.make_node("Mul", [logit, names["scale"]], [names["mul"]], name=names["mul"])
    add = helper.make_node("Add", [names["mul"], names["shift"]], [names["add"]], name=names["add"])
    consumer.input[i] = names["add"]
    nodes = list(model.graph.node)
    at = nodes.index(consumer)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + [mul, add] + nodes[at:])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)


def recalibrate(path: Path, output_name: str, clean: np.ndarray, corrupted: list, threshold: float) -> Optional[dict]:
    """Fit and write the INT8 map for the engine at ``path``: ``clean`` is a batch of
    clean validation inputs, ``corrupted`` the same inputs under each train
    corruption family. Returns what the manifest records, or None (with a warning)
    when the graph has no Sigmoid to refit."""
    if not len(clean) or not corrupted:
        log.warning("%s: no validation inputs to refit its INT8 reliability map on; it keeps the FP32 one", path.name)
        return None
    logits = reliability_logits(path, output_name, [clean, *corrupted])
    if logits is None:
        log.warning("%s: the reliability output is not a Sigmoid's; its INT8 map is not refitted", path.name)
        return None
    lc, lb = logits[0], np.concatenate(logits[1:])
    scale, shift = fit_map(lc, lb)
    if not (np.isfinite(scale) and np.isfinite(shift) and scale > 0):
        # a map that would reverse the ranking (or is undefined) is worse than the drift
        log.warning("%s: the refitted INT8 reliability map is not increasing (scale %.3g); it keeps the FP32 one", path.name, scale)
        return None
    before = float(np.mean(lc < _logit(threshold)))
    after = float(np.mean(scale * lc + shift < _logit(threshold)))
    apply_map(path, output_name, scale, shift)
    log.info("%s: INT8 reliability map refitted (scale %.3f, shift %.3f): clean validation below %.2g %.1f%% -> %.1f%%",
             path.name, scale, shift, threshold, 100 * before, 100 * after)
    return {"scale": scale, "shift": shift, "clean": int(len(lc)), "corrupted": int(len(lb)),
            "clean_below_threshold": {"before": before, "after": after}}


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def _embedding_tensor(model) -> Optional[str]:
    """The feature tensor h the distances are computed on: the first input of the
    MatMul that multiplies it by the Gaussian's precision."""
    from edge_mla.export.onnx_export import PRECISION_CONSTANT

    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] == PRECISION_CONSTANT:
            return node.input[0]
    return None


def embeddings(path: Path, inputs: list, batch_size: int = 256) -> Optional[list]:
    """The engine's feature h for each array in ``inputs`` ((N, D) each), or None when
    the graph has no distance on a named precision."""
    import onnx

    model = onnx.load(str(path))
    name = _embedding_tensor(model)
    return None if name is None else _tensor_values(model, name, inputs, batch_size)


def refit_fault_gate(path: Path, mrel, clean: np.ndarray, blocks: dict) -> Optional[dict]:
    """Re-estimate the fault gate of the engine at ``path`` on its own features:
    ``clean`` is a batch of clean validation inputs, ``blocks`` maps each of the FP32
    gate's block names to the same inputs under that corruption. Writes the new
    constants into the graph and returns what the manifest records, or None (with a
    warning: the engine keeps the FP32 gate) when that cannot be done."""
    import onnx
    from onnx import numpy_helper

    from edge_mla.export.onnx_export import GATE_CONSTANTS, gate_constants
    from edge_mla.reliability import FaultGate, gate_from_blocks, min_mahalanobis

    gate = mrel.fault
    missing = [b for b in gate.blocks if b not in blocks]
    if missing or not len(clean):
        log.warning("%s: no validation inputs for the fault gate's %s; it keeps the FP32 gate", path.name, ", ".join(missing) or "clean side")
        return None
    hs = embeddings(path, [clean, *(blocks[b] for b in gate.blocks)])
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    if hs is None or any(n not in inits for n in GATE_CONSTANTS):
        log.warning("%s: the fault gate's constants are not named in the graph; it keeps the FP32 gate", path.name)
        return None
    new = gate_from_blocks(hs[0], hs[1:], mrel.precision, list(gate.blocks))
    if new is None:
        log.warning("%s: on INT8 features no fault block of the gate is separable from clean inputs; it keeps the FP32 gate", path.name)
        return None
    if new.coef < gate.coef:
        # quantization scatters the features, so the INT8 quantiles lie further apart: keep
        # the edge where 1% of clean inputs are doubted, but release as steeply as FP32 does
        # beyond it (a shallower gate reaches into clean inputs the FP32 gate leaves alone)
        edge = -new.bias / new.coef
        new = FaultGate(new.means, gate.coef, -gate.coef * edge, new.blocks)
    # how far quantization moved each kept prototype, in the Gaussian's units (squared distance / D)
    old = {b: gate.means[i : i + 1] for i, b in enumerate(gate.blocks)}
    moved = [float(min_mahalanobis(new.means[j : j + 1], old[b], mrel.precision)[0] / gate.means.shape[1]) for j, b in enumerate(new.blocks)]
    # a block no longer separable on INT8 features drops out; the graph keeps its
    # prototype count (its tensors' shapes), so the first kept prototype is repeated
    slots = int(numpy_helper.to_array(inits[GATE_CONSTANTS[1]]).shape[0])
    means = np.concatenate([new.means, np.repeat(new.means[:1], max(slots - len(new.means), 0), axis=0)])[: max(slots, len(new.means))]
    for name, value in gate_constants(FaultGate(means, new.coef, new.bias, new.blocks), mrel.precision).items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    r_clean = 1.0 / (1.0 + np.exp(-new.logit(hs[0], mrel.precision)))
    log.info("%s: fault gate refitted on INT8 features (%s; prototypes moved %s); clean validation below 0.5 by the gate: %.1f%%",
             path.name, ", ".join(new.blocks), ", ".join(f"{m:.2f}" for m in moved), 100 * float(np.mean(r_clean < 0.5)))
    return {"blocks": list(new.blocks), "coef": new.coef, "bias": new.bias, "prototype_moved": moved,
            "clean_below_half": float(np.mean(r_clean < 0.5))}
