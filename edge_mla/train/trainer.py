"""The training harness shared by every method: data, epochs, validation, checkpoint
selection on validation (never test), and the run folder.

Run folder: config.json (resolved TrainConfig + model config + dataset facts),
metrics.jsonl (one line per epoch), curves.png, checkpoint.pt (the best epoch on the
validation split by the method's own fusion rule), test.json (final test metrics).

Under torch.distributed (edge_mla.train.dist) every rank trains on its shard of each
global batch; only rank 0 validates and writes the run folder, which looks exactly like
a single-process one.

The model and every batch live on cfg.device resolved (edge_mla.train.device: auto is
CUDA when there is one); config.json records the device used as "device", and the
checkpoint holds CPU tensors whatever the device, so it loads anywhere.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from edge_mla import __version__
from edge_mla.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, save_checkpoint
from edge_mla.data import iterate_batches, load_dataset
from edge_mla.data.registry import data_folder_of
from edge_mla.errors import EdgeMlaError
from edge_mla.evaluate import evaluate
from edge_mla.staging import staged_folder
from edge_mla.train.config import TrainConfig
from edge_mla.train.device import rank_device, resolve_device
from edge_mla.train.dist import World, shard_batches
from edge_mla.validate import not_over_inputs, writable_location

if TYPE_CHECKING:  # torch is imported where it is used
    import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.dataset}-{cfg.method}-{cfg.preset}-s{cfg.seed}-{stamp}"


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """The run folder's final path, checked before any work: the folder itself is
    only written by ``train`` at the very end (see edge_mla.staging)."""
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if out.exists() and not out.is_dir():
        raise EdgeMlaError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not cfg.force:
        raise EdgeMlaError(f"{out}: run folder exists and is not empty (use --force to overwrite)")
    writable_location(out, "--out")
    not_over_inputs(out, {"the data folder": data_folder_of(cfg.dataset, cfg.data_dir)})
    return out


def _subsample(split, limit, rng):
    if limit is None or limit >= len(split):
        return split
    return split.subset(np.sort(rng.choice(len(split), size=limit, replace=False)))


def train(cfg: TrainConfig, world: Optional[World] = None, before_publish: Optional[Callable[[Path], None]] = None, require_test: bool = False) -> Optional[Path]:
    """Train into a temporary folder beside the run folder and rename it into place
    at the end: an error, Ctrl-C or SIGTERM leaves nothing (and an old run folder
    replaced with --force survives until then). ``before_publish(tmp)`` adds files
    (the CLI's test.json) before the rename. Under torch.distributed only rank 0
    writes; the other ranks return None."""
    world = world or World()
    device = rank_device(resolve_device(cfg.device), world.local_rank)  # before any folder: --device cuda without CUDA is one line
    if not world.is_main:
        _train_into(cfg, None, world, device, require_test)
        return None
    final = prepare_run_dir(cfg)
    with staged_folder(final) as tmp:
        _train_into(cfg, tmp, world, device, require_test)
        if before_publish is not None:
            before_publish(tmp)
    return final


def _train_into(cfg: TrainConfig, out: Optional[Path], world: World, device: "torch.device", require_test: bool = False) -> Optional[Path]:
    import torch

    from edge_mla.models import ModelConfig, build_model
    from edge_mla.train.methods import make_method

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ds = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, split=cfg.split)
    if require_test and len(ds.test) == 0:  # the run was lost to a traceback after training
        raise EdgeMlaError(f"dataset {ds.name}: the test split has no pairs, so the run cannot be scored at the end; add test pairs, or pass --no-test")
    rng = np.random.default_rng(cfg.seed)
    train_split = _subsample(ds.train, cfg.limit, rng)
    val_split = _subsample(ds.val, cfg.val_limit, np.random.default_rng(cfg.seed + 1))

    mcfg = ModelConfig(
        preset=cfg.preset,
        num_classes=len(ds.classes),
        head=cfg.head_kind,
        image_size=ds.image_size,
        sample_rate=ds.sample_rate,
        window=ds.window,
    )
    model = build_model(mcfg).to(device)  # initialised on the CPU: the same weights for a seed on any device
    world.broadcast_module(model)  # same seed already; rank 0's weights to be sure
    method = make_method(model, cfg, world)
    resolved = {
        "train": cfg.to_dict(),
        "model": mcfg.to_dict(),
        "dataset": {"name": ds.name, "classes": ds.classes, "train_pairs": len(train_split), "val_pairs": len(val_split), "test_pairs": len(ds.test), **ds.info},
        "edge_mla_version": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,  # what cfg.device ("auto") resolved to
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Flat keys that later stages (export, calibration) read without knowing TrainConfig.
    resolved.update({k: resolved["train"][k] for k in ("dataset", "data_dir", "split", "seed", "method", "preset")})
    if cfg.data_dir:
        resolved["data_dir"] = str(Path(cfg.data_dir).resolve())
    if world.is_main:
        (out / CONFIG_NAME).write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    log.info("run folder %s: %s on %s (%d train pairs, %d val pairs)", out, cfg.method, ds.name, len(train_split), len(val_split))

    n_batches = int(np.ceil((len(train_split) - len(train_split) % world.size) / cfg.batch_size))
    aug_rng = np.random.default_rng([cfg.seed, world.rank, 1]) if world.active and cfg.augment else None
    step_epoch = max(1, int(round(cfg.lr_step * cfg.epochs))) if cfg.lr_step < 1 else cfg.epochs + 1
    best_score, best_epoch = -1.0, -1
    history = []
    metrics_path = out / METRICS_NAME if world.is_main else None
    if world.is_main:
        metrics_path.write_text("")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for epoch in range(cfg.epochs):
        lr = cfg.lr * (0.1 if epoch >= step_epoch else 1.0)
        method.set_lr(lr)
        model.train()
        t0 = time.perf_counter()
        sums: dict = {}
        if world.active:
            batches = shard_batches(train_split, cfg.batch_size, ds.window, rng, world, aug_rng, cfg.audio_augment())
        else:
            batches = iterate_batches(train_split, cfg.batch_size, ds.window, shuffle=True, rng=rng, augment=cfg.audio_augment())
        show = cfg.progress and world.is_main
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=None if show else True, leave=False) if tqdm else batches
        for b, (img, aud, y) in enumerate(bar):
            batch = {"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)}
            batch = {m: x.to(device) for m, x in batch.items() if m in model.encoders}
            stats = method.step(batch, torch.from_numpy(y).to(device), (b, n_batches))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if tqdm and show and b % 20 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k.startswith("loss")})
        train_time = time.perf_counter() - t0
        if world.active:
            sums = _rank_mean(sums, world, device)
            world.sync_buffers(model)  # BatchNorm statistics: the validated model is every rank's
        bad = next((n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:  # a diverged run was published with NaN weights (and scored at chance)
            raise EdgeMlaError(f"training diverged in epoch {epoch + 1}: {bad} holds NaN or inf (lower --lr, or check the data for NaN); no run folder written")
        if not world.is_main:
            method.epoch_stats()  # keeps per-epoch state (OGM-GE's epoch count) in step
            continue
        val = evaluate(model, val_split, ds.window, full=False)
        score = val["fused" if cfg.native_fusion == "entropy" else f"fused_{cfg.native_fusion}"]
        rec = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_seconds": round(train_time, 3),
            "samples_per_s": round(len(train_split) / train_time, 1),
            **{k: v / n_batches for k, v in sums.items()},
            **method.epoch_stats(),
            "val": {k: v for k, v in val.items() if k != "weights"},
            "val_score": score,
        }
        history.append(rec)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch + 1
            save_checkpoint(out / CHECKPOINT_NAME, model, ds.classes, cfg.method, epoch + 1, {"val": rec["val"], "config": cfg.to_dict()})
        log.info(
            "epoch %d/%d: %.0f samples/s, val image %.3f audio %.3f fused %.3f%s",
            epoch + 1, cfg.epochs, rec["samples_per_s"], val.get("image", float("nan")), val.get("audio", float("nan")), score,
            " (best)" if improved else "",
        )
    if not world.is_main:
        return None
    summary = {"best_epoch": best_epoch, "best_val_score": best_score, "epochs": cfg.epochs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        from edge_mla.plots import plot_curves

        plot_curves(history, out / "curves.png", title=f"{cfg.method} / {cfg.preset} / {ds.name}")
    except Exception as exc:  # a missing plot must not lose a finished run
        log.warning("could not draw curves.png: %s", exc)
    return out


def _rank_mean(sums: dict, world: World, device: "torch.device") -> dict:
    """The per-epoch loss sums averaged over the ranks (the logged losses are the global
    batch's); made on the training device, the only one NCCL reduces on."""
    import torch

    keys = sorted(sums)
    t = world.all_reduce_mean(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device))
    return dict(zip(keys, t.tolist()))
