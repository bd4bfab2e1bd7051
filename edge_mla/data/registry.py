"""One entry point that turns a dataset name and options into a PairedDataset."""

from __future__ import annotations

import logging
from typing import Optional

from edge_mla.data.pairs import PairedDataset
from edge_mla.errors import EdgeMlaError
from edge_mla.validate import not_empty_path

DATASETS = ("avmnist", "demo", "folder")


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    seed: int = 0,
    split: str = "official",
) -> PairedDataset:
    """``name``: avmnist (real MNIST + FSDD from --data-dir), demo (built-in), or
    folder (a user's pairs.csv folder given as --data-dir)."""
    not_empty_path(data_dir, "data_dir")  # "" fell back to $EDGE_MLA_DATA without a word
    if name == "avmnist":
        from edge_mla.data.avmnist import load_avmnist

        return load_avmnist(data_dir, seed=seed, split=split)
    if name == "demo":
        from edge_mla.data.demo import load_demo

        if data_dir:  # it was ignored without a word
            logging.getLogger(__name__).warning("--data-dir %s is not used: the demo dataset is built in (its cache: EDGE_MLA_CACHE)", data_dir)

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


def load_for_model(spec: dict, model_cfg, classes: Optional[list] = None) -> PairedDataset:
    """The dataset of ``spec`` ({dataset, data_dir, seed, split}, from a run folder's
    config.json) for a checkpoint's model: a folder dataset is loaded at the model's
    rate, window and image size; any dataset must then have the model's number of
    classes (and, with ``classes``, the same names in the same order), rate and image
    size. Why one home for eval and export: eval scored a cat/dog/eel model on a
    -1/0/1 folder, or a 16 kHz model on 8 kHz audio, and printed the accuracy."""
    name = spec["dataset"]
    if name == "folder":
        if not spec.get("data_dir"):
            raise EdgeMlaError("--dataset folder needs --data-dir pointing at a folder with pairs.csv")
        from edge_mla.data.folder import load_folder

        ds = load_folder(spec["data_dir"], seed=spec["seed"], sample_rate=model_cfg.sample_rate, window_seconds=model_cfg.window / model_cfg.sample_rate, image_size=model_cfg.image_size)
    else:
        ds = load_dataset(name, spec.get("data_dir"), seed=spec["seed"], split=spec["split"])
    if len(ds.classes) != model_cfg.num_classes:
        raise EdgeMlaError(f"dataset {name} has {len(ds.classes)} classes but the checkpoint has {model_cfg.num_classes}")
    if classes is not None and list(ds.classes) != list(classes):
        shown = (lambda c: ", ".join(map(str, c[:12])) + (", ..." if len(c) > 12 else ""))
        raise EdgeMlaError(f"dataset {name} has classes {shown(list(ds.classes))} but the checkpoint was trained on {shown(list(classes))}")
    if ds.sample_rate != model_cfg.sample_rate or ds.image_size != model_cfg.image_size or ds.window != model_cfg.window:
        raise EdgeMlaError(
            f"dataset {name} ({ds.sample_rate} Hz, {ds.window}-sample windows, {ds.image_size}px images) does not match the model "
            f"({model_cfg.sample_rate} Hz, {model_cfg.window}-sample windows, {model_cfg.image_size}px)"
        )
    return ds
