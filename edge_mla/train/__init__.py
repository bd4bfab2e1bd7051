"""Training: MLA (alternating unimodal adaptation) and the baselines in one harness."""

from edge_mla.train.config import METHODS, TrainConfig

__all__ = ["METHODS", "TrainConfig", "train"]


def train(cfg: TrainConfig, world=None, before_publish=None):
    """Train per ``cfg`` and return the run folder (Path), written all at once
    (``before_publish(tmp)`` may add files first); None on ranks other than 0 of a
    torch.distributed run (see edge_mla.train.dist.World). Imported lazily: torch."""
    from edge_mla.train.trainer import train as _train

    return _train(cfg, world, before_publish)
