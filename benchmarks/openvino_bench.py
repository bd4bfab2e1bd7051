"""Does OpenVINO's own runtime beat ONNX Runtime on this CPU for edge-mla's engines?

Issue 9 asks to offer OpenVINO only if it is faster. This reads the same ONNX files
(FP32 and INT8 QDQ) from one or more engine folders and times ONNX Runtime (the
runtime's own OrtRunner) against OpenVINO (CPU plugin, f32 inference precision so
"FP32" really is FP32, LATENCY hint, the same number of threads), interleaved call
by call in one process, so machine load hits both alike. Reports the median per
backend and the OpenVINO/ONNX Runtime p50 ratio (< 1: OpenVINO faster), and the max
|logit difference| between the two as a sanity check.

OpenVINO is not a project dependency (the runtime does not use it):

    .venv/bin/pip install openvino==2026.4.1
    nice -n 5 .venv/bin/python benchmarks/openvino_bench.py \\
        --engines tiny=bench-out/tiny/engines --engines resnet18=bench-out/r18/engines \\
        --batches 1 8 --threads 1 --repeats 200 --out bench-out/openvino.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def openvino_compiled(path: Path, batch: int, threads: int, input_shape: list, input_name: str):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({input_name: [batch] + [int(d) for d in input_shape[1:]]})  # static shapes: OpenVINO's fast path
    cfg = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    out = compiled.outputs[0]

    def run(x: np.ndarray) -> np.ndarray:
        return req.infer({input_name: x})[out]

    return run


def time_pair(fns: list, x: np.ndarray, warmup: int, repeats: int) -> list:
    for _ in range(warmup):
        for f in fns:
            f(x)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t = time.perf_counter_ns()
            f(x)
            times[i].append((time.perf_counter_ns() - t) / 1e6)
    return [float(np.median(t)) for t in times]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", action="append", required=True, metavar="NAME=DIR", help="an engine folder, named (repeatable)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    try:
        import openvino as ov
    except ImportError:
        print("openvino_bench: OpenVINO is not installed (pip install openvino==2026.4.1)", file=sys.stderr)
        return 2
    from edge_mla.manifest import load_manifest
    from edge_mla.runtime.backends import OrtRunner
    from edge_mla.runtime.profiling.engines import example_input, machine_info

    rng = np.random.default_rng(0)
    rows = []
    for spec in args.engines:
        name, _, folder = spec.partition("=")
        man = load_manifest(folder)
        for mod, e in man.data["engines"].items():
            variants = {k: v for k, v in e.get("variants", {}).items() if str(v.get("file", "")).endswith(".onnx")}
            for prec, var in variants.items():
                path = man.root / var["file"]
                for b in args.batches:
                    x = example_input(e, b, rng)
                    for th in args.threads:
                        ort = OrtRunner(path, th)
                        ovr = openvino_compiled(path, b, th, e["input"]["shape"], e["input"]["name"])
                        diff = float(np.max(np.abs(ort.run1(x) - ovr(x))))
                        t_ort, t_ov = time_pair([ort.run1, ovr], x, args.warmup, args.repeats)
                        row = {"engines": name, "modality": mod, "precision": prec, "batch": b, "threads": th, "ort_p50_ms": round(t_ort, 4), "openvino_p50_ms": round(t_ov, 4), "openvino_over_ort": round(t_ov / t_ort, 3), "max_abs_logit_diff": round(diff, 5)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    result = {"machine": machine_info(), "openvino": ov.__version__, "repeats": args.repeats, "rows": rows}
    print("\n| engines | modality | precision | batch | threads | ONNX Runtime p50 ms | OpenVINO p50 ms | OpenVINO / ORT | max logit diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engines']} | {r['modality']} | {r['precision']} | {r['batch']} | {r['threads']} | {r['ort_p50_ms']:.3f} | {r['openvino_p50_ms']:.3f} | {r['openvino_over_ort']:.2f}x | {r['max_abs_logit_diff']:.2g} |")
    print(f"\nmachine: {result['machine']}; OpenVINO {ov.__version__}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
