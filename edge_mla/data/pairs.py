"""The in-memory form every dataset is turned into, and the batch iterator.

Images are stored once, already preprocessed to (1, S, S) float32; audio is a bank of
variable-length int16 clips, and a pair is (image index, clip index, label). Audio
windows are cut at batch time so that training can place a clip at a random offset
(speech arrives anywhere in a live microphone window) while evaluation is centred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError

from edge_mla.data.augment import AudioAugment
from edge_mla.preprocess import fit_window

PLACEMENT_ONLY = AudioAugment()


@dataclass
class PairedSplit:
    images: np.ndarray  # (n_images, 1, S, S) float32 in [0, 1]
    clips: list  # list of int16 arrays at ``sample_rate``
    image_index: np.ndarray  # (n_pairs,) int64 into images
    clip_index: np.ndarray  # (n_pairs,) int64 into clips
    labels: np.ndarray  # (n_pairs,) int64
    clip_groups: Optional[np.ndarray] = None  # (n_clips,) speaker/voice id, for checks and reports

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> "PairedSplit":
        return PairedSplit(self.images, self.clips, self.image_index[idx], self.clip_index[idx], self.labels[idx], self.clip_groups)

    def audio_batch(self, idx: np.ndarray, window: int, rng: Optional[np.random.Generator] = None,
                    augment: Optional[AudioAugment] = None) -> np.ndarray:
        """(len(idx), window) float32 PCM. Without ``rng`` every clip is centred (evaluation);
        with it each clip is perturbed by ``augment`` (default: a random placement only)."""
        aug = augment or PLACEMENT_ONLY
        out = np.empty((len(idx), window), np.float32)
        for row, i in enumerate(idx):
            clip = self.clips[self.clip_index[i]]
            out[row] = fit_window(clip, window) if rng is None else aug.window(clip, window, rng)
        return out

    def image_batch(self, idx: np.ndarray) -> np.ndarray:
        return self.images[self.image_index[idx]]


@dataclass
class PairedDataset:
    name: str
    classes: list
    sample_rate: int
    window: int  # audio samples per example
    image_size: int
    train: PairedSplit
    val: PairedSplit
    test: PairedSplit
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> PairedSplit:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)


def iterate_batches(
    split: PairedSplit,
    batch_size: int,
    window: int,
    shuffle: bool = False,
    rng: Optional[np.random.Generator] = None,
    augment: Optional[AudioAugment] = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (images, audio, labels) numpy batches; ``augment`` (drawn from ``rng``)
    perturbs the audio, None centres every clip."""
    n = len(split)
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for s in range(0, stop, batch_size):
        idx = order[s : s + batch_size]
        if len(idx) == 0:
            break
        yield split.image_batch(idx), split.audio_batch(idx, window, rng if augment is not None else None, augment), split.labels[idx]


def pair_by_label(
    image_labels: np.ndarray, clip_labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each image, draw a clip of the same label (uniformly, with a seeded rng).

    Callers pass images and clips of the same split only, so a test clip can never
    land in a training pair.
    """
    clip_index = np.empty(image_labels.shape[0], np.int64)
    for c in np.unique(image_labels):
        pool = np.flatnonzero(clip_labels == c)
        if pool.size == 0:
            raise EdgeMlaError(f"no audio clip with label {c} to pair with its images in this split (the data's labels or split do not cover every class)")
        rows = np.flatnonzero(image_labels == c)
        clip_index[rows] = pool[rng.integers(0, pool.size, rows.size)]
    return clip_index
