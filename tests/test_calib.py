"""Calibration: stratified selection, readers, TensorRT cache write/parse, and the
cache of a real export matching the scales in its QDQ model."""

from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest

from edge_mla.calib.readers import ArrayCalibrationReader
from edge_mla.calib.select import stratified_indices
from edge_mla.calib.trt_cache import CalibrationCacheError, format_trt_cache, parse_trt_cache, write_trt_cache
pytest_plugins = ["export_fixtures"]


def test_stratified_selection_is_proportional_deterministic_and_covers_classes():
    rng = np.random.default_rng(1)
    labels = np.concatenate([np.full(900, 0), np.full(90, 1), np.full(10, 2)])
    rng.shuffle(labels)
    idx = stratified_indices(labels, 100, seed=3)
    assert len(idx) == 100 and len(set(idx)) == 100
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [90, 9, 1]
    assert np.array_equal(idx, stratified_indices(labels, 100, seed=3))
    assert not np.array_equal(idx, stratified_indices(labels, 100, seed=4))
    # tiny sizes still see every class; sizes beyond the data return all of it
    assert set(labels[stratified_indices(labels, 3, 0)]) == {0, 1, 2}
    assert len(stratified_indices(labels, 5000, 0)) == 1000
    with pytest.raises(ValueError):
        stratified_indices(labels, 0)


def test_reader_batches_everything_and_rewinds():
    data = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    r = ArrayCalibrationReader("x", data, batch_size=4)
    got = []
    while (b := r.get_next()) is not None:
        got.append(b["x"])
    # equal batches (ORT's histogram calibrators stack them): 10 = 5 + 5, not 4 + 4 + 2
    assert [g.shape[0] for g in got] == [2] * 5 and len(r) == 5
    assert np.array_equal(np.concatenate(got), data)
    assert r.get_next() is None
    r.rewind()
    assert np.array_equal(r.get_next()["x"], data[:2])
    with pytest.raises(ValueError):
        ArrayCalibrationReader("x", np.zeros((0, 3), np.float32))


def test_trt_cache_round_trip(tmp_path):
    scales = {"image": 0.0078125, "/encoders/conv_1/Conv_output_0": 0.123456789, "odd:name": 3.5e-5}
    path = write_trt_cache(tmp_path / "c.cache", scales, trt_version=8601)
    header, back = parse_trt_cache(path)
    assert header == "TRT-8601-EntropyCalibration2"
    assert list(back) == list(scales)
    for k, v in scales.items():
        assert back[k] == np.float32(v)  # exact float32 round trip
    # the hex is the big-endian float32, as TensorRT writes it
    line = path.read_text().splitlines()[1]
    assert line == "image: " + struct.pack(">f", 0.0078125).hex() == "image: 3c000000"
    assert parse_trt_cache(format_trt_cache(scales))[1] == back


@pytest.mark.parametrize("text", ["", "not a cache\n", "TRT-8601-EntropyCalibration2\nimage 3c000000\n", "TRT-8601-EntropyCalibration2\nimage: zz\n"])
def test_trt_cache_parser_rejects_garbage(text, tmp_path):
    p = tmp_path / "bad.cache"
    p.write_text(text)
    with pytest.raises(CalibrationCacheError):
        parse_trt_cache(p)


def test_trt_cache_refuses_bad_scales():
    with pytest.raises(ValueError):
        format_trt_cache({"x": 0.0})
    with pytest.raises(ValueError):
        format_trt_cache({"x": float("nan")})


def test_exported_cache_matches_the_qdq_scales(exported):
    """The cache a Jetson builds from holds the very scales the QDQ engine uses, for
    tensors of the shipped FP32 graph, and they are symmetric amax/127 scales."""
    from edge_mla.export.quantize import activation_scales

    for mod in ("image", "audio"):
        header, cache = parse_trt_cache(exported.out / f"{mod}.calib.cache")
        assert header.startswith("TRT-") and header.endswith("EntropyCalibration2")
        q = onnx.load(str(exported.out / f"{mod}.int8.onnx"))
        used = activation_scales(q)
        assert used and set(cache) == set(used)
        for name, s in used.items():
            assert cache[name] == np.float32(s)
        # every activation zero point is 0 (TensorRT needs symmetric quantization)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
        for n in q.graph.node:
            if n.op_type == "QuantizeLinear" and n.input[0] in cache and len(n.input) > 2:
                assert np.all(inits[n.input[2]] == 0)
        # names refer to tensors of the FP32 engine (the graph trtexec parses with --calib)
        f = onnx.load(str(exported.out / f"{mod}.fp32.onnx"))
        tensors = {i.name for i in f.graph.input} | {o for n in f.graph.node for o in n.output}
        assert set(cache) <= tensors
        if mod == "audio":
            assert mod not in cache  # the front end (from the raw PCM on) stays float


def test_calibration_sources_from_npz(tmp_path):
    from edge_mla.calib.sources import from_npz, from_path
    from edge_mla.errors import EdgeMlaError
    from edge_mla.models import ModelConfig

    cfg = ModelConfig(preset="tiny")
    rng = np.random.default_rng(0)
    p = tmp_path / "c.npz"
    np.savez(p, image=(rng.random((50, 28, 28)) * 255).astype(np.uint8), audio=rng.standard_normal((50, 6000)).astype(np.float32) * 0.1, label=np.arange(50) % 10)
    cs = from_path(p, ["image", "audio"], cfg, size=20)
    assert cs.inputs["image"].shape == (20, 1, 28, 28) and cs.inputs["image"].max() <= 1.0
    assert cs.inputs["audio"].shape == (20, 8000) and cs.inputs["audio"].dtype == np.float32
    assert np.bincount(cs.labels, minlength=10).tolist() == [2] * 10
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((5, 32, 32), np.float32))
    with pytest.raises(EdgeMlaError, match="shape"):
        from_npz(bad, ["image"], cfg, 5)
    with pytest.raises(EdgeMlaError, match="no array named audio"):
        from_npz(bad, ["audio"], cfg, 5)
    # arrays that are not per-example numbers: one line, not an IndexError / ValueError
    for name, arr, needle in [("scalar", np.float32(1), "is a single value"), ("strings", np.array([["a"] * 28] * 28 * 5).reshape(5, 28, 28), "holds <U1 values"),
                              ("bools", np.zeros((5, 28, 28), bool), "holds bool values"), ("complex", np.zeros((5, 28, 28), np.complex64), "holds complex64 values")]:
        f = tmp_path / f"{name}.npz"
        np.savez(f, image=arr, audio=np.zeros((5, 8000), np.float32))
        with pytest.raises(EdgeMlaError, match=needle):
            from_npz(f, ["image", "audio"], cfg, 5)
        np.savez(f, image=np.zeros((5, 28, 28), np.float32), audio=arr if name != "strings" else np.array([["a"] * 8000] * 5))
        with pytest.raises(EdgeMlaError, match="array 'audio'"):
            from_npz(f, ["image", "audio"], cfg, 5)
    f = tmp_path / "labels.npz"
    np.savez(f, image=np.zeros((5, 28, 28), np.float32), audio=np.zeros((5, 8000), np.float32), label=np.zeros((5, 2), int))
    with pytest.raises(EdgeMlaError, match=r"label has shape \(5, 2\), expected \(5,\)"):  # an IndexError before
        from_npz(f, ["image", "audio"], cfg, 5)
    np.savez(f, image=np.zeros((5, 28, 28), np.float32), audio=np.zeros((5, 0), np.float32))
    with pytest.raises(EdgeMlaError, match=r"audio has shape \(5, 0\)"):  # calibrated INT8 on silence before
        from_npz(f, ["image", "audio"], cfg, 5)
