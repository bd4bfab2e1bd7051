"""A torch-free engine folder in a fraction of a second: one linear ONNX graph per
modality with seeded random weights and a manifest in the schema of
``edge_mla.manifest``.

Why: bad-input tests and the fault-loop benchmark exercise the runtime's plumbing
(manifest checks, sensors, outputs, shutdown), not accuracy, so they need engines
that load and run, not trained ones. Building them needs only the runtime extra
(``onnx``), no training and no dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = [str(i) for i in range(10)]
IMAGE_SIZE = 28
SAMPLE_RATE = 8000
WINDOW = 8000


def _linear_model(path: Path, name: str, feat_shape: list, n_in: int, n_out: int, seed: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((n_in, n_out)) * 0.05).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(n_out, np.float32), "b")
    nodes = [
        helper.make_node("Flatten", [name], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, f"tiny_{name}",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *feat_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-mla-tests")
    model.ir_version = 8
    onnx.save_model(model, str(path))


def build_tiny_engines(out: str | Path, seed: int = 0) -> Path:
    """Write image.fp32.onnx, audio.fp32.onnx and manifest.json into ``out``."""
    from edge_mla.manifest import sha256_of, write_manifest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    engines = {}
    specs = {"image": ([1, IMAGE_SIZE, IMAGE_SIZE], IMAGE_SIZE * IMAGE_SIZE), "audio": ([WINDOW], WINDOW)}
    for i, (mod, (shape, n_in)) in enumerate(specs.items()):
        f = out / f"{mod}.fp32.onnx"
        _linear_model(f, mod, shape, n_in, len(CLASSES), seed + i)
        sha = sha256_of(f)
        e = {
            "file": f.name, "precision": "fp32", "sha256": sha, "format": "onnx",
            "input": {"name": mod, "shape": ["batch", *shape], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", len(CLASSES)], "dtype": "float32"},
            "variants": {"fp32": {"file": f.name, "sha256": sha, "format": "onnx"}},
        }
        if mod == "image":
            e["image"] = {"size": IMAGE_SIZE, "colour": "grey", "range": [0.0, 1.0]}
        else:
            e["audio"] = {"sample_rate": SAMPLE_RATE, "window": WINDOW, "dtype": "float32"}
        engines[mod] = e
    write_manifest(out, {"edge_mla_version": "0.1.0", "model": {"preset": "linear", "method": "test-fixture"}, "classes": CLASSES, "fusion": {"rule": "entropy"}, "engines": engines})
    return out
