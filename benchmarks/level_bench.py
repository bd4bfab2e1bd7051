"""How loud each FSDD speaker was recorded, and how a run's audio encoder reads the
held-out speakers when their recordings are made louder (BENCHMARKS.md section 8,
"Level and voice augmentation").

Why: on ``--split speaker`` the audio encoder of a run trained without level
augmentation was right on 27% of the test speaker's clips. This separates the two
causes a new voice can have: a different level (fixable by a gain) and a different
voice (not). Gains are applied to the centred evaluation window and clipped to
[-1, 1], as a louder microphone would deliver it.

  python -m benchmarks.level_bench --data-dir ../shared/data --runs RUN [RUN ...] \
      --gains 0 6 12 18 24 --limit 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def speaker_levels(data_dir: str) -> dict:
    """speaker -> (clips, median clip RMS in dBFS, median length in samples)."""
    from edge_mla.data.avmnist import load_fsdd, resolve_data_dir

    fs = load_fsdd(resolve_data_dir(data_dir))
    off, audio, spk = fs["offsets"], fs["audio"], fs["speaker"].astype(str)
    out = {}
    for s in sorted(set(spk)):
        idx = np.flatnonzero(spk == s)
        rms = [np.sqrt(np.mean((audio[off[i] : off[i + 1]].astype(np.float64) / 32768.0) ** 2)) for i in idx]
        out[s] = {"clips": int(idx.size), "rms_dbfs": round(float(20 * np.log10(np.median(rms))), 1),
                  "samples": int(np.median([off[i + 1] - off[i] for i in idx]))}
    return out


def _gain(db: float):
    """A gain as a Corruption, so ``evaluate.collect`` applies it to the audio batch."""
    from edge_mla.corruptions import Corruption

    factor = np.float32(10.0 ** (db / 20.0))
    return Corruption("audio_gain", "audio", False, 0, lambda x, rng, sr: np.clip(x * factor, -1.0, 1.0))


def audio_under_gain(run: str, data_dir: str, gains: list, limit: int) -> dict:
    """split -> gain dB -> audio-alone accuracy of the run's encoder."""
    import torch

    from edge_mla.calib.select import stratified_indices
    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data import load_dataset
    from edge_mla.evaluate import collect
    from edge_mla.manifest import load_run_config

    torch.set_num_threads(1)
    conf = load_run_config(run)
    model, _ = load_checkpoint(run)
    ds = load_dataset("avmnist", data_dir, seed=conf.seed, split=conf.split)
    out = {}
    for name in ("val", "test"):
        split = ds.split(name)
        split = split.subset(np.sort(stratified_indices(split.labels, min(limit, len(split)), conf.seed)))
        out[name] = {}
        for db in gains:
            _, z, y = collect(model, split, ds.window, corrupt=_gain(db), modalities=["audio"], sample_rate=ds.sample_rate)
            out[name][db] = float(np.mean(z["audio"].argmax(1) == y))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs", nargs="*", default=[], help="run folders (speaker split) to score under each gain")
    ap.add_argument("--gains", nargs="+", type=float, default=[0, 6, 12, 18, 24])
    ap.add_argument("--limit", type=int, default=1000, help="stratified pairs per split")
    ap.add_argument("--out", help="write the figures here as JSON too")
    args = ap.parse_args()

    levels = speaker_levels(args.data_dir)
    print("| speaker | clips | median RMS, dBFS | median length, samples |\n| --- | ---: | ---: | ---: |")
    for s, v in levels.items():
        print(f"| {s} | {v['clips']} | {v['rms_dbfs']} | {v['samples']} |")
    results = {"levels": levels, "runs": {}}
    for run in args.runs:
        results["runs"][run] = audio_under_gain(run, args.data_dir, args.gains, args.limit)
    if args.runs:
        print("\naudio alone, mean ± std over the runs, by gain added to the clip:\n")
        print("| split | " + " | ".join(f"+{g:g} dB" for g in args.gains) + " |\n| --- |" + " ---: |" * len(args.gains))
        for name in ("val", "test"):
            cells = []
            for g in args.gains:
                vals = [100 * r[name][g] for r in results["runs"].values()]
                cells.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else f"{vals[0]:.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
