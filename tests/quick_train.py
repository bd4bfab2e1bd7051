"""A few optimiser steps on paired batches: the shared way test fixtures make a
model that is better than chance in seconds (not the trainer under test)."""

from __future__ import annotations

import numpy as np


def quick_train(model, split, window: int, steps: int, opt, batch_size: int, seed: int = 0, **batch_kw) -> None:
    """``steps`` updates of the summed per-modality cross-entropy; leaves ``model`` in eval mode."""
    import torch

    from edge_mla.data import iterate_batches

    rng = np.random.default_rng(seed)
    model.train()
    done = 0
    while done < steps:
        for img, aud, y in iterate_batches(split, batch_size, window, shuffle=True, rng=rng, **batch_kw):
            out = model({"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)})
            yt = torch.from_numpy(y)
            loss = sum(torch.nn.functional.cross_entropy(v, yt) for v in out.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()
