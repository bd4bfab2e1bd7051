"""Multiply-accumulates of an ONNX graph at batch 1, counted from its nodes.

Conv: output elements x (input channels / group) x kernel area; MatMul/Gemm: M x N x K
(batch dims included). Element-wise ops, pooling and (de)quantization are not
counted: they are memory-bound, and the MAC count is the compute a backend must do
at best. Shapes come from ONNX shape inference with the batch axis fixed to 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def count_macs(path: str | Path) -> int:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    g = model.graph
    shapes = {vi.name: _dims(vi) for vi in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {t.name: list(t.dims) for t in g.initializer}
    # A weight behind a DequantizeLinear (QDQ models) has the initializer's shape.
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            shapes.setdefault(node.output[0], inits[node.input[0]])
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes.setdefault(node.output[0], list(numpy_helper.to_array(a.t).shape))

    def shape(name: str):
        s = shapes.get(name) or inits.get(name)
        return None if s is None or any(d is None for d in s) else s

    total = 0
    for node in g.node:
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            out = shape(node.output[0])
            if w is None or out is None:
                continue
            # w is (C_out, C_in / group, kH, kW): each output element costs one
            # MAC per weight of its group, whatever the group count.
            total += int(np.prod(out)) * int(w[1]) * int(np.prod(w[2:]))
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger"):
            a, b = shape(node.input[0]), shape(node.input[1])
            if a is None or b is None:
                continue
            if node.op_type == "Gemm":
                trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
                m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
                trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
                n = b[0] if trans_b else b[1]
                total += m * n * k
            else:
                out = shape(node.output[0])
                k = a[-1]
                total += int(np.prod(out)) * k if out is not None else 0
    return int(total)
