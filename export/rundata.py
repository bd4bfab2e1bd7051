"""The data an export checks and calibrates with: the run's own dataset, found
through the run folder's config.json (dataset, data_dir, seed, split), overridable
with --dataset/--data-dir. Loaded with the model's sample rate, window and image
size so the engines see exactly what training saw."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from edge_mla.errors import EdgeMlaError

log = logging.getLogger(__name__)

def dataset_spec(run_dir: Path, dataset: Optional[str], data_dir: Optional[str]) -> dict:
    """{dataset, data_dir, seed, split} from config.json (checked by the one schema in
    edge_mla.manifest) with the overrides applied."""
    from edge_mla.manifest import load_run_config

    cfg = load_run_config(run_dir, required=False)
    name = dataset or cfg.dataset
    if not name:
        raise EdgeMlaError(f"{cfg.path}: missing, or names no dataset; pass --dataset (and --data-dir) to say which data to check the engines on")
    # A different dataset than the run's: its data_dir from the run no longer applies.
    ddir = data_dir if data_dir else (cfg.data_dir if not dataset or dataset == cfg.dataset else None)
    return {"dataset": name, "data_dir": ddir, "seed": cfg.seed, "split": cfg.split}
