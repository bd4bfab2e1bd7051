"""`edge-mla eval RUN_DIR`: accuracy per modality, fused, missing and corrupted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional


HELP = """\
Evaluate a run folder on the test split (or --split val): image-only, audio-only,
fused by entropy (MLA's rule), mean and sum fusion, one modality missing, and
corrupted inputs (image blacked out, audio silent, audio replaced by noise).
The dataset and seed come from the run's config.json; --data-dir overrides its data
folder. --json prints one JSON object (keys image, audio, fused, fused_mean, ...).
"""

ROWS = [
    ("image", "image only"),
    ("audio", "audio only"),
    ("fused", "fused (entropy)"),
    ("fused_mean", "fused (mean)"),
    ("fused_sum", "fused (sum)"),
    ("image_missing", "image missing"),
    ("audio_missing", "audio missing"),
    ("image_black", "image blacked out"),
    ("audio_silence", "audio silent"),
    ("audio_noise", "audio noise"),
]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[common], help="evaluate a run folder", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by 'edge-mla train'")
    p.add_argument("--data-dir", help="data folder (default: the run's, else $EDGE_MLA_DATA)")
    p.add_argument("--split", dest="eval_split", default="test", choices=["test", "val"], help="which split to score (default test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-corrupt", dest="corrupt", action="store_false", help="skip the corrupted-input passes (faster)")
    p.set_defaults(func=run)


def evaluate_run(run_dir: str, data_dir: Optional[str] = None, split_name: str = "test", corrupt: bool = True) -> dict:
    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data import load_dataset
    from edge_mla.evaluate import evaluate

    from edge_mla.manifest import load_run_config

    conf = load_run_config(run_dir)
    name = conf.need_dataset(" (which data should the run be scored on?)")
    model, payload = load_checkpoint(run_dir)
    ds = load_dataset(name, data_dir or conf.data_dir, seed=conf.seed, split=conf.split)
    res = evaluate(model, ds.split(split_name), ds.window, corrupt=corrupt)
    res.update({"split": split_name, "method": payload.get("method"), "epoch": payload.get("epoch"), "dataset": ds.name})
    return res


def format_table(res: dict) -> str:
    lines = [f"{res.get('method')} (epoch {res.get('epoch')}) on {res.get('dataset')} {res.get('split')} split, {res['n']} pairs"]
    for key, label in ROWS:
        if key in res:
            lines.append(f"  {label:<20} {100 * res[key]:6.2f}%")
    w = res.get("weights", {})
    if w:
        lines.append("  mean entropy weights: " + "; ".join(f"{case}: " + ", ".join(f"{m} {v:.2f}" for m, v in ws.items()) for case, ws in w.items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    res = evaluate_run(args.run_dir, args.data_dir, args.eval_split, args.corrupt)
    out = Path(args.run_dir) / f"{args.eval_split}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res) if args.json else format_table(res))
    return 0
