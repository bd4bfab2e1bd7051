"""Refit an INT8 engine's reliability map on its own outputs.

The reliability constants are fitted on FP32 features. Quantizing the encoder moves
those features by 1-3%, and the Mahalanobis distance amplifies that noise in the
feature directions where the clean data barely varies. The *ranking* survives
(AUROC within 0.01 of FP32), but the *level* does not: on held-out speakers 80% of
clean validation audio fell below r = 0.5 in INT8, against 2% in FP32. A
down-weighted sensor is then weighted as if it were broken.

The fix is Platt scaling of the INT8 engine's own reliability logit. The logit ``L``
is the input of the graph's final Sigmoid. The map ``r = sigmoid(a * L + b)`` is
fitted on the same kind of data as the FP32 map: clean validation inputs against
the *train* corruption families, never the held-out ones. It is then written into
the INT8 graph as a Mul and an Add before the Sigmoid. The map is monotone, so the
ranking (and AUROC) is unchanged and only the level moves back to where FP32 puts
it. The reliability subgraph is kept in float by the quantizer
(``export.quantize.side_output_nodes``), so the new nodes run in float too.
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


def reliability_logits(path: Path, output_name: str, inputs: list, batch_size: int = 256) -> Optional[list]:
    """The pre-Sigmoid reliability logit of the engine at ``path`` for each array in
    ``inputs`` (one (N,) array each), or None when the graph has no such Sigmoid."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    logit = _sigmoid_input(model, output_name)
    if logit is None:
        return None
    model.graph.output.append(onnx.helper.make_tensor_value_info(logit, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for x in inputs:
        parts = [sess.run([logit], {name: x[s : s + batch_size]})[0].reshape(-1) for s in range(0, len(x), batch_size)]
        out.append(np.concatenate(parts).astype(np.float64) if parts else np.zeros(0))
    return out


def fit_map(clean: np.ndarray, corrupted: np.ndarray) -> tuple:
    """(scale, shift) of the class-balanced logistic map from the logit to
    P(clean), the same fit as the FP32 map's (edge_mla.reliability.fit_logistic)."""
    from edge_mla.reliability import fit_logistic

    x = np.concatenate([clean, corrupted])[:, None]
    coef, bias = fit_logistic(x, np.r_[np.ones(len(clean)), np.zeros(len(corrupted))])
    return float(coef[0]), float(bias)


def apply_map(path: Path, output_name: str, scale: float, shift: float) -> None:
    """Rewrite the engine at ``path`` so that its Sigmoid reads ``scale * L + shift``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    logit = _sigmoid_input(model, output_name)
    if logit is None:
        raise ValueError(f"{path}: output {output_name!r} is not produced by a Sigmoid")
    sig = next(n for n in model.graph.node if output_name in n.output)
    names = {"scale": f"{output_name}_int8_scale", "shift": f"{output_name}_int8_shift", "mul": f"{output_name}_int8_scaled", "add": f"{output_name}_int8_logit"}
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), names["scale"]),
                                    numpy_helper.from_array(np.array(shift, np.float32), names["shift"])])
    mul = helper.make_node("Mul", [logit, names["scale"]], [names["mul"]], name=names["mul"])
    add = helper.make_node("Add", [names["mul"], names["shift"]], [names["add"]], name=names["add"])
    sig.input[0] = names["add"]
    nodes = list(model.graph.node)
    at = nodes.index(sig)
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
