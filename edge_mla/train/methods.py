"""One training step per mini-batch for each method, on the same encoders.

mla:      per batch, for each modality in a fixed order: unimodal loss through the
          shared head, backward, head-gradient projection, a step of that encoder and
          the head only. One optimizer per encoder plus one for the head, so an
          inactive encoder never moves (no weight decay, no momentum drift).
joint:    late fusion, one cross-entropy on the concat head's fused logits.
unimodal: each encoder with its own head and optimizer, trained alone.
ogm_ge:   joint + on-the-fly gradient modulation (Peng et al., CVPR 2022), as in the
          paper and the authors' code: rho = the dominant modality's summed true-class
          softmax score over the batch / the other's; when rho > 1 its encoder's
          convolution-weight gradients (4-D only) are scaled by 1 - tanh(alpha * rho),
          the other's by 1; then zero-mean Gaussian noise with each gradient's own
          (pre-scaling) std is added to every conv weight gradient of both encoders
          (generalisation enhancement).
mmpareto: concat head + one unimodal head per modality, loss L_mm + sum_m L_m; each
          encoder's gradient is the Pareto integration of its multimodal and unimodal
          gradients (Wei and Hu, ICML 2024; see pareto_weight).

Under torch.distributed every gradient is averaged over the ranks before a method
looks at it, and every batch statistic is all-reduced (edge_mla.train.dist), so all
ranks take identical steps.

Every tensor a method makes (MLA's projector, OGM-GE's noise and its generator,
MMPareto's gradients) is made on the model's device (Method.device), so the methods run
unchanged on the CPU or a GPU.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from edge_mla.train.config import TrainConfig
from edge_mla.train.device import module_device
from edge_mla.train.dist import World
from edge_mla.train.owm import HeadProjector


def _sgd(params, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Method:
    """Base: owns the optimizers, exposes step() and the LR schedule. ``device`` is the
    model's, read once: move the model before making its method."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        self.model, self.cfg = model, cfg
        self.world = world or World()
        self.device = module_device(model)
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
    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        super().__init__(model, cfg, world)
        self.order = [m for m in cfg.modality_order if m in model.encoders] + [m for m in model.encoders if m not in cfg.modality_order]
        self.enc_opt = {m: _sgd(model.encoders[m].parameters(), cfg) for m in self.order}
        self.head_opt = _sgd(model.head.parameters(), cfg)
        self.optimizers = list(self.enc_opt.values()) + [self.head_opt]
        self.projector = HeadProjector(model.cfg.dim, cfg.head_grad, device=self.device) if cfg.head_grad != "none" else None
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
            self.world.sync_grads(list(model.encoders[m].parameters()) + list(model.head.parameters()))
            if self.projector is not None and self.steps > 0:
                # equal shards, so the mean of the ranks' means is the global batch mean
                hbar = self.world.all_reduce_mean(h.detach().mean(dim=0).to(torch.float64))
                self.projector.update(hbar, self.alpha(pos))
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
    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        super().__init__(model, cfg, world)
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
        self.world.sync_grads(self.model.parameters())
        self.opt.step()
        return {"loss": loss.item()}


def ogm_coefficients(scores: dict, alpha: float) -> dict:
    """OGM-GE's per-modality gradient coefficient from the batch's summed true-class
    softmax scores: the dominant modality (rho = its score / the others' mean > 1) gets
    1 - tanh(alpha * rho), the rest 1 (paper Eq. 10 and the authors' code)."""
    out = {}
    for m, sc in scores.items():
        others = [scores[o] for o in scores if o != m]
        rho = sc / max(sum(others) / len(others), 1e-12)
        out[m] = 1.0 - math.tanh(alpha * rho) if rho > 1 else 1.0
    return out


class OGMGE(Joint):
    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        super().__init__(model, cfg, world)
        self.epoch = 0
        self._coeffs: dict = {}
        # Same seed on every rank, drawn after the averaged gradient: identical noise.
        # On the gradients' device: torch.randn samples with a generator of its own device
        # only (a CUDA generator's stream differs from the CPU's; the ranks still agree).
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919)

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        self.opt.zero_grad(set_to_none=True)
        logits, unimodal = self.fused(batch)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        self.world.sync_grads(self.model.parameters())
        end = self.cfg.ogm_end if self.cfg.ogm_end is not None else math.inf
        out = {"loss": loss.item()}
        if self.cfg.ogm_start <= self.epoch < end and len(unimodal) > 1:
            names = list(unimodal)
            with torch.no_grad():
                sc = torch.stack([F.softmax(unimodal[m], dim=1).gather(1, labels[:, None]).sum().to(torch.float64) for m in names])
            sc = self.world.all_reduce_sum(sc)  # the global batch's scores
            coeffs = ogm_coefficients({m: float(v) for m, v in zip(names, sc)}, self.cfg.ogm_alpha)
            for m, coeff in coeffs.items():
                self._coeffs.setdefault(m, []).append(coeff)
                for p in self.model.encoders[m].parameters():
                    if p.grad is None or p.grad.dim() != 4:
                        continue  # the authors modulate convolution weights only
                    std = float(p.grad.std())
                    noise = torch.randn(p.grad.shape, generator=self.noise, dtype=p.grad.dtype, device=p.grad.device) * (std + 1e-8)
                    p.grad.mul_(coeff).add_(noise)
                out[f"coeff_{m}"] = coeff
        self.opt.step()
        return out

    def epoch_stats(self) -> dict:
        stats = {f"ogm_coeff_{m}": float(sum(v) / len(v)) for m, v in self._coeffs.items() if v}
        self._coeffs = {}
        self.epoch += 1
        return stats


def pareto_weight(g_mm: torch.Tensor, g_m: torch.Tensor) -> float:
    """MMPareto's weight on the multimodal gradient (1 - it on the unimodal one): 0.5 when
    the two agree (cosine > 0), else the two-task min-norm (MGDA) point,
    a = clip(((g_m - g_mm) . g_m) / |g_mm - g_m|^2, 0, 1)."""
    g_mm, g_m = g_mm.to(torch.float64), g_m.to(torch.float64)
    if float(F.cosine_similarity(g_mm, g_m, dim=0)) > 0:
        return 0.5
    diff = float((g_mm - g_m).pow(2).sum())
    if diff == 0:
        return 0.5
    return min(max(float((g_m - g_mm) @ g_m) / diff, 0.0), 1.0)


def pareto_combine(g_mm: list, g_m: list, gamma: float) -> tuple:
    """Per-tensor MMPareto gradients for one encoder from its multimodal and unimodal
    gradients (lists over its parameters): new = 2 (a g_mm + (1 - a) g_m), stretched to
    the plain summed-loss gradient g_mm + g_m where that is longer, times gamma."""
    a = pareto_weight(torch.cat([g.reshape(-1) for g in g_mm]), torch.cat([g.reshape(-1) for g in g_m]))
    out = []
    for gm, gu in zip(g_mm, g_m):
        new = 2 * (a * gm + (1 - a) * gu)
        plain, norm = float((gm + gu).norm()), float(new.norm())
        if norm > 0 and plain > norm:
            new = new * (plain / norm)
        out.append(new * gamma)
    return a, out


class MMPareto(Method):
    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        super().__init__(model, cfg, world)
        self.opt = _sgd(model.parameters(), cfg)
        self.optimizers = [self.opt]
        self._weights: dict = {}

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        model = self.model
        self.opt.zero_grad(set_to_none=True)
        names = list(batch)
        h = {m: model.embed(m, batch[m]) for m in names}
        loss_mm = F.cross_entropy(sum(model.head_logits(m, h[m]) for m in names), labels)
        loss_uni = {m: F.cross_entropy(model.aux_logits(m, h[m]), labels) for m in names}
        enc = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in names}
        enc_all = [p for m in names for p in enc[m]]
        head = list(model.head.parameters())
        # The multimodal loss's gradients (all encoders + concat head), then each unimodal
        # loss's (its encoder + its unimodal head): the summed loss's head gradients
        # are exactly these, since each head appears in one loss only.
        g = torch.autograd.grad(loss_mm, enc_all + head, retain_graph=True, allow_unused=True)
        g_mm = {p: gi if gi is not None else torch.zeros_like(p) for p, gi in zip(enc_all + head, g)}
        g_uni = {}
        for m in names:
            aux = list(model.aux_heads[m].parameters())
            g = torch.autograd.grad(loss_uni[m], enc[m] + aux, retain_graph=m != names[-1], allow_unused=True)
            g_uni.update({p: gi if gi is not None else torch.zeros_like(p) for p, gi in zip(enc[m] + aux, g)})
        allg = list(g_mm.values()) + list(g_uni.values())
        self.world.average(allg)
        out = {"loss_mm": loss_mm.item(), **{f"loss_{m}": v.item() for m, v in loss_uni.items()}}
        for p in head:
            p.grad = g_mm[p].clone()
        for m in names:
            for p in model.aux_heads[m].parameters():
                p.grad = g_uni[p].clone()
            a, new = pareto_combine([g_mm[p] for p in enc[m]], [g_uni[p] for p in enc[m]], self.cfg.mmpareto_gamma)
            for p, gnew in zip(enc[m], new):
                p.grad = gnew
            self._weights.setdefault(m, []).append(a)
        self.opt.step()
        return out

    def epoch_stats(self) -> dict:
        stats = {f"pareto_a_mean_{m}": float(sum(v) / len(v)) for m, v in self._weights.items() if v}
        stats.update({f"pareto_conflict_{m}": float(sum(x != 0.5 for x in v) / len(v)) for m, v in self._weights.items() if v})
        self._weights = {}
        return stats


class Unimodal(Method):
    def __init__(self, model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> None:
        super().__init__(model, cfg, world)
        self.opts = {m: _sgd(list(model.encoders[m].parameters()) + list(model.heads[m].parameters()), cfg) for m in model.encoders}
        self.optimizers = list(self.opts.values())

    def step(self, batch: dict, labels: torch.Tensor, pos: tuple) -> dict:
        out = {}
        for m, x in batch.items():
            self.opts[m].zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model.logits(m, x), labels)
            loss.backward()
            self.world.sync_grads(p for group in self.opts[m].param_groups for p in group["params"])
            self.opts[m].step()
            out[f"loss_{m}"] = loss.item()
        return out


METHOD_CLASSES: dict[str, Callable] = {"mla": MLA, "joint": Joint, "ogm_ge": OGMGE, "unimodal": Unimodal, "mmpareto": MMPareto}


def make_method(model: nn.Module, cfg: TrainConfig, world: Optional[World] = None) -> Method:
    return METHOD_CLASSES[cfg.method](model, cfg, world)
