"""Accuracy of a trained model: each modality alone, fused (entropy, mean, sum), and
with one modality missing or corrupted. Fusion goes through edge_mla.fusion, the same
code the runtime runs."""

from __future__ import annotations

from typing import Optional

import numpy as np

from edge_mla.data.pairs import PairedSplit, iterate_batches
from edge_mla.fusion import fuse

CORRUPTIONS = ("image_black", "audio_silence", "audio_noise")


def collect_logits(model, split: PairedSplit, window: int, batch_size: int = 256, corrupt: Optional[str] = None, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Per-modality logits (N, C) over a split, optionally with a corrupted input."""
    import torch

    rng = np.random.default_rng(seed)
    outs: dict = {m: [] for m in model.modalities}
    labels = []
    model.eval()
    with torch.no_grad():
        for img, aud, y in iterate_batches(split, batch_size, window):
            if corrupt == "image_black":
                img = np.zeros_like(img)
            elif corrupt == "audio_silence":
                aud = np.zeros_like(aud)
            elif corrupt == "audio_noise":
                aud = rng.normal(0.0, 0.1, aud.shape).astype(np.float32)
            inputs = {"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)}
            for m in model.modalities:
                outs[m].append(model.logits(m, inputs[m]).numpy())
            labels.append(y)
    return {m: np.concatenate(v) for m, v in outs.items()}, np.concatenate(labels)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else float("nan")


def fused_accuracy(logits: dict, labels: np.ndarray, rule: str, drop: Optional[str] = None) -> tuple[float, dict]:
    n = len(labels)
    available = {m: np.full(n, m != drop) for m in logits}
    z, w = fuse(logits, rule, available)
    return accuracy(z, labels), {m: float(np.mean(v)) for m, v in w.items()}


def evaluate(model, split: PairedSplit, window: int, batch_size: int = 256, full: bool = True, corrupt: bool = True) -> dict:
    """The metrics `edge-mla eval --json` prints. ``full=False`` (per-epoch
    validation) gives accuracies and fusion only; ``corrupt=False`` keeps the
    missing-modality cases but skips the three corrupted-input passes."""
    logits, y = collect_logits(model, split, window, batch_size)
    res: dict = {"n": int(len(y))}
    for m in logits:
        res[m] = accuracy(logits[m], y)
    res["fused"], w = fused_accuracy(logits, y, "entropy")
    res["fused_mean"], _ = fused_accuracy(logits, y, "mean")
    res["fused_sum"], _ = fused_accuracy(logits, y, "sum")
    res["weights"] = {"clean": w}
    if not full or len(logits) < 2:
        return res
    for m in logits:
        res[f"{m}_missing"], _ = fused_accuracy(logits, y, "entropy", drop=m)
    for case in CORRUPTIONS if corrupt else ():
        if case.split("_")[0] not in logits:
            continue
        c_logits, _ = collect_logits(model, split, window, batch_size, corrupt=case)
        res[case], res["weights"][case] = fused_accuracy(c_logits, y, "entropy")
        res[f"{case}_mean"], _ = fused_accuracy(c_logits, y, "mean")
    return res
