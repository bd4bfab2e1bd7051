"""Orthogonal weight modification of the shared head's gradient (MLA paper, Eq. 3).

P starts as the identity and is carried across steps and epochs. Before each modality
step except the very first of training, with hbar the batch mean of that modality's
head inputs:  q = P hbar;  P <- P - q q^T / (alpha + hbar^T q);  G <- G P.

Measured on these machines, P collapses (|P|_F falls from sqrt(d) towards 0 on the
directions in use), so the projected gradient shrinks to a few percent of the raw one
and the head all but stops learning. ``owm_norm`` keeps the paper's direction G P but
rescales it to the raw gradient's Frobenius norm, so the head keeps learning at the
optimiser's step size. The released code's bugs (a hook that never fires; dividing P
by its Frobenius norm) are not copied.
"""

from __future__ import annotations

import torch


class HeadProjector:
    def __init__(self, dim: int, mode: str = "owm", device: "torch.device | str | None" = None) -> None:
        """``device``: the head's device (None: the CPU). P is multiplied with the head's
        gradient and its features every step, so it lives beside them."""
        if mode not in ("owm", "owm_norm"):
            raise ValueError(f"unknown projection mode {mode!r}")
        self.mode = mode
        self.P = torch.eye(dim, dtype=torch.float64, device=device)
        self.updates = 0
        self.last_ratio = 1.0  # |G P|_F / |G|_F of the last projected gradient (before rescaling)

    @torch.no_grad()
    def update(self, hbar: torch.Tensor, alpha: float) -> None:
        h = hbar.detach().to(torch.float64).reshape(-1, 1)
        q = self.P @ h
        denom = alpha + float((h.t() @ q).item())
        self.P -= (q @ q.t()) / denom
        self.P = 0.5 * (self.P + self.P.t())  # keep it exactly symmetric
        self.updates += 1

    @torch.no_grad()
    def project(self, grad: torch.Tensor) -> torch.Tensor:
        """G -> G P (or its norm-preserving variant). ``grad`` is (C, d)."""
        g = grad.to(torch.float64)
        out = g @ self.P
        raw, new = float(g.norm()), float(out.norm())
        self.last_ratio = new / raw if raw > 0 else 1.0
        if self.mode == "owm_norm" and new > 0:
            out = out * (raw / new)
        return out.to(grad.dtype)

    @property
    def frobenius(self) -> float:
        return float(self.P.norm())
