"""`edge-mla profile ENGINE_DIR`: latency per engine, backend, precision; and with
--runtime, per stage of the real streaming runtime. Needs only the runtime extra."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Measure each engine of ENGINE_DIR under each available backend and precision
(ONNX Runtime FP32/INT8; PyTorch eager when torch and the run folder are there;
TensorRT on a Jetson): warm-up excluded, min/p50/p90/p99/max over many runs, at
batch 1 and a chosen batch, for each thread count; MACs counted from the ONNX
graph and the achieved GMAC/s. Ratios (INT8/FP32, torch/ORT) come from this one run.

With --runtime, also run the real runtime for --duration seconds (on a recorded
replay of the demo test split unless --camera/--mic are given) and report latency
per stage: capture -> preprocess -> engine -> fusion -> output, end to end, drops,
CPU and peak memory.

Writes ENGINE_DIR/profile.json and profile.png (or --out DIR).

examples:
  edge-mla profile engines/
  edge-mla profile engines/ --batch 1 16 --threads 1 2 --repeats 500
  edge-mla profile engines/ --runtime --duration 30
  edge-mla profile engines/ --runtime --camera 0 --mic default
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("profile", parents=[common], help="latency per engine, precision and runtime stage", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engines", metavar="ENGINE_DIR", help="folder written by 'edge-mla export'")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts (default 1 2)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per configuration (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs (default 20)")
    p.add_argument("--precision", nargs="+", choices=["fp32", "int8"], help="only these precisions (default: every variant)")
    p.add_argument("--backend", nargs="+", default=["onnxruntime", "torch", "tensorrt"], choices=["onnxruntime", "torch", "tensorrt"], help="backends to try")
    p.add_argument("--run-dir", help="run folder for PyTorch eager timings (default: the manifest's)")
    p.add_argument("--runtime", action="store_true", help="also profile the streaming runtime per stage")
    p.add_argument("--duration", type=float, default=20.0, help="--runtime: seconds to run (default 20)")
    p.add_argument("--camera", help="--runtime: a camera (index, file, URL) instead of the replay")
    p.add_argument("--mic", help="--runtime: a microphone (default, index, name, WAV) instead of the replay")
    p.add_argument("--dataset", default="demo", help="--runtime: dataset the replay is recorded from (default demo)")
    p.add_argument("--data-dir", help="--runtime: data folder for the replay dataset")
    p.add_argument("--out", help="folder for profile.json and profile.png (default ENGINE_DIR)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of tables")
    p.add_argument("--no-plot", action="store_true", help="do not draw profile.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_mla.errors import EdgeMlaError
    from edge_mla.validate import no_links_under, writable_location
    from edge_mla.runtime.profiling.engines import ProfileConfig, profile_engines, save_json
    from edge_mla.runtime.profiling.report import engine_table, plot_profile, runtime_table

    cfg = ProfileConfig(
        engines=Path(args.engines), batches=args.batch, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        backends=args.backend, precisions=args.precision, run_dir=Path(args.run_dir) if args.run_dir else None,
    )
    extra = []
    if "torch" in args.backend:
        from edge_mla.torch_timing import torch_eager_timings  # imports torch only when called

        extra.append(torch_eager_timings)
    if not Path(args.engines).is_dir():
        raise EdgeMlaError(f"{args.engines}: engine folder not found")
    out = Path(args.out or args.engines)
    # every option and the output folder checked before minutes of timing
    if out.exists() and not out.is_dir():
        raise EdgeMlaError(f"--out {out}: exists and is not a folder")
    writable_location(out / "profile.json", "--out")
    no_links_under(out, ("profile.json", "profile.png", "profile-replay"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeMlaError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    rcfg = None
    if args.runtime:
        from edge_mla.runtime.profiling.runtime_profile import RuntimeProfileConfig

        rcfg = RuntimeProfileConfig(
            engines=Path(args.engines), camera=args.camera, mic=args.mic, duration=args.duration,
            precision=(args.precision or [None])[0] if args.precision and len(args.precision) == 1 else None,
            dataset=args.dataset, data_dir=args.data_dir, workdir=out / "profile-replay",
        )
    result = profile_engines(cfg, extra_backends=extra)
    if rcfg is not None:
        from edge_mla.runtime.profiling.runtime_profile import profile_runtime

        result["runtime"] = profile_runtime(rcfg)
    save_json(result, out / "profile.json")
    if not args.no_plot:
        try:
            plot_profile(result, out / "profile.png")
        except ImportError:
            pass  # matplotlib is not part of the runtime extra
    if args.json:
        print(json.dumps(result))
    else:
        print(engine_table(result))
        if "runtime" in result:
            print(runtime_table(result["runtime"]))
        print(f"written: {out / 'profile.json'}" + ("" if args.no_plot else f", {out / 'profile.png'}"))
    return 0
