"""One entry point that turns a dataset name and options into a PairedDataset."""

from __future__ import annotations

from typing import Optional

from edge_mla.data.pairs import PairedDataset
from edge_mla.errors import EdgeMlaError

DATASETS = ("avmnist", "demo", "folder")


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    seed: int = 0,
    split: str = "official",
) -> PairedDataset:
    """``name``: avmnist (real MNIST + FSDD from --data-dir), demo (built-in), or
    folder (a user's pairs.csv folder given as --data-dir)."""
    if name == "avmnist":
        from edge_mla.data.avmnist import load_avmnist

        return load_avmnist(data_dir, seed=seed, split=split)
    if name == "demo":
        from edge_mla.data.demo import load_demo

        return load_demo(seed=seed)
    if name == "folder":
        if not data_dir:
            raise EdgeMlaError("--dataset folder needs --data-dir pointing at a folder with pairs.csv")
        from edge_mla.data.folder import load_folder

        return load_folder(data_dir, seed=seed)
    raise EdgeMlaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def data_folder_of(name: str, data_dir: Optional[str]) -> Optional[str]:
    """The folder ``load_dataset(name, data_dir)`` reads, or None (the built-in demo,
    or no folder found yet: loading will say so). Why: a command that replaces its
    --out folder must not replace the data it reads (edge_mla.validate.not_over_inputs),
    and for avmnist that folder may come from $EDGE_MLA_DATA, not the flag."""
    if name == "avmnist":
        from edge_mla.data.avmnist import resolve_data_dir

        try:
            return str(resolve_data_dir(data_dir))
        except EdgeMlaError:
            return None
    return data_dir if name == "folder" else None
