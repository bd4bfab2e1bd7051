"""Training on several processes with torch.distributed (c10d; gloo on CPU, NCCL on CUDA).

Started by torchrun (or `edge-mla train --nproc N`, which runs torch.distributed.run),
each process trains on its own shard of every global batch and the gradients are
averaged over the processes before each optimizer step, as DistributedDataParallel
does. The averaging is called explicitly by the methods instead of through the DDP
wrapper because every method here needs the averaged gradient *before* it changes it
(MLA projects the head gradient, OGM-GE rescales the dominant encoder's, MMPareto
combines per-loss gradients taken with autograd.grad, which DDP's hooks do not see),
and MLA's alternating steps leave whole encoders unused in a step.

What keeps the ranks identical: the same seed (so the same initial weights, then a
broadcast from rank 0 to be sure), the same batch order (one seeded permutation, each
rank taking its slice of each global batch, no overlap), averaged gradients, every
statistic a method derives from the batch all-reduced (MLA's feature mean, OGM-GE's
scores), and any noise drawn from a generator seeded the same on every rank.

On CUDA each rank owns GPU LOCAL_RANK and talks NCCL, which only moves tensors on that
GPU: every tensor handed to a collective here lives on the training device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError

if TYPE_CHECKING:  # torch is imported where it is used
    import torch

    from edge_mla.data.augment import AudioAugment

log = logging.getLogger(__name__)


@dataclass
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # this rank's index on its machine: its GPU under --device cuda

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def all_reduce_sum(self, t):
        """Sum ``t`` over the ranks in place and return it (a no-op alone)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_mean(self, t):
        if self.active:
            self.all_reduce_sum(t).div_(self.size)
        return t

    def average(self, tensors: Iterable) -> None:
        """Average a list of tensors over the ranks in place, in one flat all-reduce.
        The float64 buffer is made on the tensors' own device (torch.cat keeps it), which
        NCCL requires."""
        import torch

        tensors = [t for t in tensors if t is not None]
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
        self.all_reduce_mean(flat)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
            offset += n

    def sync_grads(self, params: Iterable) -> None:
        """Average ``.grad`` of ``params`` over the ranks (the ones that have a gradient:
        the same on every rank, because every rank runs the same steps)."""
        self.average([p.grad for p in params if p.grad is not None])

    def sync_buffers(self, module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) so the model
        that is validated and saved is the same on every rank."""
        self.average([b for b in module.buffers() if b.is_floating_point()])

    def broadcast_module(self, module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if not self.active:
            return
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def backend_for(device: "str | torch.device") -> str:
    """The c10d backend for a training device ("cpu", "cuda", "cuda:1" or a torch.device):
    NCCL for CUDA tensors (gloo would copy every all-reduce through the host), gloo for
    CPU ones (NCCL cannot move them)."""
    kind = getattr(device, "type", None) or str(device).split(":", 1)[0]
    return "nccl" if kind == "cuda" else "gloo"


def world_from_env(device: str = "cpu") -> World:
    """The World torchrun describes in the environment; joins the process group with the
    backend of ``device`` (a resolved kind, "cpu" or "cuda"). On CUDA the rank first
    binds GPU LOCAL_RANK, so NCCL's communicator and every default CUDA tensor use it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if size <= 1:
        return World(local_rank=local_rank)
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            _bind_gpu(local_rank)
        dist.init_process_group(backend_for(device))
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank)


def _bind_gpu(local_rank: int) -> None:
    """torch.cuda.set_device(LOCAL_RANK), or one line when this machine has too few GPUs
    for the ranks torchrun started on it."""
    import torch

    count = torch.cuda.device_count()
    if local_rank >= count:
        raise EdgeMlaError(f"--device cuda: local rank {local_rank} needs GPU {local_rank} but this machine has {count}; start at most {count} process(es) per machine")
    torch.cuda.set_device(local_rank)


def shard_batches(split, batch_size: int, window: int, rng: np.random.Generator, world: World,
                  aug_rng: Optional[np.random.Generator] = None, augment: Optional[AudioAugment] = None) -> Iterator[tuple]:
    """This rank's part of each global batch: one permutation shared by all ranks (same
    seeded ``rng``), cut into global batches of ``batch_size``, rank r taking rows
    r, r + size, ... of each. The last ``len(split) % size`` pairs of the permutation
    are dropped so every rank gets the same number of rows in every batch (steps stay
    in lockstep) and no pair is seen by two ranks. ``augment`` (an AudioAugment, drawn
    from this rank's ``aug_rng``) perturbs the audio; without ``aug_rng`` clips are centred."""
    n = len(split)
    order = rng.permutation(n)
    order = order[: n - n % world.size]
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size][world.rank :: world.size]
        yield split.image_batch(idx), split.audio_batch(idx, window, aug_rng, augment), split.labels[idx]


def destroy(barrier: bool = False) -> None:
    """Tear the process group down. ``barrier`` (only where every rank got here the
    same way, e.g. a finished run) first waits for all ranks: without it a rank may
    close its gloo connections while a peer's transport thread still reads them, and
    that peer dies with SIGABRT at exit (seen twice in about 35 two-rank test runs)."""
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            if barrier:
                dist.barrier()
            dist.destroy_process_group()
    except Exception as exc:  # pragma: no cover - teardown must not mask the run's outcome
        log.debug("process group teardown: %s", exc)
