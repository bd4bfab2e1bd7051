"""FP32 vs INT8 ONNX Runtime engines per preset and calibration method.

For each trained run (tiny, resnet18) and each calibration method it runs the real
export (edge_mla.export.export_run, --int8 on) and collects, per engine: validation
accuracy FP32/INT8, batch-1 single-thread median latency FP32/INT8 measured
interleaved in one process, their ratio, and the fused (entropy) accuracy.
Results: a JSON file and a markdown table (pasted into BENCHMARKS.md).

    nice -n 5 .venv/bin/python benchmarks/export_bench.py \\
        --run tiny=bench-out/export-runs/avmnist-tiny \\
        --run resnet18=bench-out/export-runs/avmnist-resnet18 \\
        --eval-limit 2000 --latency-repeats 200 --out bench-out/export-bench
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("export_bench")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def bench_one(name: str, run: Path, method: str, args) -> dict:
    from edge_mla.export.pipeline import ExportConfig, export_run

    out = args.out / f"{name}-{method}"
    t0 = time.time()
    res = export_run(
        ExportConfig(
            run_dir=run, out=out, int8="on", calib_method=method, calib_size=args.calib_size, force=True,
            eval_limit=args.eval_limit, latency_repeats=args.latency_repeats, reduce_range=args.reduce_range,
            activations=args.activations, progress=not args.no_progress,
        )
    )
    row = {"preset": name, "run": str(run), "method": method, "activations": res.manifest["int8"]["symmetric_activations"] and "symmetric" or "asymmetric", "seconds": round(time.time() - t0, 1), "engines": {}, "fused": res.gate["fused"], "samples": res.gate["samples"]}
    for mod, g in res.gate["engines"].items():
        row["engines"][mod] = {
            "fp32_acc": g["fp32"]["accuracy"], "int8_acc": g["int8"]["accuracy"],
            "fp32_ms": g["fp32"]["latency"]["median_ms"], "int8_ms": g["int8"]["latency"]["median_ms"],
            "speedup": g["int8"]["speedup"], "flags": g["int8"]["flags"],
        }
    log.info("%s %s done in %.0f s", name, method, row["seconds"])
    return row


def markdown(rows: list) -> str:
    lines = [
        "| preset | calib | activations | engine | FP32 acc | INT8 acc | Δ points | FP32 ms | INT8 ms | INT8 speed-up | flagged |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        for mod, e in r["engines"].items():
            lines.append(
                f"| {r['preset']} | {r['method']} | {r.get('activations', 'symmetric')} | {mod} | {100 * e['fp32_acc']:.2f}% | {100 * e['int8_acc']:.2f}% | "
                f"{100 * (e['int8_acc'] - e['fp32_acc']):+.2f} | {e['fp32_ms']:.3f} | {e['int8_ms']:.3f} | {e['speedup']:.2f}x | {'; '.join(e['flags']) or '-'} |"
            )
        f = r["fused"]
        lines.append(f"| {r['preset']} | {r['method']} | {r.get('activations', 'symmetric')} | **fused** | {100 * f['fp32']:.2f}% | {100 * f['int8']:.2f}% | {100 * (f['int8'] - f['fp32']):+.2f} | | | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR", help="a trained run folder (repeatable)")
    ap.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    ap.add_argument("--calib-size", type=int, default=300)
    ap.add_argument("--eval-limit", type=int, default=2000, help="validation pairs per gate (0: all)")
    ap.add_argument("--latency-repeats", type=int, default=200)
    ap.add_argument("--reduce-range", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--activations", default="auto", choices=["auto", "symmetric", "asymmetric"], help="INT8 activations (auto: asymmetric, the ONNX Runtime CPU default)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/export-bench"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    import signal

    def on_term(signum, frame):  # let the export remove its temporary folder
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(s.split("=", 1)[0], Path(s.split("=", 1)[1])) for s in args.run]
    rows = []
    for name, run in runs:
        for method in args.methods:
            rows.append(bench_one(name, run, method, args))
            (args.out / "results.json").write_text(json.dumps({"cpu": cpu_model(), "argv": sys.argv, "rows": rows}, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "results.md").write_text(f"Machine: {cpu_model()}\n\n{table}\n")
    print(f"Machine: {cpu_model()}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
