"""The one definition of input preprocessing, shared by training, export
calibration and the runtime (numpy + OpenCV, never torch).

Images: any grey or BGR frame -> (1, S, S) float32 in [0, 1], white digit on black.
Audio: float32 PCM in [-1, 1] at the engine's sample rate, padded or trimmed to the
window; the log-mel front end lives inside the audio engine itself.
"""

from __future__ import annotations

import numpy as np

# Sample rates edge-mla takes anywhere (a model, a manifest, a WAV file, a mic): below
# 1 kHz a clip is not speech-band audio (a 1 Hz header resampled one second into 256M
# samples), above 384 kHz no sound card records.
AUDIO_RATES = (1000, 384000)


def image_to_tensor(frame: np.ndarray, size: int, invert: bool = False) -> np.ndarray:
    """Convert a frame (H, W), (H, W, 1) or BGR (H, W, 3), uint8 or float in [0, 1],
    to the engine's (1, size, size) float32 input.

    A centred square crop keeps the aspect ratio so that a 16:9 camera and a square
    training image see the digit at the same scale.
    """
    import cv2  # local: keeps `import edge_mla` numpy-only

    img = np.asarray(frame)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {img.shape}")
    img = img.astype(np.float32)
    if np.asarray(frame).dtype == np.uint8 or img.max() > 1.5:
        img = img / 255.0
    h, w = img.shape
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    if img.shape[0] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    if invert:
        img = 1.0 - img
    return np.clip(img, 0.0, 1.0)[None].astype(np.float32)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 or float PCM -> float32 in [-1, 1]."""
    a = np.asarray(pcm)
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    return a.astype(np.float32)


def fit_window(clip: np.ndarray, window: int, offset: int | None = None) -> np.ndarray:
    """Place a clip in a window of ``window`` samples.

    A short clip is zero-padded; ``offset`` is where it starts (None: centred). A long
    clip is trimmed around its centre (or from ``offset`` into the clip if given as a
    negative number of samples to skip).
    """
    clip = pcm_to_float(clip)
    out = np.zeros(window, np.float32)
    n = clip.shape[0]
    if n >= window:
        start = (n - window) // 2 if offset is None else min(max(-offset, 0), n - window)
        out[:] = clip[start : start + window]
    else:
        start = (window - n) // 2 if offset is None else min(max(offset, 0), window - n)
        out[start : start + n] = clip
    return out


MAX_PHASES = 1000  # most filter phases a resampling ratio may take (every pair of standard rates is exact within it)


def resample_ratio(src_rate: int, dst_rate: int) -> tuple:
    """(up, down): output = input x up / down. The exact ratio unless it needs more than
    MAX_PHASES phases, then the nearest one that does not. A 44101 Hz WAV against an
    8 kHz engine is 8000/44101: a 1.4-million-tap filter built on every mic hop
    starved the audio engine; the nearest ratio within 1000 phases is off by about
    3e-6, far below a sound card's own clock error."""
    from fractions import Fraction
    from math import gcd

    src_rate, dst_rate = int(src_rate), int(dst_rate)
    g = gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    if max(up, down) <= MAX_PHASES:
        return up, down
    ratio = Fraction(dst_rate, src_rate)
    near = ratio.limit_denominator(max(1, min(MAX_PHASES, MAX_PHASES * src_rate // dst_rate)))
    return max(near.numerator, 1), near.denominator


def filter_half(up: int, down: int) -> int:
    """Half length of resample's low-pass, in upsampled samples (StreamResampler needs it too)."""
    return 16 * max(up, down)


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling by a rational factor (windowed-sinc polyphase).

    Used for microphone capture (48 kHz -> engine rate) and for user WAV files, so
    it must not alias speech: the low-pass sits at 0.45 of the lower Nyquist rate.
    """
    x = np.asarray(x, np.float32)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    up, down = resample_ratio(src_rate, dst_rate)
    cutoff = 0.9 / (2 * max(up, down))  # in cycles per upsampled sample
    half = filter_half(up, down)
    t = np.arange(-half, half + 1, dtype=np.float64)
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(t.size, 8.0)
    h = (h * up).astype(np.float32)
    n_out = int(np.ceil(x.size * up / down))
    # Polyphase: output k takes the upsampled signal at k*down, i.e. input samples
    # j = j0(k) + t (t < taps) weighted by h[k*down - j*up + half]. With
    # r = (k*down - half) mod up that weight is h[2*half + r - t*up]: one row of
    # taps per phase r, and the outputs of one phase read windows of x that start
    # `down` samples apart. So each phase is a strided view of the zero-padded input
    # times its row of taps: no index arrays (the streaming mic path runs this on
    # every hop). The products and their order per output are those of the direct
    # sum, so the result does not depend on where the buffer starts.
    taps = int(np.ceil((2 * half + 1) / up)) + 1
    k = np.arange(n_out)
    j0 = (k * down - half) // up
    phase = (k * down - half) - j0 * up
    t_idx = 2 * half + np.arange(up)[:, None] - np.arange(taps)[None, :] * up
    bank = np.where((t_idx >= 0) & (t_idx < h.size), h[np.clip(t_idx, 0, h.size - 1)], 0.0).astype(np.float32)  # (up, taps)
    pad_left = max(0, -int(j0.min()))
    pad_right = max(0, int(j0.max()) + taps - x.size)
    xp = np.concatenate([np.zeros(pad_left, np.float32), x, np.zeros(pad_right, np.float32)])
    y = np.empty(n_out, np.float32)
    step = xp.strides[0]
    for k0 in range(min(up, n_out)):  # outputs k0, k0 + up, ... share a phase; their windows start `down` apart
        count = (n_out - k0 + up - 1) // up
        view = np.lib.stride_tricks.as_strided(xp[pad_left + int(j0[k0]) :], shape=(count, taps), strides=(down * step, step), writeable=False)
        y[k0::up] = np.sum(view * bank[phase[k0]], axis=1)
    return y
