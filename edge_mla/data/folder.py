"""A user's own paired recordings on disk.

Format (documented in README.md):

    DIR/
      pairs.csv        header: image,audio,label[,split]
      images/...       any image OpenCV reads (PNG, JPEG, BMP); colour or grey
      audio/...        any WAV/FLAC soundfile reads; any rate, mono or stereo
      classes.txt      optional: one class name per line, fixing the label order

Paths in pairs.csv are relative to DIR. ``label`` is a class name (or an integer);
``split`` is train, val or test. Without a split column a seeded, stratified
70/15/15 split is drawn. Audio is mixed to mono and resampled to the model's rate.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla.data.pairs import PairedDataset, PairedSplit
from edge_mla.errors import EdgeMlaError, first_line
from edge_mla.preprocess import image_to_tensor, resample
from edge_mla.sound_file import read_sound
from edge_mla.validate import names_inside

log = logging.getLogger(__name__)
REQUIRED = ("image", "audio", "label")


def read_audio_file(path: Path, sample_rate: int) -> np.ndarray:
    """Read a sound file as int16 mono PCM at ``sample_rate``; errors name the file."""
    data, sr = read_sound(str(path), str(path))
    x = resample(data, sr, sample_rate)
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)


def read_image_file(path: Path, size: int) -> np.ndarray:
    import cv2

    problem = jpeg_problem(path)
    if problem:
        raise EdgeMlaError(f"{path}: {problem}")
    try:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:  # a header claiming 100000 x 100000 pixels (a traceback before)
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise EdgeMlaError(f"{path}: image is larger than {os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS')} pixels (OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        raise EdgeMlaError(f"{path}: cannot decode image ({first_line(exc)})") from None
    if img is None:
        raise EdgeMlaError(f"{path}: cannot read image (missing or not an image file)")
    return image_to_tensor(img, size)


def _integer(name: str) -> bool:
    """A label int() reads as an integer: "²" is a digit int() refuses, and "--3" was
    taken for one by stripping every leading dash (a ValueError traceback)."""
    digits = name[1:] if name.startswith("-") else name
    return digits.isdecimal()


def _printable_name(name: str, where: str) -> None:
    """Class names go into checkpoints, manifests and JSON lines, which take printable
    names only: a label with a tab or a non-breaking space trained a whole run and was
    then refused, naming a temporary file that was gone."""
    bad = next((ch for ch in name if not ch.isprintable()), None)
    if bad is not None:
        raise EdgeMlaError(f"{where}: label {name!r} holds a non-printable character (U+{ord(bad):04X}); use plain spaces and visible characters")


def jpeg_problem(path: Path) -> Optional[str]:
    """What is wrong with a JPEG file's structure, or None (also for other formats).
    OpenCV decodes a JPEG cut short without an error (only libjpeg's stderr line,
    naming no file): the missing half came back grey and was trained on. The marker
    segments are walked from the start to the end-of-image marker; whatever follows
    it (a phone's motion-photo video, a camera's trailer) is not the image's."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None  # imread names a missing file
    if data[:2] != b"\xff\xd8":
        return None
    cut = "JPEG is cut short (it ends before its end-of-image marker)"
    n, pos = len(data), 2
    while True:
        while pos + 1 < n and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 2 > n:
            return cut
        if data[pos] != 0xFF:
            return None  # not the layout this walk knows: OpenCV decides
        marker = data[pos + 1]
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > n:
            return cut
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > n:
            return cut
        pos = end
        if marker != 0xDA:
            continue
        while True:  # entropy-coded data after a start-of-scan: up to the next real marker
            k = data.find(b"\xff", pos)
            if k < 0 or k + 1 >= n:
                return cut
            following = data[k + 1]
            if following == 0x00 or following == 0xFF or 0xD0 <= following <= 0xD7:  # a stuffed byte, fill, a restart marker
                pos = k + 1
                continue
            pos = k
            break


def read_text(path: Path) -> str:
    """A text file as UTF-8 (a BOM, as Excel writes it, is dropped); anything else is
    one line naming the file."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise EdgeMlaError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise EdgeMlaError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_pairs_csv(csv_path: Path) -> list:
    """The rows of pairs.csv as dicts with stripped cells, checked: the required
    columns exist and no row leaves image, audio or label empty."""
    reader = csv.DictReader(io.StringIO(read_text(csv_path), newline=""))
    try:
        header = [h.strip().lower() for h in (reader.fieldnames or [])]  # "Split" was dropped without a word
        reader.fieldnames = header
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:  # csv.DictReader keeps the last one: a second "label" column silently replaced the labels
            raise EdgeMlaError(f"{csv_path}: column(s) {', '.join(map(repr, twice))} appear more than once in the header")
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise EdgeMlaError(f"{csv_path}: missing column(s) {', '.join(missing)} (have: {', '.join(map(repr, header)) or 'none'})")
        rows = []
        for r in reader:
            lineno = reader.line_num
            r = {k: (v or "").strip() for k, v in r.items() if k is not None}  # None: a short row
            for c in REQUIRED:
                if not r.get(c):
                    raise EdgeMlaError(f"{csv_path}:{lineno}: empty {c}")
            _printable_name(r["label"], f"{csv_path}:{lineno}")
            sp = r.get("split", "").lower()
            if sp and sp not in ("train", "val", "test"):
                raise EdgeMlaError(f"{csv_path}:{lineno}: split {sp!r} must be train, val or test")
            r["split"] = sp
            r["#line"] = lineno  # blank lines are skipped: a count of rows named the wrong line
            rows.append(r)
    except csv.Error as exc:
        raise EdgeMlaError(f"{csv_path}:{reader.line_num}: malformed CSV ({exc})") from None
    if not rows:
        raise EdgeMlaError(f"{csv_path}: no pairs listed")
    return rows


def _member(base: Path, name: str, csv_path: Path, lineno: int, column: str) -> Path:
    """``base / name`` for a pairs.csv cell: a name inside the dataset folder, of a
    regular file. Why: a pairs.csv from elsewhere named '../x' or absolute paths and
    was read as it was, and a FIFO (or /dev/zero) named there hung the command. A link
    the folder's owner placed (images/ -> a big disk) is followed: that is their
    layout, not the file's."""
    where = f"{csv_path}:{lineno}" if lineno else str(csv_path)
    p = base / name
    if "\x00" in name:  # C's imread stopped at the NUL and read another file
        raise EdgeMlaError(f"{where}: {column} name holds a NUL character")
    if not names_inside(name):
        raise EdgeMlaError(f"{where}: {column} {name!r} must be a path inside the dataset folder")
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise EdgeMlaError(f"{where}: {column} {name!r} is not a regular file")
    return p


def load_folder(root: str, seed: int = 0, sample_rate: int = 16000, window_seconds: float = 1.0, image_size: int = 28) -> PairedDataset:
    base = Path(root)
    csv_path = base / "pairs.csv"
    if not csv_path.is_file():
        raise EdgeMlaError(f"{csv_path}: not found (a folder dataset needs pairs.csv with columns image,audio,label[,split])")
    rows = read_pairs_csv(csv_path)
    classes_file = base / "classes.txt"
    if classes_file.is_file():
        classes = [ln.strip() for ln in read_text(classes_file).splitlines() if ln.strip()]
        for c in classes:
            _printable_name(c, str(classes_file))
    else:
        names = sorted({r["label"] for r in rows})
        classes = sorted(names, key=int) if all(_integer(n) for n in names) else names
    if len(set(classes)) != len(classes):
        raise EdgeMlaError(f"{classes_file}: lists a class twice")
    if len(classes) < 2:
        raise EdgeMlaError(f"{classes_file if classes_file.is_file() else csv_path}: only one class ({', '.join(map(repr, classes))}); a classifier needs at least two")
    cls_index = {c: i for i, c in enumerate(classes)}
    images, clips, labels, parts, img_rows, clip_rows = [], [], [], [], [], []
    img_cache: dict = {}
    clip_cache: dict = {}
    seen: dict = {}
    for r in rows:
        lineno = r["#line"]
        key = (r["image"], r["audio"])
        if key in seen:  # a pair listed twice lands in train and test alike: the test score counts training pairs
            raise EdgeMlaError(f"{csv_path}:{lineno}: the pair {r['image']!r}, {r['audio']!r} is listed before, on line {seen[key]}")
        seen[key] = lineno
        if r["label"] not in cls_index:
            raise EdgeMlaError(f"{csv_path}:{lineno}: label {r['label']!r} is not in {classes_file.name if classes_file.is_file() else 'the classes'}")
        ip, ap = (_member(base, r[c], csv_path, lineno, c) for c in ("image", "audio"))
        if ip not in img_cache:
            img_cache[ip] = len(images)
            images.append(read_image_file(ip, image_size))
        if ap not in clip_cache:
            clip_cache[ap] = len(clips)
            clips.append(read_audio_file(ap, sample_rate))
        img_rows.append(img_cache[ip])
        clip_rows.append(clip_cache[ap])
        labels.append(cls_index[r["label"]])
        parts.append(r["split"])
    labels_a = np.asarray(labels, np.int64)
    img_idx = np.asarray(img_rows, np.int64)
    clip_idx = np.asarray(clip_rows, np.int64)
    part = np.asarray([{"train": 0, "val": 1, "test": 2}.get(p, -1) for p in parts])
    if (part < 0).any():
        rng = np.random.default_rng(seed)
        for c in range(len(classes)):
            todo = rng.permutation(np.flatnonzero((labels_a == c) & (part < 0)))
            n = len(todo)
            part[todo[: int(round(0.7 * n))]] = 0
            part[todo[int(round(0.7 * n)) : int(round(0.85 * n))]] = 1
            part[todo[int(round(0.85 * n)) :]] = 2
    imgs = np.stack(images)

    def make(p: int) -> PairedSplit:
        sel = np.flatnonzero(part == p)
        return PairedSplit(imgs, clips, img_idx[sel], clip_idx[sel], labels_a[sel])

    ds = PairedDataset(
        name="folder",
        classes=classes,
        sample_rate=sample_rate,
        window=int(round(window_seconds * sample_rate)),
        image_size=image_size,
        train=make(0),
        val=make(1),
        test=make(2),
        info={"root": str(base), "pairs": len(rows)},
    )
    for name in ("train", "val"):
        if len(ds.split(name)) == 0:
            raise EdgeMlaError(f"{csv_path}: the {name} split is empty; add pairs or a split column")
    untrained = [classes[c] for c in range(len(classes)) if not (ds.train.labels == c).any()]
    if untrained:
        where = sorted({p for c in untrained for p in ("val", "test") if (ds.split(p).labels == classes.index(c)).any()})
        raise EdgeMlaError(f"{csv_path}: label(s) {', '.join(map(repr, untrained))} have no training pairs (only in {', '.join(where) or 'classes.txt'}); every class needs some")
    return ds
