"""Which training samples calibrate INT8: a seeded, class-stratified subset.

Stratifying keeps every class's activation ranges in the calibration set even when
the set is small, so a rare class's large activations are not clipped away.
"""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` samples (all of them if fewer), spread over the classes in
    proportion to their frequency, at least one per class while ``size`` allows.

    Deterministic for a given ``seed``; the returned indices are sorted so that
    readers walk the data in storage order.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if size <= 0:
        raise ValueError(f"calibration size must be positive, got {size}")
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder apportionment of `size` over the classes.
    exact = counts / n * size
    quota = np.floor(exact).astype(np.int64)
    if size >= len(classes):
        quota = np.maximum(quota, 1)
    remainder = size - int(quota.sum())
    if remainder > 0:
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        for i in order[:remainder]:
            quota[i] += 1
    elif remainder < 0:  # the at-least-one rule overshot: take back from the largest quotas
        for i in np.argsort(-quota, kind="stable")[: -remainder]:
            quota[i] -= 1
    quota = np.minimum(quota, counts)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota) if q > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
