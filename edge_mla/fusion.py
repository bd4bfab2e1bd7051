"""Uncertainty (entropy) weighted fusion: the one implementation used by
evaluation, export checks and the runtime alike.

Weights are computed per sample (the authors' code took one weight per batch, so a
prediction depended on its batch-mates). A missing modality is left out of the sums.
With per-modality ``reliability`` scores r (the engines' second output, see
``edge_mla.reliability``) each weight is multiplied by ``min(1, r / reference) ** power``
and renormalised, and a modality scoring below ``threshold`` is left out like a
missing one: a live but broken sensor (r near 0) gets (near) zero weight instead of
out-voting the healthy one with a confidently wrong answer, while a clean input the
detector is unsure of still votes. ``reference`` is the r of a typical clean input of
that modality (1 unless given): each modality's map tops out at its own level.
``power`` 0 is a hard gate. Pure numpy so that the runtime never needs torch.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

FUSION_RULES = ("entropy", "mean", "sum")


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - np.max(logits, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of softmax(logits) along the last axis."""
    z = logits - np.max(logits, axis=-1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return -np.sum(np.exp(logp) * logp, axis=-1)


def _stacked(names: list, n: int, reliability: Mapping[str, np.ndarray]) -> np.ndarray:
    """(M, N) reliability per modality and sample; a modality without scores counts as 1."""
    return np.stack([np.asarray(reliability[m], np.float64).reshape(n) if m in reliability else np.ones(n) for m in names])


def reliable_mask(
    names: list,
    n: int,
    available: Optional[Mapping[str, np.ndarray]] = None,
    reliability: Optional[Mapping[str, np.ndarray]] = None,
    threshold: float = 0.5,
) -> tuple[dict, np.ndarray]:
    """(mask per modality, all_degraded (N,)): a modality counts for a sample when it
    is available and (with ``reliability``) scores at least ``threshold``. Where every
    available modality is judged unreliable, ``all_degraded`` is True and the mask
    keeps only the most reliable available one (evaluation still scores a forced
    guess; the runtime says "no decision" instead)."""
    avail = {m: np.ones(n, bool) if available is None or m not in available else np.asarray(available[m], bool) for m in names}
    if reliability is None:
        return avail, np.zeros(n, bool)
    r = _stacked(names, n, reliability)
    av = np.stack([avail[m] for m in names])
    ok = av & (r >= threshold)
    degraded = av.any(axis=0) & ~ok.any(axis=0)
    best = np.argmax(np.where(av, r, -np.inf), axis=0)  # the least unreliable available modality
    fallback = np.arange(len(names))[:, None] == best[None, :]
    mask = np.where(degraded[None, :], fallback & av, ok)
    return {m: mask[i] for i, m in enumerate(names)}, degraded


def fusion_weights(
    logits: Mapping[str, np.ndarray],
    rule: str = "entropy",
    available: Optional[Mapping[str, np.ndarray]] = None,
    reliability: Optional[Mapping[str, np.ndarray]] = None,
    threshold: float = 0.5,
    power: float = 0.0,
    reference: Optional[Mapping[str, float]] = None,
) -> dict[str, np.ndarray]:
    """Per-sample weight of each modality, shape (N,) each, summing to 1 over the
    modalities available for that sample.

    entropy: lambda_m = softmax over modalities of (-e_m), i.e.
        exp(max_j e_j - e_m) / sum_k exp(max_j e_j - e_k).
    mean: equal weights; sum: weight 1 each (the late-fusion sum of logits).
    ``available`` maps a modality to a boolean (N,) mask; a masked-out modality
    gets weight 0 for that sample, and so does one whose ``reliability`` is below
    ``threshold`` (unless all are: see ``reliable_mask``). With ``reliability`` and
    ``power`` > 0 the rule's weights are multiplied by min(1, r / reference) ** power
    (and, for entropy and mean, renormalised): e.g. entropy weights 0.5 / 0.5 with
    r = 1.0 / 0.5 and power 3 become 1 / 0.125, i.e. 0.889 / 0.111; with
    ``reference`` {"b": 0.625} the same r gives b 0.8 ** 3 = 0.512, i.e.
    0.661 / 0.339. A modality missing from ``reference`` has reference 1. The
    ``threshold`` applies to r itself.
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {', '.join(FUSION_RULES)}")
    names = list(logits)
    if not names:
        raise ValueError("fusion needs at least one modality")
    n = np.asarray(logits[names[0]]).shape[0]
    ok, degraded = reliable_mask(names, n, available, reliability, threshold)
    mask = np.stack([ok[m] for m in names])  # (M, N)
    soft = np.ones(mask.shape)
    if reliability is not None and power > 0:
        ref = np.array([float((reference or {}).get(m, 1.0)) for m in names])[:, None]
        soft = np.clip(_stacked(names, n, reliability) / ref, 0.0, 1.0) ** power
        # where every modality fell below the threshold the fallback votes alone, and
        # a sample whose kept modalities all score 0 keeps the rule's own weights
        flat = degraded | ~np.any(mask & (soft > 0), axis=0)
        soft = np.where(flat[None, :], 1.0, soft)
    if rule == "sum":
        w = mask * soft
    elif rule == "mean":
        num = mask * soft
        w = num / np.maximum(num.sum(axis=0, keepdims=True), 1e-300)
    else:
        e = np.stack([entropy(np.asarray(logits[m], np.float64)) for m in names])  # (M, N)
        e = np.where(mask, e, -np.inf)
        emax = np.max(e, axis=0, keepdims=True)
        emax = np.where(np.isfinite(emax), emax, 0.0)
        num = np.where(mask, np.exp(emax - np.where(mask, e, 0.0)), 0.0) * soft
        w = num / np.maximum(num.sum(axis=0, keepdims=True), 1e-300)
    return {m: w[i].astype(np.float32) for i, m in enumerate(names)}


def fuse(
    logits: Mapping[str, np.ndarray],
    rule: str = "entropy",
    available: Optional[Mapping[str, np.ndarray]] = None,
    reliability: Optional[Mapping[str, np.ndarray]] = None,
    threshold: float = 0.5,
    power: float = 0.0,
    reference: Optional[Mapping[str, float]] = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused logits (N, C) and the per-sample weights used."""
    w = fusion_weights(logits, rule, available, reliability, threshold, power, reference)
    fused = sum(w[m][:, None] * np.asarray(logits[m], np.float32) for m in logits)
    return np.asarray(fused, np.float32), w
