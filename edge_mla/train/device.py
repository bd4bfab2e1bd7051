"""Which device training runs on: TrainConfig.device (auto | cpu | cuda) resolved once,
at training time, into the torch.device of this process.

Resolved here and not in TrainConfig.validate: a run folder's config must still load on
a machine without a GPU (evaluation, export), so only starting a run asks for CUDA.
Under torchrun each rank takes the GPU numbered by its LOCAL_RANK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_mla.errors import EdgeMlaError

if TYPE_CHECKING:  # torch is imported lazily: the CLI's --help must not load it
    import torch


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch.cuda.is_available() else ``cpu``; ``cuda`` without
    CUDA is the user's error (one line), not torch's traceback at the first tensor move."""
    if requested == "cpu":
        return "cpu"  # no torch import: the CPU default needs no CUDA probing
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda":
        if not cuda_available():
            raise EdgeMlaError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False); use --device cpu or auto")
        return "cuda"
    raise EdgeMlaError(f"unknown --device {requested!r}")


def rank_device(kind: str, local_rank: int = 0) -> "torch.device":
    """The torch.device of this process: the CPU, or GPU ``local_rank`` (one GPU per rank)."""
    import torch

    if kind == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def module_device(module: "torch.nn.Module") -> "torch.device":
    """The device of ``module``'s parameters (the CPU for a module without any): the
    device every tensor that works with them is created on."""
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")
