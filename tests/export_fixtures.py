"""Fixtures for the export and calibration tests: a tiny run trained for a few steps
on the demo data, and one INT8 export of it shared by the tests that only read it.

Kept out of conftest.py (owned by the trainer's tests). Test modules load this
file with ``pytest_plugins = ["export_fixtures"]`` (not ``from ... import``: an
imported fixture is a separate fixture per module, so a session fixture would be
built once per module). ``demo_cache`` comes from conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quick_train import quick_train


def make_tiny_run(run: Path, steps: int = 40, seed: int = 0) -> Path:
    """A run folder like 'edge-mla train' writes, from a few SGD steps (seconds).
    At 40 steps the image half is above chance (about 0.3 on the demo data), so the
    gate measures something; the audio half is near chance (0.1-0.3, by CPU), so
    figures that need a trained encoder belong in the benchmarks, not here."""
    import torch

    from edge_mla.checkpoint import save_checkpoint
    from edge_mla.data import load_dataset
    from edge_mla.models import ModelConfig, build_model

    torch.manual_seed(seed)
    run.mkdir(parents=True, exist_ok=True)
    model = build_model(ModelConfig(preset="tiny", head="shared"))
    ds = load_dataset("demo", seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    quick_train(model, ds.train, ds.window, steps, opt, batch_size=32, seed=seed)
    save_checkpoint(run / "checkpoint.pt", model, ds.classes, "mla", 1)
    (run / "config.json").write_text(json.dumps({"dataset": "demo", "data_dir": None, "seed": seed, "split": "official"}))
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_cache) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tiny")


FAST = dict(calib_size=40, eval_limit=120, parity_samples=32, latency_repeats=5, latency_warmup=2, progress=False)
# Secondary exports use the TorchScript exporter: ~1 s instead of ~10-20 s for dynamo
# on 2 cores, and it keeps the fallback exporter tested (parity is checked inside).
QUICK = {**FAST, "exporter": "torchscript"}
QUICK_FLAGS = ["--exporter", "torchscript", "--no-progress", "--latency-repeats", "3", "--eval-limit", "40"]


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """One INT8 export (--int8 on, --engine trt without TensorRT) of the tiny run."""
    from edge_mla.export.pipeline import ExportConfig, export_run

    out = tmp_path_factory.mktemp("export") / "engines"
    res = export_run(ExportConfig(run_dir=tiny_run, out=out, int8="on", engine="trt", calib_method="minmax", **FAST))
    return res
