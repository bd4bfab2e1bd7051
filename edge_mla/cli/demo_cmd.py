"""`edge-mla demo`: the whole path on built-in data (what `make demo` runs)."""

from __future__ import annotations

import argparse

HELP = """\
Run the whole edge-mla path on the built-in demo data, about 5-10 minutes on 2 CPU
cores: build the demo dataset (scikit-learn digits + eSpeak NG synthetic speech),
train MLA (tiny preset), export ONNX engines with --int8 auto, record a replay
session with scripted sensor faults (camera gone, mic gone, black and frozen
frames, silent mic), run the streaming runtime on it in real time, and report
accuracy per fault span, fusion weights, latency per stage, and a timeline picture.
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="end-to-end demo on built-in data", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-out", help="folder for every artefact (default demo-out)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--limit", type=int, help="training pairs (default: all)")
    p.add_argument("--segments", type=int, default=30, help="replay segments (default 30)")
    p.add_argument("--segment-seconds", type=float, default=3.0, help="seconds per replay segment (default 3)")
    p.add_argument("--int8", default="auto", choices=["off", "on", "auto"], help="INT8 export mode (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--force", action="store_true", help="redo the demo in a non-empty folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_mla.demo import DemoConfig, format_report, run_demo

    cfg = DemoConfig(out=args.out, epochs=args.epochs, limit=args.limit, segments=args.segments, segment_seconds=args.segment_seconds,
                     int8=args.int8, seed=args.seed, force=args.force, progress=not args.no_progress)
    result = run_demo(cfg)
    print()
    print(format_report(result))
    return 0
