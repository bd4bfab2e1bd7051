"""The built-in demo dataset, made at set-up time from registry packages only.

Images: scikit-learn's bundled ``load_digits`` (1,797 real handwritten digits, 8x8),
resized to 28x28. Audio: the words "zero".."nine" synthesized by eSpeak NG with many
voices, rates and pitches plus background noise: *synthetic* speech. Voices are split
between train/val/test so the test set speaks with voices the model never heard.
Cached as one .npz under the user cache folder so later runs start at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla.data.pairs import PairedDataset, PairedSplit, pair_by_label
from edge_mla.errors import EdgeMlaError
from edge_mla.preprocess import resample

log = logging.getLogger(__name__)

DEMO_VERSION = 1
SAMPLE_RATE = 8000
WINDOW = 8000
IMAGE_SIZE = 28
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# eSpeak NG voice variants shipped in espeak-ng-data/voices/!v; each is a "speaker".
VOICES = [
    "en+m1", "en+m2", "en+m3", "en+m4", "en+m5", "en+m6", "en+m7",
    "en+f1", "en+f2", "en+f3", "en+f4", "en+f5",
    "en-us+m3", "en-us+f2", "en-gb-x-rp+m2", "en-gb-scotland+f1",
]
TEST_VOICES = {"en+m4", "en+f4", "en-gb-scotland+f1"}
VAL_VOICES = {"en+m6", "en-us+f2"}


def cache_dir() -> Path:
    root = os.environ.get("EDGE_MLA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edge-mla"
    )
    return Path(root)


def demo_path() -> Path:
    return cache_dir() / f"demo-v{DEMO_VERSION}.npz"


def build_demo(path: Optional[Path] = None, takes_per_voice: int = 3, seed: int = 0, progress: bool = True) -> Path:
    """Synthesize and write the demo archive; returns its path. Written to a
    temporary name first so an interrupted build leaves nothing half-made."""
    from sklearn.datasets import load_digits

    from edge_mla.data.speech import EspeakSynth
    from edge_mla.preprocess import image_to_tensor

    path = Path(path or demo_path())
    if path.exists() and not path.is_file():
        raise EdgeMlaError(f"{path}: exists and is not a file; remove it (or set EDGE_MLA_CACHE) and run 'edge-mla data demo'")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeMlaError(f"{path.parent}: cannot create the cache folder ({exc.strerror}); set EDGE_MLA_CACHE to a writable folder") from None
    rng = np.random.default_rng(seed)
    digits = load_digits()
    imgs = np.stack([image_to_tensor((d / 16.0).astype(np.float32), IMAGE_SIZE)[0] for d in digits.images])
    imgs_u8 = np.round(imgs * 255).astype(np.uint8)

    synth = EspeakSynth()
    jobs = [(v, w, t) for v in VOICES for w in range(10) for t in range(takes_per_voice)]
    try:
        from tqdm import tqdm

        it = tqdm(jobs, desc="synthesizing demo speech", unit="clip", disable=not progress)
    except ImportError:  # pragma: no cover
        it = jobs
    audio, offsets, labels, voices = [], [0], [], []
    for voice, word, _take in it:
        pcm = synth.say(WORDS[word], voice, rate=int(rng.integers(120, 230)), pitch=int(rng.integers(25, 85)), pitch_range=int(rng.integers(30, 90)))
        x = resample(pcm.astype(np.float32) / 32768.0, synth.sample_rate, SAMPLE_RATE)
        x = _trim_silence(x)
        x = x * float(rng.uniform(0.3, 0.9)) / max(float(np.abs(x).max()), 1e-6)
        x = x + rng.normal(0, rng.uniform(0.002, 0.02), x.shape).astype(np.float32)  # room/mic noise
        clip = np.clip(x * 32767, -32768, 32767).astype(np.int16)
        audio.append(clip)
        offsets.append(offsets[-1] + clip.size)
        labels.append(word)
        voices.append(voice)
    tmp = path.with_suffix(".tmp.npz")
    try:
        _write_archive(tmp, path, imgs_u8, digits.target, audio, offsets, labels, voices)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EdgeMlaError(f"{path}: cannot write the demo dataset ({exc.strerror})") from None
    log.info("demo dataset written to %s", path)
    return path


def _write_archive(tmp: Path, path: Path, imgs_u8, image_labels, audio: list, offsets: list, labels: list, voices: list) -> None:
    np.savez_compressed(
        tmp,
        images=imgs_u8,
        image_labels=np.asarray(image_labels).astype(np.uint8),
        audio=np.concatenate(audio),
        offsets=np.asarray(offsets, np.int64),
        label=np.asarray(labels, np.uint8),
        voice=np.asarray(voices),
        sample_rate=np.int32(SAMPLE_RATE),
        version=np.int32(DEMO_VERSION),
    )
    os.replace(tmp, path)


def _trim_silence(x: np.ndarray, thresh: float = 0.02) -> np.ndarray:
    env = np.abs(x)
    idx = np.flatnonzero(env > thresh * max(float(env.max()), 1e-6))
    if idx.size == 0:
        return x
    pad = int(0.03 * SAMPLE_RATE)
    return x[max(idx[0] - pad, 0) : idx[-1] + pad]


def read_demo_archive(path: Path) -> dict:
    """The demo archive's arrays, checked: what ``build_demo`` writes, or one line
    saying to rebuild it. Why: the cache lives outside the repo and outlives
    versions and crashes; a missing key, a label out of 0-9, a wrong rate or broken
    offsets gave KeyError / ValueError tracebacks or trained on garbage."""
    def bad(why: str) -> EdgeMlaError:
        return EdgeMlaError(f"{path}: corrupt demo dataset ({why}); delete it and run 'edge-mla data demo'")

    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:
        raise bad(f"{exc.__class__.__name__}: {exc}") from None
    want = {"images": "u", "image_labels": "u", "audio": "i", "offsets": "i", "label": "u", "voice": "U", "sample_rate": "i", "version": "i"}
    for key, kind in want.items():
        if key not in d:
            raise bad(f"no {key!r} array")
        if d[key].dtype.kind != kind:
            raise bad(f"{key} holds {d[key].dtype}")
    if d["version"].shape != () or int(d["version"]) != DEMO_VERSION or d["sample_rate"].shape != () or int(d["sample_rate"]) != SAMPLE_RATE:
        raise bad(f"version {d['version']!r} / sample rate {d['sample_rate']!r}, expected {DEMO_VERSION} / {SAMPLE_RATE}")
    n_img, n_clip = len(d["image_labels"]), len(d["label"])
    if d["images"].ndim != 3 or d["images"].shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(d["images"]) != n_img:
        raise bad(f"images of shape {d['images'].shape} for {n_img} labels")
    offs = d["offsets"]
    if offs.ndim != 1 or len(offs) != n_clip + 1 or offs[0] != 0 or offs[-1] != len(d["audio"]) or np.any(np.diff(offs) <= 0) or d["audio"].ndim != 1:
        raise bad("clip offsets do not cut the audio into one clip per label")
    if d["voice"].shape != (n_clip,) or d["image_labels"].ndim != 1 or d["label"].ndim != 1:
        raise bad("labels and voices are not one per image / clip")
    if set(np.unique(d["image_labels"]).tolist()) != set(range(10)) or set(np.unique(d["label"]).tolist()) != set(range(10)):
        raise bad("labels are not the digits 0-9")
    return d


def load_demo(seed: int = 0, build: bool = True) -> PairedDataset:
    path = demo_path()
    if not path.is_file():
        if not build:
            raise EdgeMlaError(f"{path}: demo dataset not built yet; run 'edge-mla data demo'")
        build_demo(path)
    d = read_demo_archive(path)
    rng = np.random.default_rng(seed)
    images = (d["images"].astype(np.float32) / 255.0)[:, None]
    ylab = d["image_labels"].astype(np.int64)
    # Images: a fixed stratified 60/20/20 split (seed 1234, independent of the run seed).
    split_rng = np.random.default_rng(1234)
    part = np.empty(len(ylab), np.int64)
    for c in range(10):
        rows = split_rng.permutation(np.flatnonzero(ylab == c))
        n = len(rows)
        part[rows[: int(0.6 * n)]] = 0
        part[rows[int(0.6 * n) : int(0.8 * n)]] = 1
        part[rows[int(0.8 * n) :]] = 2
    offs = d["offsets"]
    clips = [d["audio"][offs[i] : offs[i + 1]] for i in range(len(d["label"]))]
    clab = d["label"].astype(np.int64)
    voice = d["voice"].astype(str)
    cpart = np.where(np.isin(voice, list(TEST_VOICES)), 2, np.where(np.isin(voice, list(VAL_VOICES)), 1, 0))
    _, vid = np.unique(voice, return_inverse=True)

    def make(p: int, repeats: int) -> PairedSplit:
        rows = np.flatnonzero(part == p)
        rows = np.tile(rows, repeats)  # each image heard with several voices
        pool = np.flatnonzero(cpart == p)
        local = pair_by_label(ylab[rows], clab[pool], rng)
        return PairedSplit(images, clips, rows, pool[local], ylab[rows], vid)

    return PairedDataset(
        name="demo",
        classes=[str(i) for i in range(10)],
        sample_rate=int(d["sample_rate"]),
        window=WINDOW,
        image_size=IMAGE_SIZE,
        train=make(0, 4),
        val=make(1, 1),
        test=make(2, 1),
        info={"path": str(path), "synthetic_speech": True, "voices": sorted({str(v) for v in voice}), "test_voices": sorted(TEST_VOICES)},
    )
