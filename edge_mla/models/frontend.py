"""Log-mel front end built from plain ops (Conv1d, Mul, Add, MatMul, Log).

It lives inside the audio model, so the exported engine takes raw PCM and training
and every engine compute identical features; ONNX Runtime and TensorRT both run these
ops, and the export keeps them out of INT8 quantization.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """HTK-style triangular mel filters, shape (n_fft // 2 + 1, n_mels)."""
    fmax = fmax or sample_rate / 2
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    def mel2hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    mels = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    hz = mel2hz(mels)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    fb = np.zeros((n_fft // 2 + 1, n_mels), np.float32)
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (bins - lo) / max(mid - lo, 1e-6)
        down = (hi - bins) / max(hi - mid, 1e-6)
        fb[:, i] = np.maximum(0.0, np.minimum(up, down))
    return fb


class LogMel(nn.Module):
    """(B, T) PCM -> (B, 1, n_mels, frames) log-mel energies."""

    def __init__(self, sample_rate: int, n_fft: int = 256, hop: int = 80, n_mels: int = 40, floor: float = 1e-3) -> None:
        super().__init__()
        # The floor bounds the log's range: padded silence would otherwise sit at
        # log(1e-6) = -13.8, far from speech, and dominate the normalisation.
        self.floor = floor
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        n_bins = n_fft // 2 + 1
        t = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * math.pi * t / n_fft)
        k = np.arange(n_bins)[:, None]
        ang = 2 * math.pi * k * t[None, :] / n_fft
        basis = np.concatenate([np.cos(ang) * window, -np.sin(ang) * window], axis=0)  # (2*bins, n_fft)
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32))[:, None, :], persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(n_fft, n_mels, sample_rate)), persistent=False)
        self.n_bins = n_bins

    def frames(self, window: int) -> int:
        return (window - self.n_fft) // self.hop + 1

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(pcm.unsqueeze(1), self.dft, stride=self.hop)  # (B, 2*bins, F)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        power = re * re + im * im  # (B, bins, F)
        melspec = torch.matmul(power.transpose(1, 2), self.mel)  # (B, F, mels)
        return torch.log(melspec + self.floor).transpose(1, 2).unsqueeze(1)
