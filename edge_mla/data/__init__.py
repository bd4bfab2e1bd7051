"""Paired image + audio datasets: the AV-MNIST protocol on real data, the built-in
demo set, and a user's own folder of recordings."""

from edge_mla.data.pairs import PairedSplit, PairedDataset, iterate_batches
from edge_mla.data.registry import DATASETS, load_dataset

__all__ = ["PairedSplit", "PairedDataset", "iterate_batches", "DATASETS", "load_dataset"]
