"""Encoders f_m(x_m) -> h_m in R^d (the same d for every modality).

tiny: three conv blocks, seconds per epoch on 2 CPU cores (tests, demo).
resnet18: the paper's encoder family (BasicBlock [2, 2, 2, 2], 512-d), with a 3x3 stem
for small inputs; written here because torchvision's wheels do not install beside
torch 2.13 on these machines.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    def __init__(self, dim: int = 64, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(1, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(4 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18(nn.Module):
    def __init__(self, stem_stride: int = 1, dim: int = 512) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 64, stem_stride)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Identity() if dim == 512 else nn.Linear(512, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class ImageEncoder(nn.Module):
    """(B, 1, S, S) image in [0, 1] -> (B, d). Normalisation is inside the model so the
    engine takes the plain preprocessed frame."""

    def __init__(self, backbone: nn.Module, mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


class AudioEncoder(nn.Module):
    """(B, T) raw PCM -> (B, d): log-mel front end, a per-band normalisation (a
    BatchNorm over the mel bands, learned statistics, so a live window needs no
    utterance-level statistics), then the backbone."""

    def __init__(self, frontend: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.norm = nn.BatchNorm1d(frontend.n_mels)
        self.backbone = backbone

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(pcm).squeeze(1)  # (B, mels, frames)
        return self.backbone(self.norm(mel).unsqueeze(1))
