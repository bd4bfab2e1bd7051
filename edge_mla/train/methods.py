"""One training step per mini-batch for each method, on the same encoders.

mla:      per batch, for each modality in a fixed order: unimodal loss through the
          shared head, backward, head-gradient projection, a step of that encoder and
          the head only. One optimizer per encoder plus one for the head, so an
          inactive encoder never moves (no weight decay, no momentum drift).
joint:    late fusion, one cross-entropy on the concat head's fused logits.
unimodal: each encoder with its own head and optimizer, trained alone.
ogm_ge:   joint + on-the-fly gradient modulation (Peng et al., CVPR 2022): the
          dominant modality's encoder gradient is scaled by 1 - tanh(alpha * (rho - 1))
          and Gaussian noise with the gradient's std is added (generalisation
          enhancement).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from edge_mla.train.config import TrainConfig
from edge_mla.train.owm import HeadProjector


def _sgd(params, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Method:
    """Base: owns the optimizers, exposes step() and the LR schedule."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        self.optimizers: list = []

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch_stats(self) -> dict:
        return {}


class MLA(Method):
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.order = [m for m in cfg.modality_order if m in model.encoders] + [m for m in model.encoders if m not in cfg.modality_order]
        self.enc_opt = {m: _sgd(model.encoders[m].parameters(), cfg) for m in self.order}
        self.head_opt = _sgd(model.head.parameters(), cfg)
        self.optimizers = list(self.enc_opt.values()) + [self.head_opt]
        self.projector = HeadProjector(model.cfg.dim, cfg.head_grad) if cfg.head_grad != "none" else None
        self.steps = 0
        self._ratios: list = []

    def alpha(self, pos: tuple) -> float:
        if self.cfg.owm_alpha != "auto":
            return float(self.cfg.owm_alpha)
        b, n = pos
        return 0.1 ** (1 + b / max(n, 1))

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        out = {}
        model = self.model
        for m in self.order:
            if m not in batch:
                continue
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            h = model.embed(m, batch[m])
            logits = model.head(h)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            if self.projector is not None and self.steps > 0:
                self.projector.update(h.detach().mean(dim=0), self.alpha(pos))
                w = model.head.weight
                w.grad = self.projector.project(w.grad)
                self._ratios.append(self.projector.last_ratio)
            self.enc_opt[m].step()
            self.head_opt.step()
            self.steps += 1
            out[f"loss_{m}"] = loss.item()
        return out

    def epoch_stats(self) -> dict:
        if self.projector is None:
            return {}
        stats = {
            "P_frobenius": self.projector.frobenius,
            "proj_ratio_mean": float(sum(self._ratios) / len(self._ratios)) if self._ratios else 1.0,
            "proj_ratio_last": self.projector.last_ratio,
        }
        self._ratios = []
        return stats


class Joint(Method):
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.opt = _sgd(model.parameters(), cfg)
        self.optimizers = [self.opt]

    def fused(self, batch: dict) -> tuple:
        h = {m: self.model.embed(m, x) for m, x in batch.items()}
        unimodal = {m: self.model.head_logits(m, h[m]) for m in h}
        return sum(unimodal.values()), unimodal

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        self.opt.zero_grad(set_to_none=True)
        logits, _ = self.fused(batch)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}


class OGMGE(Joint):
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.epoch = 0
        self._coeffs: dict = {}

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        self.opt.zero_grad(set_to_none=True)
        logits, unimodal = self.fused(batch)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        end = self.cfg.ogm_end if self.cfg.ogm_end is not None else math.inf
        out = {"loss": loss.item()}
        if self.cfg.ogm_start <= self.epoch < end and len(unimodal) > 1:
            with torch.no_grad():
                score = {m: float(F.softmax(z, dim=1).gather(1, labels[:, None]).sum()) for m, z in unimodal.items()}
            for m in unimodal:
                others = [score[o] for o in unimodal if o != m]
                rho = score[m] / max(sum(others) / len(others), 1e-8)
                coeff = 1.0 - math.tanh(self.cfg.ogm_alpha * max(rho - 1.0, 0.0)) if rho > 1 else 1.0
                self._coeffs.setdefault(m, []).append(coeff)
                for p in self.model.encoders[m].parameters():
                    if p.grad is None or p.grad.dim() < 2:
                        continue  # modulate conv/linear weights, as the authors do
                    std = float(p.grad.std()) if p.grad.numel() > 1 else 0.0
                    p.grad.mul_(coeff).add_(torch.randn_like(p.grad) * (std + 1e-8))
                out[f"coeff_{m}"] = coeff
        self.opt.step()
        return out

    def epoch_stats(self) -> dict:
        stats = {f"ogm_coeff_{m}": float(sum(v) / len(v)) for m, v in self._coeffs.items() if v}
        self._coeffs = {}
        self.epoch += 1
        return stats


class Unimodal(Method):
    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.opts = {m: _sgd(list(model.encoders[m].parameters()) + list(model.heads[m].parameters()), cfg) for m in model.encoders}
        self.optimizers = list(self.opts.values())

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        out = {}
        for m, x in batch.items():
            self.opts[m].zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model.logits(m, x), labels)
            loss.backward()
            self.opts[m].step()
            out[f"loss_{m}"] = loss.item()
        return out


METHOD_CLASSES: dict[str, Callable] = {"mla": MLA, "joint": Joint, "ogm_ge": OGMGE, "unimodal": Unimodal}


def make_method(model: nn.Module, cfg: TrainConfig) -> Method:
    return METHOD_CLASSES[cfg.method](model, cfg)
