"""`edge-mla doctor`: what this machine has for the runtime (OK/WARN/FAIL per line).

Exit status 0 when nothing FAILs, 1 otherwise (a script or a deployment check can
test it).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "doctor",
        parents=[common],
        help="check this machine for the runtime: sensors, ONNX Runtime, TensorRT, CPU, disk, engines",
        description="Cameras and microphones found, ONNX Runtime providers, TensorRT version, CPU features (VNNI), "
        "free disk for clips, and what the engine folder would run on; one OK/WARN/FAIL line each.",
    )
    p.add_argument("--engines", metavar="DIR", help="engine folder to check (manifest, hashes, where it would run)")
    p.add_argument("--clips", metavar="DIR", default=".", help="where clips would be written (default: the current folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_mla.runtime.doctor import FAIL, run_checks

    checks = run_checks(Path(args.engines) if args.engines else None, Path(args.clips))
    for c in checks:
        print(c.line(), flush=True)
    return 1 if any(c.status == FAIL for c in checks) else 0
