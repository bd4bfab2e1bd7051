"""Where calibration samples come from, turned into the engines' input arrays.

Three sources, all ending in exactly the tensors the runtime feeds the engines:
- the run's own dataset (training split, stratified by class), the default;
- ``--calib-data DIR``: a folder dataset (pairs.csv, see edge_mla.data.folder),
  read with the model's sample rate, window and image size;
- ``--calib-data FILE.npz``: arrays ``image`` (N, 1, S, S) or (N, S, S) and/or
  ``audio`` (N, T) at the model's rate, optional ``label`` (N,).
Every problem is an EdgeMlaError that names the file and what is wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_mla.calib.select import stratified_indices
from edge_mla.errors import EdgeMlaError
from edge_mla.preprocess import fit_window

log = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """Preprocessed engine inputs per modality (float32), and where they came from."""

    inputs: dict
    source: str
    labels: Optional[np.ndarray] = None
    info: dict = field(default_factory=dict)

    def size(self, modality: str) -> int:
        return int(self.inputs[modality].shape[0])


def from_split(split, modalities: Sequence[str], window: int, size: int, seed: int = 0, source: str = "dataset") -> CalibrationSet:
    """A stratified subset of ``split`` (a PairedSplit): images as stored (already
    preprocessed), audio centred in the window like the evaluation and runtime."""
    if len(split) == 0:
        raise EdgeMlaError(f"{source}: the training split is empty; nothing to calibrate with")
    idx = stratified_indices(split.labels, size, seed)
    inputs = {}
    if "image" in modalities:
        inputs["image"] = np.ascontiguousarray(split.image_batch(idx), np.float32)
    if "audio" in modalities:
        inputs["audio"] = split.audio_batch(idx, window)
    return CalibrationSet(inputs, source, split.labels[idx], {"pairs": int(len(idx)), "of": int(len(split))})


def from_folder(path: Path, modalities: Sequence[str], cfg, size: int, seed: int = 0) -> CalibrationSet:
    """A folder dataset's training split (its val split too when train alone is
    smaller than ``size``: calibration needs no labels kept apart)."""
    from edge_mla.data.folder import load_folder

    if not (path / "pairs.csv").is_file():
        contents = "empty" if not any(path.iterdir()) else "has no pairs.csv"
        raise EdgeMlaError(f"--calib-data {path}: folder {contents}; a calibration folder needs pairs.csv with columns image,audio,label (see 'edge-mla data --help'), or pass an .npz")
    try:
        ds = load_folder(str(path), seed=seed, sample_rate=cfg.sample_rate, window_seconds=cfg.window / cfg.sample_rate, image_size=cfg.image_size)
    except EdgeMlaError as exc:
        raise EdgeMlaError(f"--calib-data {path}: {exc}") from None
    return from_split(ds.train, modalities, cfg.window, size, seed, source=f"folder {path}")


def from_npz(path: Path, modalities: Sequence[str], cfg, size: int, seed: int = 0) -> CalibrationSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise EdgeMlaError(f"--calib-data {path}: cannot read as a NumPy .npz archive ({exc.__class__.__name__})") from None
    missing = [m for m in modalities if m not in arrays]
    if missing:
        raise EdgeMlaError(f"--calib-data {path}: no array named {', '.join(missing)} (has: {', '.join(arrays) or 'nothing'}); expected image (N,1,{cfg.image_size},{cfg.image_size}) and/or audio (N,{cfg.window})")
    inputs, n = {}, None
    for m in modalities:
        a = arrays[m]
        if a.dtype.kind not in "iuf":  # strings, booleans, complex, records: not samples
            raise EdgeMlaError(f"--calib-data {path}: array {m!r} holds {a.dtype} values, expected numbers (float32, or uint8 images)")
        if a.ndim == 0 or a.shape[0] == 0:
            raise EdgeMlaError(f"--calib-data {path}: array {m!r} is {'a single value' if a.ndim == 0 else 'empty'}, expected one row per example")
        if m == "image":
            if a.ndim == 3:
                a = a[:, None]
            want = (1, cfg.image_size, cfg.image_size)
            if a.ndim != 4 or tuple(a.shape[1:]) != want:
                raise EdgeMlaError(f"--calib-data {path}: image has shape {tuple(arrays[m].shape)}, expected (N, {', '.join(map(str, want))}) preprocessed frames")
            a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
        else:
            if a.ndim != 2 or a.shape[1] == 0:  # (N, 0) calibrated INT8 on silence
                raise EdgeMlaError(f"--calib-data {path}: audio has shape {tuple(a.shape)}, expected (N, samples) PCM at {cfg.sample_rate} Hz")
            a = np.stack([fit_window(row, cfg.window) for row in a])
        if not np.isfinite(a).all():
            raise EdgeMlaError(f"--calib-data {path}: array {m!r} holds NaN or infinite values")
        if n is not None and a.shape[0] != n:
            raise EdgeMlaError(f"--calib-data {path}: image and audio have different lengths ({n} vs {a.shape[0]})")
        n = a.shape[0]
        inputs[m] = np.ascontiguousarray(a, np.float32)
    labels = arrays.get("label")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != n):  # (N, 2) flattened to 2N labels: an IndexError
        raise EdgeMlaError(f"--calib-data {path}: label has shape {labels.shape}, expected ({n},) (one label per example) or no label array")
    labels = labels if labels is not None else np.zeros(n, np.int64)
    idx = stratified_indices(labels, size, seed)
    return CalibrationSet({m: a[idx] for m, a in inputs.items()}, f"npz {path}", labels[idx], {"pairs": int(len(idx)), "of": int(n)})


def from_path(path: str | Path, modalities: Sequence[str], cfg, size: int, seed: int = 0) -> CalibrationSet:
    """``--calib-data``: a folder dataset or an .npz."""
    p = Path(path)
    if p.is_dir():
        return from_folder(p, modalities, cfg, size, seed)
    if p.is_file():
        if p.suffix.lower() != ".npz":
            raise EdgeMlaError(f"--calib-data {p}: expected a folder with pairs.csv or an .npz file")
        return from_npz(p, modalities, cfg, size, seed)
    raise EdgeMlaError(f"--calib-data {p}: not found")
