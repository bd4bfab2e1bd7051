"""The AV-MNIST protocol on real data: MNIST digits degraded by PCA + FSDD spoken digits.

See ../shared/docs/mla-method.md. Images keep only the leading PCA components that
explain 25% of the variance (fit on training images only), which makes the image
modality deliberately weak; each image is paired with a clip of the same digit from
the same split. Validation is carved from the training side only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla.data.pairs import PairedDataset, PairedSplit, pair_by_label
from edge_mla.errors import EdgeMlaError

log = logging.getLogger(__name__)

DATA_ENV = "EDGE_MLA_DATA"
SAMPLE_RATE = 8000
WINDOW = 8000  # 1 s: covers 99% of FSDD clips; longer ones are centre-trimmed
IMAGE_SIZE = 28
MNIST_VAL_ROWS = 10000  # the last 10k training rows, as the data README suggests
VAL_RECORDINGS = range(5, 10)  # FSDD training recordings kept for validation (official split)
DEFAULT_TEST_SPEAKER = "theo"
DEFAULT_VAL_SPEAKER = "yweweler"


def resolve_data_dir(data_dir: Optional[str]) -> Path:
    """--data-dir, else $EDGE_MLA_DATA, else ../shared/data next to the checkout."""
    cand = data_dir or os.environ.get(DATA_ENV)
    if not cand:
        guess = Path(__file__).resolve().parents[2].parent / "shared" / "data"
        if guess.is_dir():
            cand = str(guess)
    if not cand:
        raise EdgeMlaError(f"no data folder: pass --data-dir DIR or set {DATA_ENV} (it must hold mnist.npz and fsdd.npz)")
    p = Path(cand)
    if not p.is_dir():
        raise EdgeMlaError(f"data folder {p} does not exist")
    return p


def _load_npz(path: Path, keys: tuple) -> dict:
    if not path.is_file():
        raise EdgeMlaError(f"{path}: file not found (the data folder must hold mnist.npz and fsdd.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise EdgeMlaError(f"{path}: malformed archive, missing arrays {', '.join(missing)}")
            return {k: z[k] for k in keys}
    except EdgeMlaError:
        raise
    except Exception as exc:  # zip errors, pickled arrays, truncated files
        raise EdgeMlaError(f"{path}: cannot read as a NumPy .npz archive ({exc.__class__.__name__}: {exc})") from None


def _digits(path: Path, key: str, y: np.ndarray, n: int) -> None:
    """``y`` is ``n`` integer labels covering exactly the digits 0-9."""
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu":
        raise EdgeMlaError(f"{path}: {key} must be {n} integer labels (got {y.dtype} of shape {y.shape})")
    if set(np.unique(y).tolist()) != set(range(10)):
        raise EdgeMlaError(f"{path}: {key} must hold the digits 0-9 (got {sorted(set(np.unique(y).tolist()))[:12]})")


def load_mnist(data_dir: Path) -> dict:
    """mnist.npz, checked: the data folder is the user's, and a cut, relabelled or NaN
    array trained on nothing (0 pairs) or on garbage with exit 0."""
    path = data_dir / "mnist.npz"
    d = _load_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    for k in ("x_train", "x_test"):
        if d[k].ndim != 3 or d[k].shape[1:] != (28, 28):
            raise EdgeMlaError(f"{path}: {k} has shape {d[k].shape}, expected (N, 28, 28)")
        if d[k].dtype.kind not in "uif" or (d[k].dtype.kind == "f" and not np.isfinite(d[k]).all()):
            raise EdgeMlaError(f"{path}: {k} must hold finite pixel values (got {d[k].dtype})")
    if len(d["x_train"]) <= MNIST_VAL_ROWS or not len(d["x_test"]):
        raise EdgeMlaError(f"{path}: x_train needs more than the {MNIST_VAL_ROWS} validation rows, and x_test some rows (got {len(d['x_train'])} and {len(d['x_test'])})")
    _digits(path, "y_train", d["y_train"], len(d["x_train"]))
    _digits(path, "y_test", d["y_test"], len(d["x_test"]))
    return d


def load_fsdd(data_dir: Path) -> dict:
    """fsdd.npz, checked (see load_mnist)."""
    path = data_dir / "fsdd.npz"
    d = _load_npz(path, ("audio", "offsets", "label", "speaker", "index", "sample_rate"))
    n = d["label"].shape[0] if d["label"].ndim == 1 else -1
    offs, audio = d["offsets"], d["audio"]
    if audio.ndim != 1 or audio.dtype.kind not in "iuf" or (audio.dtype.kind == "f" and not np.isfinite(audio).all()):
        raise EdgeMlaError(f"{path}: audio must be one finite 1-D array of samples (got {audio.dtype} of shape {audio.shape})")
    if offs.ndim != 1 or offs.dtype.kind not in "iu" or offs.shape[0] != n + 1 or offs[0] != 0 or offs[-1] != len(audio) or np.any(np.diff(offs) <= 0):
        raise EdgeMlaError(f"{path}: offsets must cut the audio into one clip per label (0, increasing, ending at {len(audio)})")
    _digits(path, "label", d["label"], n)
    for key in ("speaker", "index"):
        if d[key].shape != (n,):
            raise EdgeMlaError(f"{path}: {key} must have one entry per clip ({n}; got shape {d[key].shape})")
    if d["index"].dtype.kind not in "iu" or (d["index"] < 0).any():
        raise EdgeMlaError(f"{path}: index must be recording numbers >= 0")
    sr = d["sample_rate"]
    if sr.shape != () or sr.dtype.kind not in "iu" or int(sr) != SAMPLE_RATE:
        raise EdgeMlaError(f"{path}: sample_rate {sr!r}, expected {SAMPLE_RATE}")
    return d


def pca_degrade(train: np.ndarray, others: list, variance: float = 0.25) -> tuple[np.ndarray, list, int, float]:
    """Fit PCA on ``train`` (N, D) and reconstruct every array from the leading
    components that explain at least ``variance`` of the variance."""
    mean = train.mean(axis=0)
    xc = train - mean
    cov = (xc.T @ xc) / max(xc.shape[0] - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    ratio = np.cumsum(evals) / evals.sum()
    k = int(np.searchsorted(ratio, variance) + 1)
    basis = evecs[:, :k]

    def rec(x: np.ndarray) -> np.ndarray:
        return ((x - mean) @ basis) @ basis.T + mean

    return rec(train), [rec(o) for o in others], k, float(ratio[k - 1])


def load_avmnist(
    data_dir: Optional[str] = None,
    seed: int = 0,
    split: str = "official",
    pca_variance: float = 0.25,
    test_speakers: tuple = (DEFAULT_TEST_SPEAKER,),
    val_speakers: tuple = (DEFAULT_VAL_SPEAKER,),
) -> PairedDataset:
    """Build the AV-MNIST protocol dataset.

    split="official": FSDD recordings 0-4 are test (every speaker in both sides),
    5-9 validation, 10-49 training. split="speaker": whole speakers are held out for
    test and validation, so audio accuracy measures generalisation to new voices.
    """
    root = resolve_data_dir(data_dir)
    mn = load_mnist(root)
    fs = load_fsdd(root)
    rng = np.random.default_rng(seed)

    x = mn["x_train"].reshape(len(mn["x_train"]), -1).astype(np.float32) / 255.0
    xt = mn["x_test"].reshape(len(mn["x_test"]), -1).astype(np.float32) / 255.0
    x_tr, x_va = x[:-MNIST_VAL_ROWS], x[-MNIST_VAL_ROWS:]
    y_tr, y_va = mn["y_train"][:-MNIST_VAL_ROWS].astype(np.int64), mn["y_train"][-MNIST_VAL_ROWS:].astype(np.int64)
    y_te = mn["y_test"].astype(np.int64)
    k, explained = 784, 1.0
    if pca_variance < 1.0:
        x_tr, (x_va, xt), k, explained = pca_degrade(x_tr, [x_va, xt], pca_variance)
        log.info("PCA keeps %d components (%.1f%% of the variance)", k, 100 * explained)

    def imgs(a: np.ndarray) -> np.ndarray:
        return np.clip(a, 0, 1).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)

    offsets = fs["offsets"]
    clips = [fs["audio"][offsets[i] : offsets[i + 1]] for i in range(len(fs["label"]))]
    clip_labels = fs["label"].astype(np.int64)
    speakers = fs["speaker"].astype(str)
    rec_index = fs["index"].astype(np.int64)
    if split == "official":
        te = rec_index <= 4
        va = np.isin(rec_index, list(VAL_RECORDINGS))
    elif split == "speaker":
        unknown = sorted(set(test_speakers + val_speakers) - set(speakers))
        if unknown:
            raise EdgeMlaError(f"unknown FSDD speaker(s) {', '.join(unknown)}; known: {', '.join(sorted(set(speakers)))}")
        te = np.isin(speakers, list(test_speakers))
        va = np.isin(speakers, list(val_speakers)) & ~te
    else:
        raise EdgeMlaError(f"unknown split {split!r}; choose official or speaker")
    tr = ~(te | va)
    _, spk_id = np.unique(speakers, return_inverse=True)

    def make(images: np.ndarray, labels: np.ndarray, clip_mask: np.ndarray) -> PairedSplit:
        pool = np.flatnonzero(clip_mask)
        local = pair_by_label(labels, clip_labels[pool], rng)
        return PairedSplit(imgs(images), clips, np.arange(len(labels)), pool[local], labels, spk_id)

    ds = PairedDataset(
        name="avmnist",
        classes=[str(i) for i in range(10)],
        sample_rate=SAMPLE_RATE,
        window=WINDOW,
        image_size=IMAGE_SIZE,
        train=make(x_tr, y_tr, tr),
        val=make(x_va, y_va, va),
        test=make(xt, y_te, te),
        info={
            "data_dir": str(root),
            "split": split,
            "pca_components": k,
            "pca_explained": explained,
            "audio_clips": {"train": int(tr.sum()), "val": int(va.sum()), "test": int(te.sum())},
            "test_speakers": list(test_speakers) if split == "speaker" else None,
            "val_speakers": list(val_speakers) if split == "speaker" else None,
        },
    )
    return ds
