"""Helpers and tiny fixtures for the bad-input matrix and the property-based tests
(no tests here): a torch-free engine folder, a few seconds of media, a small folder
dataset, and the assertions every bad input must pass (exit 2, one line naming
the file or option, no traceback, nothing written or changed).

Tests call the CLI in-process (``edge_mla.cli.main.main``) unless the process
boundary is the point (signals, a closed pipe, what the interpreter prints)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *args) -> tuple[int, str, str]:
    """``edge-mla ARGS`` in this process: (exit code, stdout, stderr)."""
    from edge_mla.cli.main import main

    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def cli_subprocess(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_mla.cli.main", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), **kw)


def assert_one_error_line(command: str, rc: int, err: str, *needles: str) -> str:
    """Exit 2; stderr is exactly one line, ``edge-mla COMMAND: error: ...``, holding
    every needle (the file or option and the problem); no traceback."""
    assert rc == 2, f"exit {rc}: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    assert lines[0].startswith(f"edge-mla {command}: error: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in: {lines[0]}"
    return lines[0]


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with a hash of its content: compared before and
    after a failed command, it shows anything created, changed or removed."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- media and datasets --------------------------------------------------------------

def write_wav(path: Path, seconds: float = 2.0, rate: int = 8000) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32), rate, subtype="PCM_16")
    return path


def write_video(path: Path, seconds: float = 2.0, fps: int = 10) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for _ in range(int(seconds * fps)):
        vw.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    vw.release()
    return path


def folder_dataset(root: Path, rows: list | None = None, per_class: int = 6, classes=("a", "b")) -> Path:
    """A folder dataset (pairs.csv, images/, audio/) with ``per_class`` pairs per class
    and no split column; ``rows`` replaces the CSV rows (header included)."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["image,audio,label"]
    for ci, c in enumerate(classes):
        for i in range(per_class):
            img = root / "images" / f"{c}{i}.png"
            cv2.imwrite(str(img), (rng.random((28, 28)) * 255 * (ci + 1) / len(classes)).astype(np.uint8))
            write_wav(root / "audio" / f"{c}{i}.wav", seconds=0.5, rate=16000)
            lines.append(f"images/{c}{i}.png,audio/{c}{i}.wav,{c}")
    text = "\n".join(rows if rows is not None else lines) + "\n"
    (root / "pairs.csv").write_text(text)
    return root


@pytest.fixture(scope="session")
def tiny_engines(tmp_path_factory) -> Path:
    from edge_mla.runtime.testing.tiny_engines import build_tiny_engines

    return build_tiny_engines(tmp_path_factory.mktemp("tiny-engines") / "engines")


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("media")
    return {"wav": write_wav(d / "clip.wav"), "video": write_video(d / "clip.avi")}


@pytest.fixture(scope="session")
def pairs_root(tmp_path_factory) -> Path:
    """A valid folder dataset shared read-only; tests copy pairs.csv variants next
    to its media through ``bad_folder``."""
    return folder_dataset(tmp_path_factory.mktemp("pairs") / "ds")


def bad_folder(pairs_root: Path, dst: Path, csv: bytes) -> Path:
    """A folder dataset using ``pairs_root``'s media with pairs.csv replaced by ``csv``."""
    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "audio"):
        if not (dst / sub).exists():
            os.symlink(pairs_root / sub, dst / sub)
    (dst / "pairs.csv").write_bytes(csv)
    return dst


def manifest_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def edit_manifest(folder: Path, fn) -> Path:
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder
