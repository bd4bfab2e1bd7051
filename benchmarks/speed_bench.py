"""Training speed of each method (samples/s) measured in one process, round-robin
so that machine noise hits every method alike; reports medians and the ratio to
joint late fusion (BENCHMARKS.md, issue 2).

  python benchmarks/speed_bench.py --data-dir ../shared/data --preset tiny --batches 30 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("EDGE_MLA_DATA", "../shared/data"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30, help="timed batches per method per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import torch

    from edge_mla.data import iterate_batches
    from edge_mla.data.avmnist import load_avmnist
    from edge_mla.models import ModelConfig, build_model
    from edge_mla.train.config import HEAD_KIND, TrainConfig
    from edge_mla.train.methods import make_method
    from benchmarks.train_bench import cpu_model

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_avmnist(args.data_dir)
    variants = {"joint": {}, "unimodal": {}, "ogm_ge": {}, "mla (owm)": {"head_grad": "owm"}, "mla (none)": {"head_grad": "none"}}
    setups = {}
    for name, extra in variants.items():
        method = name.split(" ")[0]
        cfg = TrainConfig(method=method, preset=args.preset, batch_size=args.batch_size, **extra)
        torch.manual_seed(0)
        model = build_model(ModelConfig(preset=args.preset, head=HEAD_KIND[method])).train()
        setups[name] = (model, make_method(model, cfg))
    rng = np.random.default_rng(0)
    batches = list(iterate_batches(ds.train.subset(np.arange(args.batch_size * (args.batches + 2))), args.batch_size, ds.window, shuffle=True, rng=rng, augment=cfg.audio_augment()))
    rates: dict = {n: [] for n in setups}
    for _ in range(args.rounds):
        for name, (model, method) in setups.items():
            for b, (img, aud, y) in enumerate(batches[:2]):  # warm-up
                method.step({"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)}, torch.from_numpy(y), (b, len(batches)))
            t = time.perf_counter()
            n = 0
            for b, (img, aud, y) in enumerate(batches[2:]):
                method.step({"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)}, torch.from_numpy(y), (b, len(batches)))
                n += len(y)
            rates[name].append(n / (time.perf_counter() - t))
    med = {n: statistics.median(v) for n, v in rates.items()}
    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s); preset {args.preset}, batch {args.batch_size}, "
             f"{args.batches} batches x {args.rounds} rounds per method (round-robin, one process).", "",
             "| method | samples/s (median) | vs joint |", "|---|---|---|"]
    for n, v in med.items():
        lines.append(f"| {n} | {v:.0f} | {v / med['joint']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "median": med}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
