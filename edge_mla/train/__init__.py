"""Training: MLA (alternating unimodal adaptation) and the baselines in one harness."""

from edge_mla.train.config import METHODS, TrainConfig

__all__ = ["METHODS", "TrainConfig", "train"]


def train(cfg: TrainConfig, world=None, before_publish=None, require_test: bool = False):
    """Train per ``cfg`` and return the run folder (Path), written all at once
    (``before_publish(tmp)`` may add files first); None on ranks other than 0 of a
    torch.distributed run (see edge_mla.train.dist.World). ``require_test``: the
    test split must have pairs (checked before training, not after it). Imported
    lazily: torch."""
    from edge_mla.train.trainer import train as _train

    return _train(cfg, world, before_publish, require_test)
