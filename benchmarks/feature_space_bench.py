"""Which feature-space distance tells a corrupted microphone from a clean one best
(BENCHMARKS.md section 8, "Distances beyond the shipped Gaussian").

Why: the shipped reliability signal (``edge_mla.reliability``, "mahalanobis") is the
class-conditional Mahalanobis distance on the encoder's embedding ``h``. After the
level augmentation its AUROC on the hard held-out audio corruptions is ~0.93-0.95,
short of the issue's 0.95, and the corruption it misses is another speaker talking
over (babble). Before changing what every engine computes, this measures, on the
same trained runs and test pairs, the published alternatives that fit post hoc:

  md           the shipped one: min over classes, one shared covariance, on ``h``
  global       one Gaussian over all training features (class-agnostic)
  relative     md minus global ("relative Mahalanobis", Ren et al. 2021), meant for
               near-distribution inputs
  layer:NAME   md on an earlier block's channel means and standard deviations over
               time and frequency (Lee et al. 2018 use several layers)
  layers       the per-layer distances and ``h``'s, each standardised by its own
               spread on the training features (no corruption is seen), summed
  qda          one covariance per class (shrunk halfway to a scaled identity: 400
               training features per class in 64 dimensions), min over classes of
               the distance plus the log-determinant
  class gap    the second-nearest class's distance minus the nearest's (a blend of
               two digits sits between two classes)
  frames:max   a class-agnostic Gaussian on the last block's per-time-step vectors
  frames:mean  (channel mean and std over frequency), the max or mean over time: a
               local fault is averaged away by the encoder's pooling
  gram         Sastry & Oore (2020): how far the last block's channel Gram matrix
               leaves the range seen in training for the predicted class

Every Gaussian is fitted on the run's training audio drawn through its own
augmentation, as ``reliability_fit`` fits the shipped one. AUROC is rank-based, so a
candidate's logistic map would not change it, and "md" reproduces the reliability
bench's figure for the same runs (same training draws, test pairs and corrupted
draws). Only the audio encoder is measured
(the image encoder's hard held-out AUROC is already >= 0.998).

  python -m benchmarks.feature_space_bench --data-dir ../shared/data \
      --runs bench-out/reliability-aug2-official/official/mla-s0 ... --out bench-out/feature-space.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def _blocks(encoder) -> dict:
    """name -> module whose output is one conv block's activation map (B, C, F, T)."""
    from torch import nn

    from edge_mla.models.encoders import BasicBlock

    mods = {}
    for name, m in encoder.backbone.named_modules():
        if isinstance(m, BasicBlock) or (isinstance(m, nn.Sequential) and len(m) and isinstance(m[-1], nn.ReLU)):
            mods[name] = m
    return mods


GRAM_MAX_CHANNELS = 128  # the Gram candidate needs C(C+1)/2 entries per input: skipped on wider blocks (resnet18)


def _local(x) -> dict:
    """The last block's local statistics: per-time-step vectors (B, T, 2C) and, on a
    narrow block, the upper triangle of the channel Gram matrix (power 1/2, as in
    Sastry & Oore)."""
    import torch

    out = {"frames": torch.cat([x.mean(2), x.std(2)], 1).transpose(1, 2).cpu().numpy()}
    if x.shape[1] <= GRAM_MAX_CHANNELS:
        f = x.flatten(2)
        g = torch.bmm(f, f.transpose(1, 2)) / f.shape[2]
        iu = torch.triu_indices(g.shape[1], g.shape[1])
        out["gram"] = (g.sign() * g.abs().sqrt())[:, iu[0], iu[1]].cpu().numpy()
    return out


def collect_layers(model, split, window: int, sample_rate: int, corrupt=None, seed: int = 0, augment=None) -> tuple:
    """(per-block pooled features {name: (N, 2C)}, the last block's local statistics
    (``_local``), h (N, D), logits (N, K), labels)."""
    import torch

    from edge_mla.evaluate import collect

    acc: dict = {}
    local: dict = {}
    blocks = _blocks(model.encoders["audio"])
    last = list(blocks)[-1]

    def hook(name):
        def f(_mod, _inp, out):
            x = out.detach()
            acc.setdefault(name, []).append(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).cpu().numpy())
            if name == last:
                for k, v in _local(x).items():
                    local.setdefault(k, []).append(v)
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in blocks.items()]
    try:
        h, z, y = collect(model, split, window, corrupt=corrupt, seed=seed, modalities=["audio"], sample_rate=sample_rate, augment=augment)
    finally:
        for hd in handles:
            hd.remove()
    return ({k: np.concatenate(v) for k, v in acc.items()}, {k: np.concatenate(v) for k, v in local.items()},
            h["audio"], z["audio"], y)


class Distances:
    """The candidates above, fitted on training features; ``scores`` gives each
    candidate's in-distribution score (higher = more like training)."""

    QDA_SHRINK = 0.5

    def __init__(self, layers: dict, local: dict, h: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        from edge_mla.reliability import fit_gaussian

        self.feats = {**{f"layer:{k}": v for k, v in layers.items()}, "h": h}
        self.cls = {k: fit_gaussian(v, y, num_classes) for k, v in self.feats.items()}
        self.glob = fit_gaussian(h, np.zeros(len(h), int), 1)
        self.spread = {}
        for k, v in self.feats.items():
            d = self._log_md(k, v)
            self.spread[k] = (float(d.mean()), float(d.std()) + 1e-9)
        self.qda = []
        for c in range(num_classes):
            x = h[y == c]
            cov = np.cov(x, rowvar=False)
            cov = (1 - self.QDA_SHRINK) * cov + self.QDA_SHRINK * np.trace(cov) / len(cov) * np.eye(len(cov))
            self.qda.append((x.mean(0), np.linalg.inv(cov), float(np.linalg.slogdet(cov)[1])))
        frames = local["frames"].reshape(-1, local["frames"].shape[-1])
        self.frames = fit_gaussian(frames, np.zeros(len(frames), int), 1)
        self.gram = None
        if "gram" in local:
            g = local["gram"]
            self.gram = (np.stack([g[y == c].min(0) for c in range(num_classes)]), np.stack([g[y == c].max(0) for c in range(num_classes)]))

    def _log_md(self, key: str, x: np.ndarray) -> np.ndarray:
        from edge_mla.reliability import min_mahalanobis

        means, prec = self.cls[key]
        return np.log1p(min_mahalanobis(x, means, prec) / x.shape[1])

    def scores(self, layers: dict, local: dict, h: np.ndarray, z: np.ndarray) -> dict:
        from edge_mla.reliability import min_mahalanobis

        md = min_mahalanobis(h, *self.cls["h"])
        glob = min_mahalanobis(h, *self.glob)
        out = {"md": -md, "global": -glob, "relative": -(md - glob)}
        means, prec = self.cls["h"]
        two = np.sort(np.stack([np.einsum("nd,de,ne->n", h - m, prec, h - m) for m in means], 1), 1)[:, :2]
        out["class gap"] = two[:, 1] - two[:, 0]
        out["qda"] = -np.min(np.stack([np.einsum("nd,de,ne->n", h - m, p, h - m) + ld for m, p, ld in self.qda], 1), 1)
        fr = local["frames"]
        d = min_mahalanobis(fr.reshape(-1, fr.shape[-1]), *self.frames).reshape(fr.shape[:2])
        out["frames:max"], out["frames:mean"] = -d.max(1), -d.mean(1)
        if self.gram is not None:
            lo, hi = (b[z.argmax(1)] for b in self.gram)
            g = local["gram"]
            out["gram"] = -(np.maximum(lo - g, 0) / (np.abs(lo) + 1e-6) + np.maximum(g - hi, 0) / (np.abs(hi) + 1e-6)).sum(1)
        feats = {**{f"layer:{k}": v for k, v in layers.items()}, "h": h}
        std = {k: (self._log_md(k, v) - self.spread[k][0]) / self.spread[k][1] for k, v in feats.items()}
        for k in feats:
            if k != "h":
                out[k] = -std[k]
        out["layers"] = -sum(std.values())
        return out


def score_run(run: str, data_dir: str, fit_train: int, test_limit: int) -> dict:
    """candidate -> {"hard", "held_out", "train"} AUROC and per-corruption AUROC."""
    import torch

    from edge_mla.calib.select import stratified_indices
    from edge_mla.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from edge_mla.corruptions import suite
    from edge_mla.data import load_dataset
    from edge_mla.manifest import load_run_config
    from edge_mla.reliability import HARD_DROP, auroc
    from edge_mla.reliability_fit import _stratified
    from edge_mla.train.config import TrainConfig

    torch.set_num_threads(1)
    conf = load_run_config(run)
    model, payload = load_checkpoint(run)
    ds = load_dataset("avmnist", data_dir, seed=conf.seed, split=conf.split)
    augment = TrainConfig.audio_augment_of(payload, str(Path(run) / CHECKPOINT_NAME))
    train = ds.train.subset(_stratified(ds.train.labels, fit_train, conf.seed))
    tl, tloc, th, _, ty = collect_layers(model, train, ds.window, ds.sample_rate, seed=conf.seed, augment=augment)
    dist = Distances(tl, tloc, th, ty, len(ds.classes))
    test = ds.test.subset(np.sort(stratified_indices(ds.test.labels, min(test_limit, len(ds.test)), conf.seed)))
    cl, cloc, ch, cz, y = collect_layers(model, test, ds.window, ds.sample_rate)
    clean_acc = float(np.mean(cz.argmax(1) == y))
    pos = dist.scores(cl, cloc, ch, cz)
    neg: dict = {k: {"hard": [], "held_out": [], "train": []} for k in pos}
    per: dict = {k: {} for k in pos}
    for i, c in enumerate(suite()):  # numbered as evaluate.collect_suite numbers them: the same corrupted draws
        if c.modality != "audio":
            continue
        xl, xloc, xh, xz, _ = collect_layers(model, test, ds.window, ds.sample_rate, corrupt=c, seed=conf.seed + 1000 + i)
        drop = clean_acc - float(np.mean(xz.argmax(1) == y))
        for k, s in dist.scores(xl, xloc, xh, xz).items():
            per[k][c.name] = auroc(pos[k], s)
            neg[k]["held_out" if c.held_out else "train"].append(s)
            if c.held_out and drop > HARD_DROP:
                neg[k]["hard"].append(s)
    out = {"split": conf.split, "seed": conf.seed, "clean_audio": clean_acc, "candidates": {}}
    for k in pos:
        out["candidates"][k] = {part: auroc(pos[k], np.concatenate(v)) for part, v in neg[k].items() if v}
        out["candidates"][k]["per_corruption"] = per[k]
    return out


def table(results: dict) -> str:
    """Mean over seeds per split: hard / all held-out AUROC and babble at each severity."""
    splits = sorted({r["split"] for r in results.values()})
    cands = list(next(iter(results.values()))["candidates"])
    lines = []
    for sp in splits:
        runs = [r for r in results.values() if r["split"] == sp]
        babble = sorted(k for k in runs[0]["candidates"]["md"]["per_corruption"] if k.startswith("audio_babble"))
        lines += [f"{sp} split, {len(runs)} run(s), audio:", "",
                  "| distance | AUROC hard held-out | AUROC all held-out | AUROC train families | " + " | ".join(babble) + " |",
                  "| --- |" + " ---: |" * (3 + len(babble))]
        for k in cands:
            c = [r["candidates"][k] for r in runs]

            def m(vals):
                return f"{statistics.mean(vals):.3f}"
            lines.append(f"| {k} | {m([x['hard'] for x in c])} | {m([x['held_out'] for x in c])} | {m([x['train'] for x in c])} | "
                         + " | ".join(m([x["per_corruption"][b] for x in c]) for b in babble) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs", nargs="+", required=True, help="run folders written by 'edge-mla train' (tiny or resnet18 audio encoder)")
    ap.add_argument("--fit-train", type=int, default=4000, help="training pairs the Gaussians are fitted on (reliability_fit's default)")
    ap.add_argument("--test-limit", type=int, default=1000, help="stratified test pairs (the reliability bench's)")
    ap.add_argument("--out", help="write the figures here as JSON too")
    args = ap.parse_args()
    results = {run: score_run(run, args.data_dir, args.fit_train, args.test_limit) for run in args.runs}
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
