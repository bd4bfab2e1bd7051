"""`edge-mla export RUN_DIR`: engines + manifest.json from a trained run.

Flags map one to one onto edge_mla.export.pipeline.ExportConfig; this module only
parses, calls export_run and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export one engine per modality (ONNX FP32/INT8, TensorRT) + manifest.json"

EPILOG = """\
examples:
  edge-mla export runs/demo-mla                 FP32 ONNX engines in runs/demo-mla/engines
  edge-mla export runs/demo-mla --int8          + calibrated INT8 (QDQ), shipped as default
  edge-mla export runs/demo-mla --int8 auto     keep INT8 only where it is accurate and faster
  edge-mla export RUN --int8 --engine trt       + TensorRT plans (or build_engines.sh without TensorRT)
"""


def register(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("export", parents=[common], help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by 'edge-mla train' (checkpoint.pt, config.json)")
    p.add_argument("--out", default=None, help="engine folder (default RUN_DIR/engines)")
    p.add_argument("--int8", nargs="?", const="on", default="off", choices=["off", "on", "auto"],
                   help="INT8 engines: on (bare --int8) ships INT8, auto keeps INT8 per engine only if it loses <= --tolerance points and is faster (default off)")
    p.add_argument("--calib-method", default="percentile", choices=["minmax", "entropy", "percentile"], help="calibration range method: percentile (99.999th, clips outliers; measured most accurate here), minmax, entropy (KL, slowest) (default percentile)")
    p.add_argument("--calib-size", type=int, default=300, help="calibration samples per modality, stratified by class (default 300)")
    p.add_argument("--calib-data", default=None, help="calibrate on this folder dataset (pairs.csv) or .npz (image, audio arrays) instead of the run's training split")
    p.add_argument("--engine", default="onnx", choices=["onnx", "trt"], help="trt: also TensorRT plans (or build_engines.sh where TensorRT is absent) (default onnx)")
    p.add_argument("--modalities", nargs="+", default=None, metavar="NAME", help="engines to export (default: every modality of the model)")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points INT8 may lose before it is flagged (default 1.0)")
    p.add_argument("--force", action="store_true", help="replace an existing engine folder")
    p.add_argument("--dataset", default=None, choices=["avmnist", "demo", "folder"], help="data for parity/calibration/gate (default: the run's config.json)")
    p.add_argument("--data-dir", default=None, help="data folder for --dataset (default: the run's)")
    p.add_argument("--eval-limit", type=int, default=0, help="validation pairs the gate scores (default 0: all)")
    p.add_argument("--latency-repeats", type=int, default=200, help="timed batch-1 runs per engine for the median (default 200)")
    p.add_argument("--reduce-range", default="auto", choices=["auto", "on", "off"],
                   help="7-bit INT8 weights: auto = on where this x86 CPU lacks VNNI (8-bit weights saturate ONNX Runtime's int16 accumulation there) (default auto)")
    p.add_argument("--int8-activations", default="auto", choices=["auto", "symmetric", "asymmetric"],
                   help="INT8 activations: symmetric int8 (zero point 0, what TensorRT needs) or asymmetric uint8 (ONNX Runtime CPU fuses it much better); auto = symmetric with --engine trt, else asymmetric (default auto)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the dynamo exporter's own; ONNX Runtime and TensorRT 10 accept it; TensorRT 8.6 needs 17 with --exporter torchscript)")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"], help="torch ONNX exporter (default auto: dynamo, else TorchScript)")
    p.add_argument("--max-batch", type=int, default=8, help="TensorRT optimisation profile max batch (default 8)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MiB (default 1024)")
    p.add_argument("--dla-core", type=int, default=None, help="TensorRT: build INT8 plans for this DLA core (GPU fallback on)")
    p.add_argument("--trt-cache-version", type=int, default=8601,
                   help="TensorRT version in the calibration cache header, e.g. 8601 (8.6.1), 100300 (10.3.0); build_engines.sh hands trtexec a copy stamped with the device's version (default 8601)")
    p.add_argument("--reliability", default="auto", help="second engine output: auto (the default signal), off, or msp, energy, mahalanobis, energy+mahalanobis; constants fitted on the validation split (cached in RUN_DIR/reliability.json) (default auto)")
    from edge_mla.export.pipeline import INT8_RELIABILITY

    p.add_argument("--int8-reliability", default=INT8_RELIABILITY[0], choices=INT8_RELIABILITY,
                   help="the INT8 engines' reliability map: refit = Platt-refit on the INT8 engine's own outputs (clean validation vs the train corruption families), "
                        "so quantization noise does not make a clean sensor look degraded; fp32 = the FP32 constants as they are (default refit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _path(value):
    """Paths stay strings through argparse: Path("") is ".", and main() refuses ""."""
    return None if value is None else Path(value)


def run(args: argparse.Namespace) -> int:
    from edge_mla.export.pipeline import ExportConfig, export_run

    cfg = ExportConfig(
        run_dir=Path(args.run_dir), out=_path(args.out), int8=args.int8, calib_method=args.calib_method, calib_size=args.calib_size,
        calib_data=_path(args.calib_data), engine=args.engine, modalities=args.modalities, tolerance=args.tolerance, force=args.force,
        dataset=args.dataset, data_dir=args.data_dir, eval_limit=args.eval_limit, latency_repeats=args.latency_repeats,
        reduce_range=args.reduce_range, activations=args.int8_activations, opset=args.opset, exporter=args.exporter, max_batch=args.max_batch, workspace_mb=args.workspace_mb,
        dla_core=args.dla_core, trt_cache_version=args.trt_cache_version, reliability=args.reliability, int8_reliability=args.int8_reliability, progress=not args.no_progress,
    )
    res = export_run(cfg)  # SIGTERM -> KeyboardInterrupt (cli.main): the temporary folder is removed
    print(res.table)
    fused = res.gate.get("fused", {})
    if fused:
        print(f"fused ({res.gate.get('rule', 'entropy')}) accuracy: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in fused.items()))
    if res.gate.get("fused_reliable"):
        print("fused with reliability weighting: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in res.gate["fused_reliable"].items()))
    for prec, a in res.gate.get("reliability_auroc", {}).items():
        print(f"reliability AUROC clean vs held-out corruptions ({prec}): " + ", ".join(f"{m} {v:.3f}" for m, v in a.items()))
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"engines: {res.out} ({', '.join(f'{m}={p}' for m, p in res.chosen.items())}); manifest: {res.out / 'manifest.json'}")
    return 0
