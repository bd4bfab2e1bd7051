"""`edge-mla train`: flags map one-to-one onto TrainConfig."""

from __future__ import annotations

import argparse

from edge_mla.train.config import DEVICES, HEAD_GRADS, METHODS, RECIPES, TrainConfig

HELP = """\
Train a two-modality (image + audio) classifier and write a run folder:
config.json, metrics.jsonl, curves.png, checkpoint.pt (best epoch on validation),
test.json. Methods: mla (alternating unimodal adaptation, shared head, entropy
fusion), joint (late fusion, one fused loss), unimodal (each encoder alone),
ogm_ge (joint + on-the-fly gradient modulation), mmpareto (Pareto integration of
multimodal and unimodal gradients). With no --method/--head-grad the default recipe
applies; --recipe paper is the MLA paper's exact form.

examples:
  edge-mla train --dataset demo --epochs 5 --out runs/demo
  edge-mla train --method mla --preset tiny --dataset avmnist --data-dir ../shared/data \\
      --epochs 10 --batch-size 64 --seed 0 --limit 20000 --out runs/mla-s0
  edge-mla train --config my.json --seed 1       (flags override the file)
  edge-mla train --nproc 2 --batch-size 64 ...   (2 processes, global batch 64)
  edge-mla train --device cuda --nproc 2 ...     (one GPU per process, NCCL)
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
      -m edge_mla.cli.ddp --method mla ... --out runs/mla   (several machines)
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train MLA or a baseline", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig.__dataclass_fields__
    p.add_argument("--config", help="JSON file with any TrainConfig fields; explicit flags win")
    p.add_argument("--method", choices=METHODS, help=f"training method (default {d['method'].default})")
    p.add_argument("--recipe", choices=list(RECIPES), help="a named recipe that sets the method and its options unless given: "
                   + "; ".join(f"{k} = {' '.join(f'{f}={v}' for f, v in r.items())}" for k, r in RECIPES.items()))
    p.add_argument("--preset", choices=["tiny", "resnet18"], help="encoder preset: tiny (fast, 64-d) or resnet18 (512-d) (default tiny)")
    p.add_argument("--dataset", choices=["avmnist", "demo", "folder"], help="avmnist (MNIST+FSDD from --data-dir), demo (built-in), folder (your pairs.csv) (default avmnist)")
    p.add_argument("--data-dir", help="data folder (avmnist: holds mnist.npz, fsdd.npz; default $EDGE_MLA_DATA)")
    p.add_argument("--split", choices=["official", "speaker"], help="avmnist audio split: official recordings split or held-out speakers (default official)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (default 64)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default 0.05)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default 1e-4)")
    p.add_argument("--seed", type=int, help="seed for pairing, sampling and initialisation (default 0)")
    p.add_argument("--limit", type=int, help="use this many training pairs (seeded subsample; default all)")
    p.add_argument("--val-limit", type=int, help="validation pairs scored each epoch (default 5000)")
    p.add_argument("--head-grad", choices=HEAD_GRADS, help=f"MLA head gradient modification: owm (paper), owm_norm (norm-preserving), none (default {d['head_grad'].default})")
    p.add_argument("--owm-alpha", help="OWM alpha: 'auto' = 0.1**(1+b/N) per epoch, or a number (default auto)")
    p.add_argument("--ogm-alpha", type=float, help="OGM-GE modulation strength alpha (default 0.5)")
    p.add_argument("--mmpareto-gamma", type=float, help="MMPareto's gradient scale gamma (default 1.5)")
    p.add_argument("--nproc", type=int, help="training processes on this machine (torch.distributed: gloo on cpu, NCCL and one GPU per process on cuda); --batch-size is the global batch (default 1)")
    p.add_argument("--device", choices=DEVICES, help="where to train: auto = cuda when torch.cuda.is_available() else cpu; "
                   f"cuda fails with one line when there is none (default {d['device'].default})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--aug-gain-db", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="training audio: a random gain drawn uniformly in dB between LOW and HIGH, for microphones and "
                   f"speakers at other levels (default {' '.join(f'{v:g}' for v in d['aug_gain_db'].default)}; 0 0 turns it off)")
    p.add_argument("--aug-speed", type=float, help="training audio: a random speed factor in [1-S, 1+S], which moves pitch and "
                   f"formants as another voice would (default {d['aug_speed'].default:g}; 0 turns it off)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False, help="no training audio augmentation: clips centred, no gain or speed change")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    p.add_argument("--out", help="run folder (default runs/DATASET-METHOD-PRESET-sSEED-TIME)")
    p.add_argument("--force", action="store_const", const=True, help="overwrite a non-empty run folder")
    p.add_argument("--no-test", dest="test", action="store_false", help="skip the final test-split evaluation")
    p.add_argument("--no-corrupt", dest="corrupt", action="store_false", help="final test evaluation without the corrupted-input passes")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.config:
        return TrainConfig.from_file(args.config, overrides)
    return TrainConfig.build(overrides)


def run(args: argparse.Namespace) -> int:
    import json

    from edge_mla.cli import ddp
    from edge_mla.train import train

    cfg = config_from_args(args)
    if ddp.wants_launch(cfg):
        return ddp.launch(cfg, args.test, args.corrupt, args.log_level)
    world = ddp.join(cfg)
    table = []

    def test_before_publish(tmp) -> None:
        # the test scores are part of the run: written before the folder appears
        from edge_mla.cli.eval_cmd import format_table
        from edge_mla.evaluate import evaluate_run

        res = evaluate_run(str(tmp), cfg.data_dir, split_name="test", corrupt=args.corrupt)
        (tmp / "test.json").write_text(json.dumps(res, indent=2) + "\n")
        table.append(format_table(res))

    with ddp.rank_guard(cfg, world):
        out = train(cfg, world, test_before_publish if args.test else None, require_test=args.test)
    if out is None:  # a rank other than 0: rank 0 writes the run folder
        return 0
    print(f"run folder: {out}")
    for t in table:
        print(t)
    return 0
