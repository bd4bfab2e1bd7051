"""Run by tests/test_ddp.py under torch.distributed.run: a few training steps of one
method on this rank's shards of synthetic global batches, then this rank's state
(weights, BatchNorm statistics after the sync, OWM P) to OUT/rank{r}.pt.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT METHOD
"""

import sys

import numpy as np
import torch

from edge_mla.data import PairedSplit
from edge_mla.models import ModelConfig, build_model
from edge_mla.train.config import HEAD_KIND, TrainConfig
from edge_mla.train.dist import destroy, shard_batches, world_from_env
from edge_mla.train.methods import make_method


def synthetic_split(n: int = 50, seed: int = 0) -> PairedSplit:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 28, 28), dtype=np.float32)
    clips = [(rng.standard_normal(6000 + 50 * i) * 3000).astype(np.int16) for i in range(n)]
    labels = rng.integers(0, 10, n)
    return PairedSplit(images, clips, np.arange(n), np.arange(n), labels)


def main(out: str, method: str) -> None:
    world = world_from_env()
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, head_grad="owm", batch_size=8, nproc=world.size, seed=0)
    model = build_model(ModelConfig(preset="tiny", head=HEAD_KIND[method]))
    torch.manual_seed(100 + world.rank)  # different init per rank: the broadcast must fix it
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.01)
    world.broadcast_module(model)
    m = make_method(model, cfg, world)
    split = synthetic_split()
    rng = np.random.default_rng(0)
    model.train()
    for b, (img, aud, y) in enumerate(shard_batches(split, cfg.batch_size, 8000, rng, world)):
        m.step({"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)}, torch.from_numpy(y), (b, 7))
        if b == 3:
            break
    world.sync_buffers(model)
    state = {
        "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "P": m.projector.P.clone() if getattr(m, "projector", None) is not None else None,
        "P_updates": m.projector.updates if getattr(m, "projector", None) is not None else 0,
        "ogm": m.epoch_stats() if method == "ogm_ge" else {},
        "world": world.size,
    }
    torch.save(state, f"{out}/rank{world.rank}.pt")
    destroy(barrier=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
