"""record_session: render a Script to a video file + WAV + ground-truth JSON.

Each segment shows one test image (white digit on black, upscaled into a camera
sized frame with sensor noise, so that consecutive frames differ the way a real
camera's do) and repeats a spoken clip of the same label. Faults are rendered as
script.py describes; the "gone" spans are also written as outages, which
``session_config`` hands to the replay sources so they behave like unplugged
devices (the runtime's real reconnect path) rather than merely delivering black
frames or silence.

Files: session.avi (MJPG: OpenCV's FFmpeg backend writes it here; H.264 encoding
does not work on these machines), session.wav (16-bit PCM at script.audio_rate),
truth.json (format edge-mla-replay/1: segments with labels, faults, outages).
Runtime imports only (numpy, OpenCV, soundfile); the dataset loaders use numpy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.preprocess import fit_window, pcm_to_float, resample
from edge_mla.runtime.replay.script import Script
from edge_mla.validate import names_inside

log = logging.getLogger(__name__)

TRUTH_FORMAT = "edge-mla-replay/1"


@dataclass
class Session:
    root: Path
    video: Path
    audio: Path
    truth_path: Path
    truth: dict


def _frame(img: np.ndarray, size: tuple, rng: np.random.Generator, noise: float = 4.0) -> np.ndarray:
    import cv2

    w, h = size
    s = min(w, h)
    digit = cv2.resize((np.clip(img, 0, 1) * 255).astype(np.uint8), (s, s), interpolation=cv2.INTER_LINEAR)
    grey = np.zeros((h, w), np.float32)
    top, left = (h - s) // 2, (w - s) // 2
    grey[top : top + s, left : left + s] = digit
    grey += rng.normal(0, noise, grey.shape).astype(np.float32)
    g = np.clip(grey, 0, 255).astype(np.uint8)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


MIC_NOISE_RMS = 0.3  # the mic_noise fault's interference level (full scale 1.0)


def _smear(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smeared, washed-out lens: the held-out motion and contrast corruptions."""
    from edge_mla.corruptions import corruption

    x = img[None, None]
    x = corruption("image_motion", 3).apply(x, rng)
    return corruption("image_contrast", 3).apply(x, rng)[0, 0]


def record_session(
    script: Script,
    out_dir: str | Path,
    split=None,
    dataset: str = "demo",
    data_dir: Optional[str] = None,
    split_name: str = "test",
    codec: str = "MJPG",
) -> Session:
    """Render ``script`` with examples from ``split`` (a PairedSplit; default: the
    ``split_name`` split of ``load_dataset(dataset, data_dir)``) into ``out_dir``.
    Returns the Session (paths + truth dict)."""
    import cv2
    import soundfile as sf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = [str(i) for i in range(10)]
    sample_rate = 8000
    if split is None:
        from edge_mla.data.registry import load_dataset

        ds = load_dataset(dataset, data_dir=data_dir)
        split, classes, sample_rate = ds.split(split_name), ds.classes, ds.sample_rate
    rng = np.random.default_rng(script.seed)
    picks = rng.choice(len(split), size=script.segments, replace=len(split) < script.segments)
    w, h = script.frame_size
    fps = script.fps
    n_frames = int(round(script.duration * fps))
    n_audio = int(round(script.duration * script.audio_rate))
    ext = ".avi" if codec in ("MJPG", "FFV1") else ".mp4"
    video_path, wav_path, truth_path = out / f"session{ext}", out / "session.wav", out / "truth.json"
    writer = cv2.VideoWriter(str(video_path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
    if not writer.isOpened():
        raise EdgeMlaError(f"{video_path}: OpenCV cannot write {codec} video here")

    def faults_at(t: float, mod_prefix: str) -> set:
        return {f.kind for f in script.faults if f.kind.startswith(mod_prefix) and f.start <= t < f.end}

    segments = []
    audio = np.zeros(n_audio, np.float32)
    clip_pool = {}
    for c in np.unique(split.labels):
        clip_pool[int(c)] = np.unique(split.clip_index[split.labels == c])
    for i, row in enumerate(picks):
        label = int(split.labels[row])
        t0 = i * script.segment_seconds
        clips = []
        k = 0
        while t0 + k * script.say_every < t0 + script.segment_seconds - 0.05:
            ci = int(split.clip_index[row]) if k == 0 else int(rng.choice(clip_pool[label]))
            clip = pcm_to_float(split.clips[ci])
            clip = fit_window(clip, min(clip.size, int(script.say_every * sample_rate)), offset=None)  # at most one period
            x = resample(clip, sample_rate, script.audio_rate)
            s0 = int(round((t0 + k * script.say_every + 0.05) * script.audio_rate))
            s1 = min(s0 + x.size, int(round((t0 + script.segment_seconds) * script.audio_rate)), n_audio)
            audio[s0:s1] += x[: s1 - s0]
            clips.append(ci)
            k += 1
        segments.append({"start": round(t0, 4), "end": round(t0 + script.segment_seconds, 4), "label": classes[label], "class_index": label, "image_index": int(split.image_index[row]), "clip_indices": clips})
    # silence faults on the audio track
    for f in script.faults:
        if f.kind in ("mic_silent", "mic_gone"):
            audio[int(f.start * script.audio_rate) : int(f.end * script.audio_rate)] = 0.0
    audio += rng.normal(0, 1e-3, audio.shape).astype(np.float32) * (audio != 0)  # noise floor except true silence
    for f in script.faults:
        if f.kind == "mic_noise":  # loud interference, about -10 dB SNR against the speech
            a, b = int(f.start * script.audio_rate), int(f.end * script.audio_rate)
            audio[a:b] += rng.normal(0, MIC_NOISE_RMS, b - a).astype(np.float32)
    sf.write(str(wav_path), np.clip(audio, -1, 1), script.audio_rate, subtype="PCM_16")

    frozen = None
    seg_len = script.segment_seconds
    for fi in range(n_frames):
        t = fi / fps
        seg = segments[min(int(t // seg_len), len(segments) - 1)]
        kinds = faults_at(t, "camera")
        if "camera_frozen" in kinds:
            if frozen is None:
                frozen = _frame(split.images[seg["image_index"]][0], (w, h), rng)
            frame = frozen
        else:
            frozen = None
            if "camera_gone" in kinds:
                frame = np.zeros((h, w, 3), np.uint8)  # placeholder: never read (outage)
            elif "camera_smear" in kinds:
                frame = _frame(_smear(split.images[seg["image_index"]][0], rng), (w, h), rng)
            elif "camera_black" in kinds:
                frame = _frame(np.zeros((28, 28), np.float32), (w, h), rng)  # covered lens: dark + sensor noise
            else:
                frame = _frame(split.images[seg["image_index"]][0], (w, h), rng)
        writer.write(frame)
    writer.release()

    outages = {
        "camera": [[f.start, f.end] for f in script.faults if f.kind == "camera_gone"],
        "mic": [[f.start, f.end] for f in script.faults if f.kind == "mic_gone"],
    }
    truth = {
        "format": TRUTH_FORMAT,
        "video": video_path.name,
        "audio": wav_path.name,
        "duration": script.duration,
        "fps": fps,
        "audio_rate": script.audio_rate,
        "classes": classes,
        "dataset": dataset,
        "split": split_name,
        "script": script.to_dict(),
        "segments": segments,
        "faults": [{"kind": f.kind, "start": f.start, "end": f.end} for f in script.faults],
        "outages": outages,
    }
    truth["script"]["faults"] = truth["faults"]
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    log.info("replay session written to %s (%.0fs, %d faults)", out, script.duration, len(script.faults))
    return Session(out, video_path, wav_path, truth_path, truth)


def load_session(path: str | Path) -> Session:
    """A recorded session folder (or its truth.json)."""
    p = Path(path)
    truth_path = p if p.suffix == ".json" else p / "truth.json"
    if not truth_path.is_file():
        raise EdgeMlaError(f"{p}: not a replay session (no truth.json; record one with record_session)")
    from edge_mla.manifest import read_json

    truth = read_json(truth_path)
    if not isinstance(truth, dict) or truth.get("format") != TRUTH_FORMAT:
        raise EdgeMlaError(f"{truth_path}: not an edge-mla replay truth file (expected {TRUTH_FORMAT})")
    root = truth_path.parent
    files = {}
    for key in ("video", "audio"):
        name = truth.get(key)
        if not isinstance(name, str) or not names_inside(name):
            raise EdgeMlaError(f"{truth_path}: {key} must name a file inside the session folder (got {name!r})")
        files[key] = root / name
    outages = truth.get("outages")
    if not isinstance(outages, dict):
        raise EdgeMlaError(f"{truth_path}: outages must be an object of camera/mic [start, end] lists (got {outages!r})")
    unknown = sorted(set(outages) - {"camera", "mic"})
    if unknown:  # "Camera" or "microphone" was ignored: the scripted outage never happened
        raise EdgeMlaError(f"{truth_path}: outages.{unknown[0]}: unknown sensor; outages are given for camera and mic")
    for sensor, spans in outages.items():
        ok = isinstance(spans, list) and all(isinstance(sp, list) and len(sp) == 2 and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in sp) and sp[0] <= sp[1] for sp in spans)
        if not ok:
            raise EdgeMlaError(f"{truth_path}: outages.{sensor} must be a list of [start, end] seconds (got {spans!r})")
    return Session(root, files["video"], files["audio"], truth_path, truth)


def session_config(session: Session, **overrides):
    """A RunConfig that replays ``session`` through the file sources, with its
    camera/mic outages; ``overrides`` set any other RunConfig field."""
    from edge_mla.runtime.config import Outage, RunConfig

    o = session.truth["outages"]
    kw = dict(camera=str(session.video), mic=str(session.audio), camera_outages=[Outage(a, b) for a, b in o.get("camera", [])], mic_outages=[Outage(a, b) for a, b in o.get("mic", [])])
    kw.update(overrides)
    return RunConfig(**kw)
