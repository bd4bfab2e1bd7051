"""Benchmark of the training methods on the AV-MNIST protocol (BENCHMARKS.md, issues 2 and 12).

Trains every method variant for several seeds on one or both audio splits, evaluates
each best-on-validation checkpoint on the test split with `edge-mla eval`, and writes
a markdown table of mean +- std. Resumable: a run whose test.json exists is reused.

  python benchmarks/train_bench.py --data-dir ../shared/data --out bench-out/train \
      --splits official speaker --seeds 0 1 2 --limit 10000 --epochs 4 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> (method, extra train flags, fusion key reported as "fused")
VARIANTS = {
    "joint": ("joint", [], "fused_sum"),
    "unimodal": ("unimodal", [], "fused_mean"),
    "ogm_ge": ("ogm_ge", [], "fused_sum"),
    "mmpareto": ("mmpareto", [], "fused_sum"),
    "mla": ("mla", ["--head-grad", "owm"], "fused"),
    "mla_no_owm": ("mla", ["--head-grad", "none"], "fused"),
    "mla_owm_norm": ("mla", ["--head-grad", "owm_norm"], "fused"),
    "mla_mean_fusion": ("mla", ["--head-grad", "owm"], "fused_mean"),  # same runs as mla, other fusion
    "mla_owm_norm_mean_fusion": ("mla", ["--head-grad", "owm_norm"], "fused_mean"),  # same runs as mla_owm_norm
    # the same recipe on 2 processes (torch.distributed, gloo) at the same global batch
    "mla_owm_norm_ddp2": ("mla", ["--head-grad", "owm_norm", "--nproc", "2"], "fused"),
}
# variants scored from another variant's runs with another fusion rule (no training of their own)
SCORED_FROM = {"mla_mean_fusion": "mla", "mla_owm_norm_mean_fusion": "mla_owm_norm"}
LABELS = {
    "joint": "joint (late fusion, concat head)",
    "unimodal": "unimodal (separate encoders+heads, mean fusion)",
    "ogm_ge": "OGM-GE (as published: 1 - tanh(alpha rho), conv weights)",
    "mmpareto": "MMPareto (concat head + unimodal heads)",
    "mla": "MLA (paper OWM, entropy fusion)",
    "mla_no_owm": "MLA without gradient modification",
    "mla_owm_norm": "MLA, norm-preserving OWM (owm_norm)",
    "mla_mean_fusion": "MLA (paper OWM) with mean fusion",
    "mla_owm_norm_mean_fusion": "MLA owm_norm with mean fusion",
    "mla_owm_norm_ddp2": "MLA owm_norm, 2 processes (DDP), same global batch",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_one(args, split: str, variant: str, seed: int) -> dict:
    method, flags, _ = VARIANTS[variant]
    run_dir = Path(args.out) / split / f"{variant}-s{seed}"
    test_json = run_dir / "test.json"
    if not test_json.is_file():
        cmd = [sys.executable, "-m", "edge_mla.cli.main", "train", "--method", method, "--preset", args.preset, "--dataset", "avmnist",
               "--data-dir", args.data_dir, "--split", split, "--epochs", str(args.epochs), "--limit", str(args.limit),
               "--seed", str(seed), "--threads", str(args.threads), "--out", str(run_dir), "--force", "--no-progress", "--log-level", "WARNING",
               "--val-limit", str(args.val_limit), *([] if args.corrupt else ["--no-corrupt"]), *flags]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"[{time.time() - t0:6.0f}s] {split} {variant} seed {seed}", flush=True)
    res = json.loads(test_json.read_text())
    res["fused_calibrated"] = calibrated_fused(args, run_dir, split, method, seed)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    res["samples_per_s"] = statistics.median(m["samples_per_s"] for m in metrics)
    res["P_frobenius"] = [m.get("P_frobenius") for m in metrics]
    res["proj_ratio_mean"] = [m.get("proj_ratio_mean") for m in metrics]
    return res


def calibrated_fused(args, run_dir: Path, split: str, method: str, seed: int) -> float:
    """Test accuracy of the method's own fusion rule on temperature-calibrated logits
    (one temperature per modality, fitted on validation pairs, as `edge-mla export`
    bakes into the engines; edge_mla.reliability). Cached in the run folder."""
    cache = run_dir / "calibrated.json"
    if cache.is_file():
        return json.loads(cache.read_text())["fused_calibrated"]
    import numpy as np
    import torch

    from edge_mla.calib.select import stratified_indices
    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data import load_dataset
    from edge_mla.evaluate import accuracy, collect
    from edge_mla.fusion import fuse
    from edge_mla.reliability import fit_temperature
    from edge_mla.train.config import NATIVE_FUSION

    torch.set_num_threads(args.threads)
    model, payload = load_checkpoint(run_dir)
    ds = load_dataset("avmnist", args.data_dir, seed=seed, split=split)
    val = ds.val.subset(np.sort(stratified_indices(ds.val.labels, min(args.val_limit, len(ds.val)), seed + 1)))
    _, vz, vy = collect(model, val, ds.window)
    _, tz, ty = collect(model, ds.test, ds.window)
    t = {m: fit_temperature(vz[m], vy) for m in vz}
    fused, _ = fuse({m: tz[m] / t[m] for m in tz}, NATIVE_FUSION[payload["method"]])
    out = {"fused_calibrated": accuracy(fused, ty), "temperature": t, "val_pairs": len(vy)}
    cache.write_text(json.dumps(out) + "\n")
    return out["fused_calibrated"]


def fmt(vals: list) -> str:
    vals = [100 * v for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def table(results: dict, split: str, seeds: list) -> str:
    """Mean ± std over the seeds that have finished (the n column says how many)."""
    # Corrupted-input cases are reported from `edge-mla eval` of single runs (run_all.sh),
    # not here: the benchmark skips those passes for time.
    cols = [("image", "image only"), ("audio", "audio only"), ("fused", "fused"), ("fused_calibrated", "fused, calibrated"),
            ("image_missing", "image missing"), ("audio_missing", "audio missing")]
    lines = ["| method | n | " + " | ".join(c[1] for c in cols) + " | train samples/s |", "|---" * (len(cols) + 3) + "|"]
    for variant in VARIANTS:
        src = SCORED_FROM.get(variant, variant)
        runs = [results.get((split, src, s)) for s in seeds]
        runs = [r for r in runs if r]
        if not runs:
            continue
        fused_key = VARIANTS[variant][2]
        suffix = "_mean" if fused_key == "fused_mean" and variant in SCORED_FROM else ""
        cells = []
        for key, _ in cols:
            if key == "fused_calibrated" and variant in SCORED_FROM:  # calibrated with the source's own rule, not this one
                cells.append("-")
                continue
            k = fused_key if key == "fused" else (key + suffix if key in ("image_black", "audio_silence", "audio_noise") else key)
            cells.append(fmt([r.get(k) for r in runs]))
        sps = statistics.median(r["samples_per_s"] for r in runs)
        lines.append(f"| {LABELS[variant]} | {len(runs)} | " + " | ".join(cells) + f" | {sps:.0f} |")
    return "\n".join(lines)


def recipe_check(results: dict, split: str, seeds: list) -> str:
    """The default-recipe rule, per variant: mean fused accuracy, and each modality alone
    minus unimodal training's (the rule asks for >= -1 point on both)."""
    def mean(variant, key):
        vals = [results[(split, variant, s)].get(key) for s in seeds if (split, variant, s) in results]
        vals = [v for v in vals if v is not None]
        return 100 * statistics.mean(vals) if vals else None

    if mean("unimodal", "image") is None:
        return ""
    lines = [f"\nDefault-recipe rule, {split} split (means over the seeds above; points):\n",
             "| method | fused | fused, calibrated | image alone - unimodal | audio alone - unimodal | both within 1 point |", "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        src = SCORED_FROM.get(variant, variant)
        if mean(src, VARIANTS[variant][2]) is None:
            continue
        di, da = (mean(src, m) - mean("unimodal", m) for m in ("image", "audio"))
        cal = "-" if variant in SCORED_FROM or mean(src, "fused_calibrated") is None else f"{mean(src, 'fused_calibrated'):.1f}"
        lines.append(f"| {LABELS[variant]} | {mean(src, VARIANTS[variant][2]):.1f} | {cal} | {di:+.1f} | {da:+.1f} | {'yes' if min(di, da) >= -1 else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("EDGE_MLA_DATA", "../shared/data"))
    ap.add_argument("--out", default="bench-out/train")
    ap.add_argument("--splits", nargs="+", default=["official", "speaker"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v not in SCORED_FROM and v != "mla_owm_norm_ddp2"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="training processes at once")
    ap.add_argument("--report-only", action="store_true", help="only tabulate the runs that have finished")
    ap.add_argument("--val-limit", type=int, default=2000, help="validation pairs scored each epoch")
    ap.add_argument("--no-corrupt", dest="corrupt", action="store_false", help="skip corrupted-input test passes")
    ap.add_argument("--speaker-variants", nargs="+", default=["joint", "unimodal", "ogm_ge", "mmpareto", "mla", "mla_owm_norm"], help="variants run on the speaker split")
    args = ap.parse_args()
    # Seed-major order: partial results cover every split and method early.
    # (a variant scored from another's runs trains nothing of its own: its source is run instead)
    jobs = [(sp, v, s) for s in args.seeds for sp in args.splits
            for v in dict.fromkeys(SCORED_FROM.get(v, v) for v in (args.speaker_variants if sp == "speaker" else args.variants))]
    results: dict = {}
    if args.report_only:
        jobs = [j for j in jobs if (Path(args.out) / j[0] / f"{j[1]}-s{j[2]}" / "test.json").is_file()]
    with ThreadPoolExecutor(args.jobs) as pool:
        for key, res in zip(jobs, pool.map(lambda j: run_one(args, *j), jobs)):
            results[key] = res
    out = [f"Machine: {cpu_model()}, {os.cpu_count()} cores; preset {args.preset}, {args.limit} training pairs, {args.epochs} epochs, "
           f"seeds {args.seeds}, {args.threads} torch thread(s) per run, {args.jobs} runs at once, {args.val_limit} validation pairs. Test accuracy (%) of the "
           "checkpoint chosen on validation; mean ± std over seeds.\n"]
    for sp in args.splits:
        out.append(f"\n#### AV-MNIST, {sp} split\n")
        out.append(table(results, sp, args.seeds))
        out.append("")
    for sp in args.splits:
        out.append(recipe_check(results, sp, args.seeds))
    owm = [(k, r) for k, r in results.items() if k[1] == "mla"]
    if owm:
        out.append("\n|P|_F per epoch and mean |G P|_F / |G|_F per epoch (paper OWM), first seed of each split:\n")
        seen = set()
        for (sp, _, s), r in sorted(owm):
            if sp in seen:
                continue
            seen.add(sp)
            out.append(f"- {sp}: |P|_F {[round(x, 3) for x in r['P_frobenius']]}, ratio {[round(x, 4) for x in r['proj_ratio_mean']]}")
    text = "\n".join(out) + "\n"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.md").write_text(text)
    (Path(args.out) / "results.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in results.items()}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
