"""`edge-mla data`: build or inspect datasets."""

from __future__ import annotations

import argparse

HELP = """\
  edge-mla data demo [--force]      build the built-in demo dataset (real handwritten
                                    digits from scikit-learn + eSpeak NG synthetic speech)
  edge-mla data info --dataset avmnist --data-dir DIR   print split sizes and facts
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", parents=[common], help="build or inspect datasets", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["demo", "info"], help="demo: build the demo dataset; info: describe a dataset")
    p.add_argument("--force", action="store_true", help="rebuild the demo dataset even if cached")
    p.add_argument("--dataset", default="avmnist", choices=["avmnist", "demo", "folder"], help="for info (default avmnist)")
    p.add_argument("--data-dir", help="for info: the data folder")
    p.add_argument("--split", default="official", choices=["official", "speaker"], help="for info: avmnist split")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from edge_mla.data import load_dataset
    from edge_mla.data.demo import build_demo, demo_path, read_demo_archive
    from edge_mla.errors import EdgeMlaError

    if args.action == "demo":
        path = demo_path()
        if path.is_file() and not args.force:
            try:
                read_demo_archive(path)
                print(f"demo dataset already built: {path}")
                return 0
            except EdgeMlaError as exc:  # a corrupt cache is what this command is for
                print(f"rebuilding: {exc}")
        print(f"demo dataset written: {build_demo(path)}")
        return 0
    ds = load_dataset(args.dataset, args.data_dir, split=args.split)
    print(json.dumps({"name": ds.name, "classes": ds.classes, "train": len(ds.train), "val": len(ds.val), "test": len(ds.test), "sample_rate": ds.sample_rate, "window": ds.window, "image_size": ds.image_size, **ds.info}, indent=2, default=str))
    return 0
