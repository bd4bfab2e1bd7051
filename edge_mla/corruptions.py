"""Corrupted sensor inputs for the robustness suite: numpy only, seeded, batched.

Each family degrades one modality at a few severities (1 = mild .. 3 = severe).
Families are split in two: ``train`` families may be used to fit a reliability
signal (clean vs corrupted on the validation split); ``held_out`` families are
never seen by any fitting step and are the ones the benchmark judges, because a
detector that only recognises the corruptions it was fitted on is not a fix.

Inputs are the engines' inputs: images (N, 1, S, S) in [0, 1], audio (N, T) PCM in
[-1, 1] at the engine's sample rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Corruption:
    family: str  # e.g. "audio_babble"
    modality: str
    held_out: bool
    severity: int
    fn: Callable[[np.ndarray, np.random.Generator, int], np.ndarray]

    @property
    def name(self) -> str:
        return f"{self.family}@{self.severity}"

    def apply(self, x: np.ndarray, rng: np.random.Generator, sample_rate: int = 8000) -> np.ndarray:
        return np.asarray(self.fn(np.asarray(x, np.float32), rng, sample_rate), np.float32)


# -- image families -------------------------------------------------------------------
def _image_black(level: float):
    return lambda x, rng, sr: x * level


def _image_noise(sigma: float):
    return lambda x, rng, sr: np.clip(x + rng.normal(0, sigma, x.shape), 0, 1)


def _image_overexpose(offset: float):
    return lambda x, rng, sr: np.clip(x * (1 + offset) + offset, 0, 1)


def _image_contrast(c: float):
    return lambda x, rng, sr: x * c + (1 - c) * 0.5


def _image_occlusion(frac: float):
    """A lens half covered: the bottom ``frac`` of the frame is dark."""

    def f(x, rng, sr):
        y = x.copy()
        y[..., int(round(x.shape[-2] * (1 - frac))):, :] = 0.0
        return y

    return f


def _image_motion(length: int):
    """Horizontal motion smear: a box filter of ``length`` pixels along the rows."""

    def f(x, rng, sr):
        k = np.ones(length, np.float32) / length
        pad = length // 2
        xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, length - 1 - pad)], mode="edge")
        out = np.zeros_like(x)
        for i in range(length):
            out += k[i] * xp[..., i : i + x.shape[-1]]
        return out

    return f


def _image_jpeg(quality: int):
    def f(x, rng, sr):
        import cv2

        out = np.empty_like(x)
        for i in range(x.shape[0]):
            img = np.clip(x[i, 0] * 255 + 0.5, 0, 255).astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
            out[i, 0] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        return out

    return f


# -- audio families -------------------------------------------------------------------
def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True)) + 1e-8


def _audio_silence(gain: float):
    return lambda x, rng, sr: x * gain


def _audio_white_noise(snr_db: float):
    def f(x, rng, sr):
        noise = rng.normal(0, 1, x.shape)
        noise *= _rms(x) / _rms(noise) * 10 ** (-snr_db / 20)
        return np.clip(x + noise, -1, 1)

    return f


def _audio_babble(gain: float):
    """Another speaker over the wanted one: the batch's next clip at ``gain`` x its level."""

    def f(x, rng, sr):
        other = np.roll(x, 1, axis=0)
        other = np.roll(other, int(rng.integers(0, x.shape[-1])), axis=-1)
        return np.clip(x + other * (_rms(x) / _rms(other)) * gain, -1, 1)

    return f


def _audio_reverb(rt60: float):
    """A reverberant room: an exponentially decaying noise impulse response."""

    def f(x, rng, sr):
        n = int(rt60 * sr)
        t = np.arange(n) / sr
        ir = rng.normal(0, 1, n) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0
        ir /= np.sqrt(np.sum(ir**2))
        size = x.shape[-1] + n - 1
        spec = np.fft.rfft(x, size, axis=-1) * np.fft.rfft(ir, size)
        y = np.fft.irfft(spec, size, axis=-1)[..., : x.shape[-1]]
        return np.clip(y * (_rms(x) / _rms(y)), -1, 1)

    return f


def _audio_crackle(frac: float):
    """A bad cable: 20 ms chunks drop out and loud clicks appear."""

    def f(x, rng, sr):
        chunk = max(int(0.02 * sr), 1)
        n = x.shape[-1] // chunk
        keep = rng.random((x.shape[0], n)) >= frac
        mask = np.repeat(keep, chunk, axis=1)
        mask = np.pad(mask, [(0, 0), (0, x.shape[-1] - mask.shape[1])], constant_values=True)
        clicks = (rng.random(x.shape) < frac * 0.01) * rng.choice([-1.0, 1.0], x.shape)
        return np.clip(x * mask + clicks * 0.9, -1, 1)

    return f


def _audio_overdrive(gain: float):
    """An overdriven microphone preamp: gain then hard clipping."""
    return lambda x, rng, sr: np.clip(x / (np.max(np.abs(x), axis=-1, keepdims=True) + 1e-8) * gain, -1, 1) * 0.9


def _audio_hum(level: float):
    """Mains hum (50 Hz and harmonics) at ``level`` x the speech level."""

    def f(x, rng, sr):
        t = np.arange(x.shape[-1]) / sr
        hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 5))
        hum = hum[None] / _rms(hum[None])
        return np.clip(x + hum * _rms(x) * level, -1, 1)

    return f


# family -> (modality, held_out, factory, severities 1..3)
FAMILIES: dict = {
    "image_black": ("image", False, _image_black, (0.3, 0.1, 0.0)),
    "image_noise": ("image", False, _image_noise, (0.2, 0.4, 0.7)),
    "image_overexpose": ("image", True, _image_overexpose, (0.3, 0.6, 1.0)),
    "image_contrast": ("image", True, _image_contrast, (0.4, 0.2, 0.1)),
    "image_occlusion": ("image", True, _image_occlusion, (0.4, 0.6, 0.8)),
    "image_motion": ("image", True, _image_motion, (5, 9, 15)),
    "image_jpeg": ("image", True, _image_jpeg, (15, 8, 3)),
    "audio_silence": ("audio", False, _audio_silence, (0.1, 0.01, 0.0)),
    "audio_white_noise": ("audio", False, _audio_white_noise, (10.0, 0.0, -10.0)),
    "audio_babble": ("audio", True, _audio_babble, (0.7, 1.0, 2.0)),
    "audio_reverb": ("audio", True, _audio_reverb, (0.3, 0.7, 1.5)),
    "audio_crackle": ("audio", True, _audio_crackle, (0.2, 0.4, 0.7)),
    "audio_overdrive": ("audio", True, _audio_overdrive, (5.0, 20.0, 100.0)),
    "audio_hum": ("audio", True, _audio_hum, (1.0, 3.0, 10.0)),
}
SEVERITIES = (1, 2, 3)


def corruption(family: str, severity: int) -> Corruption:
    if family not in FAMILIES:
        raise ValueError(f"unknown corruption family {family!r}; choose one of {', '.join(FAMILIES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be one of {SEVERITIES} (got {severity})")
    mod, held_out, factory, levels = FAMILIES[family]
    return Corruption(family, mod, held_out, severity, factory(levels[severity - 1]))


def suite(held_out: bool | None = None, modalities: tuple = ("image", "audio"), severities: tuple = SEVERITIES) -> list:
    """Every (family, severity), optionally only the held-out (True) or train (False) ones."""
    out = []
    for fam, (mod, ho, _, _) in FAMILIES.items():
        if mod in modalities and (held_out is None or ho == held_out):
            out += [corruption(fam, s) for s in severities]
    return out


def by_name(name: str) -> Corruption:
    """``family@severity`` -> the Corruption."""
    fam, _, sev = name.partition("@")
    try:
        return corruption(fam, int(sev or 3))
    except ValueError as exc:
        raise ValueError(f"corruption {name!r}: {exc}") from None
