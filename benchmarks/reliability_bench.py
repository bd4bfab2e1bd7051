"""Benchmark of fault-aware fusion (BENCHMARKS.md, issue 8).

For every (split, method, seed): train a tiny run (skipped when it exists), fit every
reliability candidate on its validation split (edge_mla.reliability_fit: train
corruption families only), run the corruption suite once on a stratified subset of
the test split and score the method's own rule without reliability and with each
candidate (each with the fusion power its fit picked on validation), and the default
signal under fixed fusion weightings (--weightings). Optionally (--export) one
FP32+INT8 export per split (seed 0) for the INT8 AUROC, and (--latency) the extra
batch-1 engine cost of the second output.
Writes results.json (resumable per run) and prints markdown tables.

  python benchmarks/reliability_bench.py --data-dir ../shared/data --out bench-out/reliability \
      --splits official speaker --seeds 0 1 2 --methods mla --limit 4000 --epochs 3 --test-limit 500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.train_bench import cpu_model
from edge_mla.reliability import DEFAULT_SIGNAL, POWER_CLEAN_TOLERANCE, default_weighting


def train(args, split: str, method: str, seed: int) -> Path:
    run = Path(args.out) / split / f"{method}-s{seed}"
    if not (run / "checkpoint.pt").is_file():
        cmd = [sys.executable, "-m", "edge_mla.cli.main", "train", "--method", method, "--preset", "tiny", "--dataset", "avmnist", "--data-dir", args.data_dir,
               "--split", split, "--seed", str(seed), "--limit", str(args.limit), "--epochs", str(args.epochs), "--val-limit", str(args.val_limit),
               "--threads", "1", "--no-test", "--no-progress", "--force", "--out", str(run)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return run


def score_run(args, run: Path, split: str, seed: int) -> dict:
    import torch

    from edge_mla.calib.select import stratified_indices
    from edge_mla.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from edge_mla.corruptions import suite
    from edge_mla.data import load_dataset
    from edge_mla.evaluate import collect_suite, score_suite
    from edge_mla.reliability_fit import fit_candidates, fit_data, save, with_reference_quantile
    from edge_mla.train.config import TrainConfig, fusion_rule_of

    torch.set_num_threads(1)
    model, payload = load_checkpoint(run)
    rule = fusion_rule_of(payload["method"])
    ds = load_dataset("avmnist", args.data_dir, seed=seed, split=split)
    t0 = time.perf_counter()
    augment = TrainConfig.audio_augment_of(payload, str(run / CHECKPOINT_NAME))
    fit = fit_data(model, ds, seed, train_limit=args.fit_train, val_limit=args.fit_val, augment=augment, temperature_on_augmented=not args.temperature_on_clean)
    fitted = fit_candidates(fit, len(ds.classes), rule)
    save(run, fitted)
    # the default signal with each modality weighing fully from this quantile of its clean validation r up (power selected again)
    referenced = {q: with_reference_quantile(fit, fitted[DEFAULT_SIGNAL], rule, q) for q in args.reference_quantiles}
    t_fit = time.perf_counter() - t0
    test = ds.test.subset(np.sort(stratified_indices(ds.test.labels, min(args.test_limit, len(ds.test)), seed)))
    data = collect_suite(model, test, ds.window, ds.sample_rate, suite(), seed=seed)
    out = {"rule": rule, "fit_seconds": t_fit, "suite_seconds": time.perf_counter() - t0 - t_fit, "n_test": len(test.labels), "base": score_suite(data, rule, None)}
    for cand, rel in fitted.items():
        out[cand] = {**score_suite(data, rule, rel), "reference": rel.weighting["reference"]}
    for q, rel in referenced.items():
        out[f"{DEFAULT_SIGNAL} reference q{q:g}"] = {**score_suite(data, rule, rel), "reference": rel.weighting["reference"]}
    for power, floor in args.weightings:  # the default signal under fixed fusion weightings (its fitted one is the candidate row)
        rel = dataclasses.replace(fitted[DEFAULT_SIGNAL], power=power, floor=floor)
        out[f"{DEFAULT_SIGNAL} w=r^{power:g} floor {floor:g}"] = score_suite(data, rule, rel)
    out["val_weightings"] = validation_weightings(model, ds, seed, args.fit_val, fitted[DEFAULT_SIGNAL], rule, _weightings(args, rule))
    out["fault_gate"] = {m: list(r.fault.blocks) if r.fault is not None else [] for m, r in fitted[DEFAULT_SIGNAL].modalities.items()}
    out["ece_test"] = full_test_ece(model, ds, fitted[DEFAULT_SIGNAL], seed, args.fit_val)
    return out


def _weightings(args, rule: str) -> list:
    """The rule's fallback (power, floor) first, then the other --weightings."""
    own = default_weighting(rule)
    return [own] + [w for w in args.weightings if w != own]


def _val_pairs(ds, seed: int, n: int):
    """The validation pairs the reliability constants were fitted on (reliability_fit.fit_data)."""
    from edge_mla.reliability_fit import fit_val_indices

    return ds.val.subset(fit_val_indices(ds.val.labels, seed, n))


def validation_weightings(model, ds, seed: int, n_val: int, rel, rule: str, weightings: list) -> dict:
    """Each weighting scored on validation only: clean fused accuracy (and the
    calibrated plain rule's) and the worst regret over the *train* corruption
    families, the figures a weighting can be chosen by without the test split."""
    from edge_mla.corruptions import suite
    from edge_mla.evaluate import collect_suite, score_suite

    data = collect_suite(model, _val_pairs(ds, seed, n_val), ds.window, ds.sample_rate, suite(held_out=False), seed=seed + 7)
    out = {}
    for power, floor in weightings:
        sc = score_suite(data, rule, dataclasses.replace(rel, power=power, floor=floor))
        out[f"{power:g}:{floor:g}"] = {"clean": sc["clean"]["fused"], "clean_calibrated": sc["clean"]["fused_calibrated"],
                                       "train_worst_regret": sc["summary"]["train"]["worst_regret"]}
    return out


def select_weighting(results: dict, split: str, method: str, tolerance: float = POWER_CLEAN_TOLERANCE) -> str:
    """The weighting validation alone would pick, over the seeds: the lowest mean
    worst train-family regret among those whose mean clean validation accuracy is
    within ``tolerance`` points of the calibrated plain rule's (ties: lower power):
    reliability_fit.select_power's criterion, on the means over seeds."""
    runs = [r["scores"]["val_weightings"] for r in results["runs"].values() if r["split"] == split and r["method"] == method and "val_weightings" in r["scores"]]
    if not runs:
        return ""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    rows = []
    for k in keys:
        clean = 100 * statistics.mean(r[k]["clean"] - r[k]["clean_calibrated"] for r in runs)
        worst = statistics.mean(r[k]["train_worst_regret"] for r in runs)
        rows.append((k, clean, worst))
    ok = [r for r in rows if r[1] >= -tolerance] or [max(rows, key=lambda r: r[1])]
    pick = min(ok, key=lambda r: (round(r[2], 6), float(r[0].split(":")[0])))
    lines = [f"Weightings on validation only, {method}, {split} ({len(runs)} seeds; train families; clean vs the calibrated plain rule):", "",
             "| power:floor | clean fused vs plain, points | worst train-family regret |", "| --- | --- | --- |"]
    lines += [f"| {'**' + k + '** (picked)' if k == pick[0] else k} | {c:+.2f} | {w:.2f} |" for k, c, w in rows]
    return "\n".join(lines) + "\n"


def full_test_ece(model, ds, rel, seed: int, n_val: int) -> dict:
    """ECE of each modality on the whole clean test split, raw and with the fitted
    temperature (the same for every candidate). The suite's subset is too small for
    it: on 500 pairs a perfectly calibrated encoder still scores ~0.03-0.06 from
    sampling noise alone.

    ``bound`` is the ECE under the temperature that minimises it *on the test split
    itself* (a grid over T, using the test labels): no temperature fitted anywhere
    can do better, so where ``bound`` misses a target, temperature scaling cannot
    meet it on that split (e.g. a voice the validation split never had).
    ``distance_aware`` is a candidate beyond one temperature per modality: T grows
    with the sample's Mahalanobis distance, log T = a + b * log1p(d2 / D), (a, b)
    fitted on the clean validation pairs' NLL (measured here, not exported).
    ``floor`` / ``p_raw`` / ``p_calibrated`` (``edge_mla.reliability.ece_floor``): the
    ECE a calibrated encoder would score on this split's *distinct* inputs (10,000
    pairs hold 300 or 500 recordings), and how likely noise alone reaches each figure."""
    from edge_mla.evaluate import collect
    from edge_mla.reliability import ece, ece_floor, fit_temperature, log_softmax, min_mahalanobis

    h, z, y = collect(model, ds.test, ds.window)
    vh, vz, vy = collect(model, _val_pairs(ds, seed, n_val), ds.window)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 121))
    out = {}
    for m in z:
        mr = rel.modalities.get(m)
        if mr is None:
            continue
        per_t = [ece(z[m], y, t) for t in grid]
        best = int(np.argmin(per_t))
        groups = {"image": ds.test.image_index, "audio": ds.test.clip_index}[m]
        raw, cal = ece_floor(z[m], y, 1.0, groups, seed=seed), ece_floor(z[m], y, mr.temperature, groups, seed=seed)
        out[m] = {"raw": raw["ece"], "calibrated": cal["ece"], "n": int(len(y)), "temperature": mr.temperature,
                  "bound": per_t[best], "bound_temperature": float(grid[best]),
                  "distinct": cal["distinct"], "floor": cal["floor"], "floor_p90": cal["floor_p90"], "p_raw": raw["p"], "p_calibrated": cal["p"]}
        if mr.means is not None:
            def dist(hh):
                return np.log1p(min_mahalanobis(hh, mr.means, mr.precision) / mr.means.shape[1])

            vd, td = dist(vh[m]), dist(h[m])
            # for a fixed b, exp(a) is an ordinary temperature of z / exp(b * d)
            fits = []
            for b in np.linspace(0.0, 5.0, 26):
                scaled = vz[m] / np.exp(b * vd)[:, None]
                t0 = fit_temperature(scaled, vy)
                nll = -float(np.mean(log_softmax(scaled / t0)[np.arange(len(vy)), vy]))
                fits.append((nll, float(b), t0))
            _, b, t0 = min(fits)
            out[m]["distance_aware"] = ece(z[m] / np.exp(b * td)[:, None], y, t0)
            out[m]["distance_aware_b"] = b
    return out


def backfill(args, results: dict, res_path: Path) -> None:
    """Runs scored before the validation weightings and the ECE bound existed get
    them now, from the run's cached constants (no refit: the figures beside them
    stay comparable)."""
    import torch

    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data import load_dataset
    from edge_mla.reliability_fit import load
    from edge_mla.train.config import fusion_rule_of

    torch.set_num_threads(1)
    for key, entry in results["runs"].items():
        if entry["split"] not in args.splits or entry["method"] not in args.methods or entry["seed"] not in args.seeds:
            continue
        sc = entry["scores"]
        need_ece = not sc.get("ece_test") or not all("distance_aware" in v and "floor" in v for v in sc["ece_test"].values())
        if not need_ece and "val_weightings" in sc:
            continue
        run = Path(args.out) / key
        model, payload = load_checkpoint(run)
        rule = fusion_rule_of(payload["method"])
        rel = load(run, DEFAULT_SIGNAL, rule)
        if rel is None:
            continue
        print(f"backfilling {key}", flush=True)
        ds = load_dataset("avmnist", args.data_dir, seed=entry["seed"], split=entry["split"])
        if "val_weightings" not in sc:
            sc["val_weightings"] = validation_weightings(model, ds, entry["seed"], args.fit_val, rel, rule, _weightings(args, rule))
        if need_ece:
            sc["ece_test"] = full_test_ece(model, ds, rel, entry["seed"], args.fit_val)
        res_path.write_text(json.dumps(results, indent=1) + "\n")


def export_table(results: dict) -> str:
    """INT8 against FP32 per export: the engines' AUROC, how often INT8 puts a clean
    validation input on the other side of the threshold, fused accuracy."""
    rows = ["| export | map | AUROC image FP32 / INT8 | AUROC audio FP32 / INT8 | INT8 gate agreement image / audio | fused (calibrated) FP32 / INT8 | + weighting FP32 / INT8 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, modes in results["export"].items():
        if "refit" not in modes:  # an export scored before the INT8 map existed: one flat entry
            continue
        for mode, e in modes.items():
            a, f, fr, g = e["reliability_auroc"], e["fused"], e["fused_reliable"], e["gate_agreement"]
            rows.append(f"| {key} | {mode} | {a['fp32']['image']:.3f} / {a['int8']['image']:.3f} | {a['fp32']['audio']:.3f} / {a['int8']['audio']:.3f} | "
                        f"{g['image']:.3f} / {g['audio']:.3f} | {100 * f['fp32']:.1f} / {100 * f['int8']:.1f} | {100 * fr['fp32']:.1f} / {100 * fr['int8']:.1f} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def ece_table(results: dict, split: str, method: str) -> str:
    """Per modality: ECE raw, with the validation-fitted temperature, and the bound
    (the best any single temperature reaches on the test split itself)."""
    runs = [r for r in results["runs"].values() if r["split"] == split and r["method"] == method and r["scores"].get("ece_test")]
    runs = [r for r in runs if all("distance_aware" in v and "floor" in v for v in r["scores"]["ece_test"].values())]
    if not runs:
        return ""
    rows = [f"ECE on the whole clean test split, {method}, {split} ({len(runs)} seeds, {runs[0]['scores']['ece_test']['image']['n']} pairs):", "",
            "| modality | distinct inputs | raw (p) | T fitted on validation (p) | T | distance-aware T (validation) | bound: best T on the test split itself | that T | floor: a calibrated encoder (p90) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in ("image", "audio"):
        e = [r["scores"]["ece_test"][m] for r in runs]
        rows.append(f"| {m} | {e[0]['distinct']} | {_ms([x['raw'] for x in e])} ({_ms([x['p_raw'] for x in e])}) | {_ms([x['calibrated'] for x in e])} ({_ms([x['p_calibrated'] for x in e])}) | "
                    f"{_ms([x['temperature'] for x in e])} | {_ms([x['distance_aware'] for x in e])} | {_ms([x['bound'] for x in e])} | {_ms([x['bound_temperature'] for x in e])} | "
                    f"{_ms([x['floor'] for x in e])} ({_ms([x['floor_p90'] for x in e])}) |")
    return "\n".join(rows) + "\n"


def export_auroc(args, run: Path) -> dict:
    """One FP32+INT8 export per INT8 reliability map (the FP32 constants as they
    are, and refitted on the INT8 engine's outputs): the engines' own AUROC, fused
    accuracy with and without the weighting, and how often INT8 puts a clean input
    on the other side of the threshold from FP32."""
    from edge_mla.export.pipeline import INT8_RELIABILITY, ExportConfig, export_run

    out = {}
    for mode in INT8_RELIABILITY:
        res = export_run(ExportConfig(run_dir=run, out=run / "engines", int8="on", calib_method="percentile", eval_limit=args.test_limit,
                                      latency_repeats=args.latency_repeats, force=True, progress=False, exporter="torchscript", int8_reliability=mode))
        eng = res.gate["engines"]
        out[mode] = {"reliability_auroc": res.gate.get("reliability_auroc"), "fused": res.gate.get("fused"), "fused_reliable": res.gate.get("fused_reliable"),
                     "gate_agreement": {m: eng[m]["int8"].get("reliability_gate_agreement") for m in eng},
                     "mean_abs_diff": {m: eng[m]["int8"].get("reliability_mean_abs_diff") for m in eng},
                     "map": {m: res.manifest["engines"][m]["variants"]["int8"].get("reliability_map") for m in eng},
                     "latency_ms": {m: {p: eng[m][p]["latency"]["median_ms"] for p in ("fp32", "int8")} for m in eng}}
    return out


def extra_latency(args, run: Path) -> dict:
    """Median batch-1 single-thread ms of each FP32 engine without and with the
    reliability output, measured interleaved in one process."""
    import tempfile

    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.export import ort_eval
    from edge_mla.export.onnx_export import example_input, export_modality
    from edge_mla.reliability import DEFAULT_SIGNAL
    from edge_mla.reliability_fit import load

    model, _ = load_checkpoint(run)
    rel = load(run, DEFAULT_SIGNAL, "entropy")  # the weighting plays no part in engine latency
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in model.modalities:
            a, b = Path(tmp) / f"{m}.plain.onnx", Path(tmp) / f"{m}.rel.onnx"
            export_modality(model, m, a, exporter="torchscript")
            export_modality(model, m, b, exporter="torchscript", reliability=rel.modalities[m])
            x = example_input(model.cfg, m, 1).numpy()
            lat = ort_eval.interleaved_latency([ort_eval.session(a, 1), ort_eval.session(b, 1)], x, args.latency_repeats, 20)
            out[m] = {"plain_ms": lat[0].median_ms, "reliability_ms": lat[1].median_ms, "extra_ms": lat[1].median_ms - lat[0].median_ms}
    return out


def _ms(vals: list) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


SCORE_EXTRAS = ("base", "rule", "fit_seconds", "suite_seconds", "n_test", "ece_test", "val_weightings", "fault_gate")  # per-run entries that are not a fusion row


def fault_table(results: dict, split: str, method: str) -> str:
    """The default signal on the *train* families (the fast paths' cases: black
    frames, silence, noise): AUROC against clean test inputs and the share judged
    unreliable (r < threshold), mean over seeds, with the fault gate's prototypes
    per seed (edge_mla.reliability.fit_fault_gate)."""
    runs = [r for r in results["runs"].values() if r["split"] == split and r["method"] == method and DEFAULT_SIGNAL in r["scores"]]
    if not runs:
        return ""
    rows = runs[0]["scores"][DEFAULT_SIGNAL]["corruptions"]
    names = [n for n, r in rows.items() if not r["held_out"] and "auroc" in r]
    gates = "; ".join(", ".join(f"{m}: {'+'.join(b) or 'none'}" for m, b in r["scores"].get("fault_gate", {}).items()) or "not recorded" for r in runs)
    lines = [f"Train families, {DEFAULT_SIGNAL}, {method}, {split} ({len(runs)} seeds; fault gate per seed: {gates}):", "",
             "| corruption | encoder alone % | AUROC clean vs corrupted | judged unreliable % | fused % | regret |", "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        s = [r["scores"][DEFAULT_SIGNAL]["corruptions"][n] for r in runs]
        mod = s[0]["modality"]
        lines.append(f"| {n} | {_ms([100 * x[mod] for x in s])} | {_ms([x['auroc'] for x in s])} | {_ms([100 * x['unreliable'] for x in s])} | "
                     f"{_ms([100 * x['fused'] for x in s])} | {_ms([x['regret'] for x in s])} |")
    return "\n".join(lines) + "\n"


def reference_table(results: dict, split: str, method: str) -> str:
    """The default signal with and without a reference r (``--reference-quantiles``):
    power picked, clean fused against the plain rule, held-out regret mean and worst
    (per seed), worst train-family regret. A row scored before the reference existed
    has none."""
    runs = [r["scores"] for k, r in sorted(results["runs"].items()) if r["split"] == split and r["method"] == method]
    keys = [DEFAULT_SIGNAL] + sorted((k for k in (runs[0] if runs else {}) if k.startswith(f"{DEFAULT_SIGNAL} reference q")), key=lambda k: float(k.rsplit("q", 1)[1]))
    if not runs or len(keys) < 2 or not all(k in r for r in runs for k in keys):
        return ""
    lines = [f"Reference r, {method}, {split} ({len(runs)} seeds; weight x min(1, r / reference) ** power, the power selected again on validation):", "",
             "| reference | power (per seed) | clean fused vs the plain rule, points | held-out regret mean | held-out regret worst (per seed) | train-family regret worst |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k in keys:
        s = [r[k] for r in runs]
        refs = s[0].get("reference") or {}
        name = k.replace(f"{DEFAULT_SIGNAL} reference ", "quantile ") if k != DEFAULT_SIGNAL else (
            "none (r ** power)" if all(v == 1.0 for v in refs.values()) else "the default's")
        ref_txt = "" if all(v == 1.0 for v in refs.values()) else " (seed 0: " + ", ".join(f"{m} {v:.2f}" for m, v in refs.items()) + ")"
        worst = [x["summary"]["held_out"]["worst_regret"] for x in s]
        powers = "/".join(f"{x.get('power') or 0:g}" for x in s)
        lines.append(f"| {name}{ref_txt} | {powers} | "
                     f"{statistics.mean(100 * (x['clean']['fused'] - r['base']['clean']['fused']) for x, r in zip(s, runs)):+.2f} | "
                     f"{statistics.mean(x['summary']['held_out']['mean_regret'] for x in s):.2f} | {statistics.mean(worst):.2f} ({' / '.join(f'{w:.1f}' for w in worst)}) | "
                     f"{statistics.mean(x['summary']['train']['worst_regret'] for x in s):.2f} |")
    return "\n".join(lines) + "\n"


def table(results: dict, split: str, method: str) -> str:
    runs = [r for k, r in results["runs"].items() if r["split"] == split and r["method"] == method]
    if not runs:
        return ""
    cands = ["base"] + [c for c in runs[0]["scores"] if c not in SCORE_EXTRAS]
    rows = ["| fusion | clean fused % | image % | audio % | held-out regret mean | held-out regret worst | train-family regret worst | ECE image (raw → T) | ECE audio (raw → T) | AUROC held-out image / audio | AUROC held-out, hard | clean abstain % |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cands:
        s = [r["scores"][c] for r in runs]
        powers = "/".join(f"{x.get('power') or 0:g}" for x in s)  # fitted per run: one per seed
        name = f"{s[0]['rule']} (no reliability)" if c == "base" else f"{s[0]['rule']} + {c}" + ("" if " w=" in c else f" (w=r^{powers} floor {s[0].get('floor', s[0].get('threshold')):g})")
        clean = [100 * x["clean"]["fused"] for x in s]
        ho = [x["summary"]["held_out"] for x in s]
        tr = [x["summary"]["train"] for x in s]
        if c == "base":
            auroc = hard = abst = "-"
            ece_i = ece_a = "-"
        else:
            # ECE on the whole clean test split when the run has it, else on the suite's subset
            eces = [r["scores"].get("ece_test") or x["ece"] for r, x in zip(runs, s)]
            ece_i = _ms([e["image"]["raw"] for e in eces]) + " → " + _ms([e["image"]["calibrated"] for e in eces])
            ece_a = _ms([e["audio"]["raw"] for e in eces]) + " → " + _ms([e["audio"]["calibrated"] for e in eces])
            auroc = _ms([x["auroc"]["image"]["held_out"] for x in s]) + " / " + _ms([x["auroc"]["audio"]["held_out"] for x in s])
            hard = " / ".join(_ms([x["auroc"][m].get("held_out_hard", float("nan")) for x in s]) for m in ("image", "audio"))
            abst = _ms([100 * x["clean"]["abstain"] for x in s])
        rows.append(f"| {name} | {_ms(clean)} | {_ms([100 * x['clean']['image'] for x in s])} | {_ms([100 * x['clean']['audio'] for x in s])} | "
                    f"{_ms([h['mean_regret'] for h in ho])} | {_ms([h['worst_regret'] for h in ho])} | {_ms([t['worst_regret'] for t in tr])} | {ece_i} | {ece_a} | {auroc} | {hard} | {abst} |")
    return f"**{method}, {split} split** ({len(runs)} seeds, {runs[0]['scores']['n_test']} test pairs each)\n\n" + "\n".join(rows) + "\n"


def _weighting(text: str) -> tuple:
    try:
        power, floor = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected POWER:FLOOR, e.g. 3:0.1") from None
    if not (0 <= power <= 16 and 0 <= floor <= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: power must be in [0, 16] and floor in [0, 1]")
    return power, floor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench-out/reliability")
    ap.add_argument("--splits", nargs="+", default=["official", "speaker"])
    ap.add_argument("--methods", nargs="+", default=["mla"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--val-limit", type=int, default=1000)
    ap.add_argument("--fit-train", type=int, default=1500, help="clean training pairs for the Gaussian")
    ap.add_argument("--fit-val", type=int, default=600, help="validation pairs for the temperature and the logistic map")
    ap.add_argument("--test-limit", type=int, default=500)
    ap.add_argument("--temperature-on-clean", action="store_true", help="fit the temperature on clean validation only "
                    "(the fit before the default drew it on clean and perturbed validation together; reliability_fit.fit_data)")
    ap.add_argument("--export", action="store_true", help="one FP32+INT8 export per split (first seed): INT8 AUROC")
    ap.add_argument("--latency", action="store_true", help="extra batch-1 ms of the reliability output (first run)")
    ap.add_argument("--latency-repeats", type=int, default=200)
    ap.add_argument("--reference-quantiles", nargs="*", type=float, default=[], metavar="Q",
                    help="also score the default signal with each modality weighing fully from quantile Q of its clean validation r up "
                         "(fusion weight x min(1, r / reference) ** power, the power selected again on validation)")
    ap.add_argument("--weightings", nargs="*", type=_weighting, default=[(0.0, 0.5), (1.0, 0.1), (1.5, 0.1), (2.0, 0.1), (3.0, 0.1), (3.0, 0.25), (3.0, 0.5), (4.0, 0.1)],
                    metavar="POWER:FLOOR", help="fixed fusion weightings scored for the default signal, beside the power its fit "
                    "picked (reliability_fit.select_power; default: the old hard gate 0:0.5, and 1:0.1 1.5:0.1 2:0.1 3:0.1 3:0.25 3:0.5 4:0.1)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"runs": {}, "export": {}, "latency": {}}
    results["machine"] = {"cpu": cpu_model(), "command": " ".join(sys.argv)}
    for split in args.splits:
        for method in args.methods:
            for seed in args.seeds:
                key = f"{split}/{method}-s{seed}"
                if key in results["runs"]:
                    continue
                run = train(args, split, method, seed)
                print(f"scoring {key}", flush=True)
                results["runs"][key] = {"split": split, "method": method, "seed": seed, "scores": score_run(args, run, split, seed)}
                res_path.write_text(json.dumps(results, indent=1) + "\n")
            if args.export and "refit" not in results["export"].get(f"{split}/{method}", {}):
                results["export"][f"{split}/{method}"] = export_auroc(args, Path(args.out) / split / f"{method}-s{args.seeds[0]}")
                res_path.write_text(json.dumps(results, indent=1) + "\n")
    backfill(args, results, res_path)
    if args.latency and not results["latency"]:
        results["latency"] = extra_latency(args, Path(args.out) / args.splits[0] / f"{args.methods[0]}-s{args.seeds[0]}")
        res_path.write_text(json.dumps(results, indent=1) + "\n")
    for split in args.splits:
        for method in args.methods:
            print(table(results, split, method))
            print(ece_table(results, split, method))
            print(fault_table(results, split, method))
            print(reference_table(results, split, method))
            print(select_weighting(results, split, method))
    print(export_table(results))
    print("export (INT8 AUROC, held-out families at severity 3):", json.dumps(results["export"], indent=1))
    print("extra latency:", json.dumps(results["latency"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
