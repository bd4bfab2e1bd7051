"""`edge-mla eval RUN_DIR`: accuracy per modality, fused, missing and corrupted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Evaluate a run folder on the test split (or --split val): image-only, audio-only,
fused by entropy (MLA's rule), mean and sum fusion, one modality missing, and
corrupted inputs (image blacked out, audio silent, audio replaced by noise).
The dataset and seed come from the run's config.json; --data-dir overrides its data
folder. --json prints one JSON object (keys image, audio, fused, fused_mean, ...);
the same object is kept in RUN_DIR/SPLIT.json (SPLIT-limitN.json with --limit).

Unless --no-corrupt, the corruption suite runs too (edge_mla/corruptions.py: train
and held-out families, 3 severities each) with the training method's fusion rule
gated by the per-modality reliability signal (--signal; fitted on the validation
split and cached in RUN_DIR/reliability.json). The JSON then carries
"corruptions": {name: {"modality", "held_out", "image", "audio", "fused", "regret"}},
"corruption_summary", "ece" per modality and "reliability" (AUROC clean vs corrupted).
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
    p.add_argument("--no-corrupt", dest="corrupt", action="store_false", help="skip the corrupted-input passes and the corruption suite (faster)")
    p.add_argument("--no-suite", dest="suite", action="store_false", help="skip the corruption suite only (keep the three legacy corrupted-input passes)")
    p.add_argument("--signal", default=None, help="reliability signal: msp, energy, mahalanobis, energy+mahalanobis (default: the chosen one)")
    p.add_argument("--refit-reliability", action="store_true", help="refit the reliability constants even if RUN_DIR/reliability.json exists")
    p.add_argument("--limit", type=int, default=0, help="score a stratified subset of this many pairs (0: all); the result goes to RUN_DIR/SPLIT-limitN.json, not SPLIT.json")
    p.set_defaults(func=run)


def format_table(res: dict) -> str:
    lines = [f"{res.get('method')} (epoch {res.get('epoch')}) on {res.get('dataset')} {res.get('split')} split, {res['n']} pairs"]
    for key, label in ROWS:
        if key in res:
            lines.append(f"  {label:<20} {100 * res[key]:6.2f}%")
    w = res.get("weights", {})
    if w:
        lines.append("  mean entropy weights: " + "; ".join(f"{case}: " + ", ".join(f"{m} {v:.2f}" for m, v in ws.items()) for case, ws in w.items()))
    if "corruptions" in res:
        rel = res["reliability"]
        w = f", weight x r^{rel['power']:g}" if rel.get("power") is not None else ""
        if rel.get("power") and any(v != 1.0 for v in rel.get("reference", {}).values()):
            w = f", weight x min(1, r / reference)^{rel['power']:g}, reference " + ", ".join(f"{m} {v:.2f}" for m, v in rel["reference"].items())
        lines.append(f"  fused ({res['rule']} + reliability {rel['signal']}{w}) {100 * res['fused_reliable']:6.2f}% clean, ({res['rule']} alone) {100 * res['fused_rule']:6.2f}%")
        for part, s in res["corruption_summary"].items():
            lines.append(f"  {part} corruptions: regret mean {s['mean_regret']:.1f} / worst {s['worst_regret']:.1f} points ({s['worst']}); without reliability {s['mean_regret_base']:.1f} / {s['worst_regret_base']:.1f}")
        if rel.get("fault_gate"):
            lines.append("  fault gate (known faults the distance misses): " + "; ".join(f"{m}: {', '.join(b)}" for m, b in rel["fault_gate"].items()))
        lines.append("  reliability AUROC clean vs corrupted: " + "; ".join(f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in a.items()) for m, a in rel["auroc"].items()))
        lines.append("  ECE: " + "; ".join(f"{m} {e['raw']:.3f} raw, {e['calibrated']:.3f} at T={e['temperature']:.2f}"
                                         + (f" (a calibrated encoder scores {e['floor']:.3f} on these {e['distinct']} inputs)" if "floor" in e else "")
                                         for m, e in res["ece"].items()))
    return "\n".join(lines)


def result_path(run_dir: Path, split: str, limit: int) -> Path:
    """Where eval keeps its result in the run folder: SPLIT.json for the whole split
    (the file train writes), SPLIT-limitN.json for a --limit subset, so a quick
    look never replaces the full figures."""
    return Path(run_dir) / (f"{split}.json" if not limit else f"{split}-limit{limit}.json")


def run(args: argparse.Namespace) -> int:
    from edge_mla.errors import EdgeMlaError
    from edge_mla.evaluate import evaluate_run
    from edge_mla.staging import replace_file

    out = result_path(args.run_dir, args.eval_split, args.limit)
    if out.is_dir() and not out.is_symlink():  # checked before minutes of evaluation
        raise EdgeMlaError(f"{out}: is a folder; eval writes its result there (remove it)")
    res = evaluate_run(args.run_dir, args.data_dir, args.eval_split, args.corrupt, args.signal, args.refit_reliability, args.limit, args.suite)
    text = json.dumps(res, indent=2) + "\n"
    replace_file(out, lambda tmp: tmp.write_text(text), "the result")  # a link at ``out`` is replaced, not written through
    print(json.dumps(res) if args.json else format_table(res))
    return 0
