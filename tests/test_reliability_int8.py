"""The INT8 engine's reliability map refit (export.reliability_int8) on a small
hand-built graph: x -> MatMul -> Add -> Sigmoid -> "reliability", the shape the
exported engines end in."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _graph(path, sigmoid: bool = True):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[2.0], [-1.0]], np.float32), "w")
    b = numpy_helper.from_array(np.array([0.5], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logit"])]
    if sigmoid:  # the engines' own form: the Sigmoid writes the output itself
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["reliability"]))
    else:  # an output some other op writes
        nodes.append(helper.make_node("Identity", ["logit"], ["reliability"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("reliability", TensorProto.FLOAT, ["n", 1])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save_model(m, str(path))
    return path


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0].reshape(-1)


def test_the_map_is_written_before_the_sigmoid_and_keeps_the_ranking(tmp_path):
    from edge_mla.export.reliability_int8 import apply_map, reliability_logits

    path = _graph(tmp_path / "e.onnx")
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    logit = x @ np.array([2.0, -1.0], np.float32) + 0.5
    (got,) = reliability_logits(path, "reliability", [x])
    np.testing.assert_allclose(got, logit, rtol=1e-5, atol=1e-5)
    before = _run(path, x)
    apply_map(path, "reliability", 0.5, 1.25)
    after = _run(path, x)
    np.testing.assert_allclose(after, 1 / (1 + np.exp(-(0.5 * logit + 1.25))), rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))  # monotone
    onnx.checker.check_model(onnx.load(str(path)))


def test_recalibrate_moves_a_drifted_level_back_and_records_it(tmp_path):
    """A drifted engine: clean inputs sit at logit -1 (r 0.27, judged unreliable),
    corrupted ones at -6. The refit map puts clean above the threshold again and
    corrupted still below it."""
    from edge_mla.export.reliability_int8 import recalibrate

    path = _graph(tmp_path / "e.onnx")
    rng = np.random.default_rng(1)

    def at(level, n):  # inputs whose logit is level + noise (2 x0 - x1 + 0.5 = level)
        x1 = rng.normal(size=n)
        x0 = (level - 0.5 + x1 + 0.3 * rng.normal(size=n)) / 2
        return np.stack([x0, x1], 1).astype(np.float32)

    clean, bad = at(-1.0, 400), [at(-6.0, 200), at(-5.0, 200)]
    assert np.mean(_run(path, clean) < 0.5) > 0.9  # the drift: a clean sensor looks degraded
    rec = recalibrate(path, "reliability", clean, bad, threshold=0.5)
    assert rec["scale"] > 0 and rec["clean"] == 400 and rec["corrupted"] == 400
    assert rec["clean_below_threshold"]["before"] > 0.9 and rec["clean_below_threshold"]["after"] < 0.05
    assert np.mean(_run(path, clean) >= 0.5) > 0.95
    assert np.mean(_run(path, np.concatenate(bad)) < 0.5) > 0.95


def test_a_graph_whose_output_is_not_a_sigmoid_is_left_alone(tmp_path):
    from edge_mla.export.reliability_int8 import apply_map, recalibrate

    path = _graph(tmp_path / "e.onnx", sigmoid=False)
    data = path.read_bytes()
    x = np.zeros((4, 2), np.float32)
    assert recalibrate(path, "reliability", x, [x], 0.5) is None
    assert path.read_bytes() == data
    with pytest.raises(ValueError, match="not produced by a Sigmoid"):
        apply_map(path, "reliability", 1.0, 0.0)


def test_a_map_that_would_reverse_the_ranking_or_no_data_leaves_the_engine_alone(tmp_path):
    """Inputs whose 'corrupted' copies score higher than the clean ones would fit a
    decreasing map; the engine keeps its FP32 map instead (and with no data, too)."""
    from edge_mla.export.reliability_int8 import recalibrate

    path = _graph(tmp_path / "e.onnx")
    data = path.read_bytes()
    rng = np.random.default_rng(2)
    clean = rng.normal(size=(100, 2)).astype(np.float32) + np.float32([-2, 2])  # logit about -5.5
    bad = [rng.normal(size=(100, 2)).astype(np.float32) + np.float32([2, -2])]  # logit about +6.5
    assert recalibrate(path, "reliability", clean, bad, 0.5) is None
    assert recalibrate(path, "reliability", clean[:0], bad, 0.5) is None
    assert recalibrate(path, "reliability", clean, [], 0.5) is None
    assert path.read_bytes() == data


def _gated_graph(path):
    """x -> (2 x0 - x1 + 0.5 =: L, 3 x0 =: G) -> Min -> Sigmoid -> "reliability": the
    shape of an engine whose fault gate caps the map's logit L."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([[2.0], [-1.0]], np.float32), "w"), numpy_helper.from_array(np.array([0.5], np.float32), "b"),
             numpy_helper.from_array(np.array([[3.0], [0.0]], np.float32), "wg")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logit"]),
             helper.make_node("MatMul", ["x", "wg"], ["gate"]), helper.make_node("Min", ["logit", "gate"], ["capped"]),
             helper.make_node("Sigmoid", ["capped"], ["reliability"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("reliability", TensorProto.FLOAT, ["n", 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save_model(m, str(path))
    return path


def test_with_a_fault_gate_the_map_rescales_the_maps_logit_and_leaves_the_gate_alone(tmp_path):
    """The Platt step reads and rescales the map's side of the Min (its own refit
    moves the gate): r = sigmoid(min(a L + b, G)), not sigmoid(a min(L, G) + b)."""
    from edge_mla.export.reliability_int8 import apply_map, reliability_logits

    path = _gated_graph(tmp_path / "g.onnx")
    x = np.random.default_rng(3).normal(size=(60, 2)).astype(np.float32)
    L = x @ np.array([2.0, -1.0], np.float32) + 0.5
    G = 3.0 * x[:, 0]
    (got,) = reliability_logits(path, "reliability", [x])
    np.testing.assert_allclose(got, L, rtol=1e-5, atol=1e-5)  # the map's logit, not the capped one
    apply_map(path, "reliability", 0.5, 1.25)
    np.testing.assert_allclose(_run(path, x), 1 / (1 + np.exp(-np.minimum(0.5 * L + 1.25, G))), rtol=1e-5, atol=1e-6)
    onnx.checker.check_model(onnx.load(str(path)))
