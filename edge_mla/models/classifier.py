"""The multimodal classifier: one encoder per modality and a head.

head="shared"   (MLA): z_m = W h_m + b, one W for every modality.
head="concat"   (joint, OGM-GE): z = W [h_1; h_2] + b; modality m's own logits are
                W[:, block m] h_m + b / M, so the fused logits are their sum.
head="separate" (unimodal): an independent head per modality.
head="concat_aux" (MMPareto): the concat head (prediction, engines, fusion "sum") plus
                one unimodal head per modality used only by the training losses.
Every method therefore yields per-modality logits z_m, which is what each exported
engine computes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edge_mla import MODALITIES
from edge_mla.models.encoders import AudioEncoder, ImageEncoder, ResNet18, TinyCNN
from edge_mla.models.frontend import LogMel
from edge_mla.preprocess import AUDIO_RATES

PRESETS = ("tiny", "resnet18")
MODEL_NUMBERS = {  # edge_mla.validate.number's keywords per numeric field
    "num_classes": dict(lo=1, hi=100_000, integer=True),
    "image_size": dict(lo=8, hi=4096, integer=True),
    "sample_rate": dict(lo=AUDIO_RATES[0], hi=AUDIO_RATES[1], integer=True),
    "window": dict(lo=16, hi=10_000_000, integer=True),
    "n_mels": dict(lo=1, hi=1024, integer=True),
    "n_fft": dict(lo=16, hi=16384, integer=True),
    "hop": dict(lo=1, hi=16384, integer=True),
    "dim": dict(lo=0, hi=8192, integer=True),
}
HEADS = ("shared", "concat", "separate", "concat_aux")


@dataclass
class ModelConfig:
    preset: str = "tiny"
    num_classes: int = 10
    head: str = "shared"
    image_size: int = 28
    sample_rate: int = 8000
    window: int = 8000
    n_mels: int = 40
    n_fft: int = 256
    hop: int = 80
    dim: int = 0  # 0: the preset's default (tiny 64, resnet18 512)
    modalities: tuple = field(default_factory=lambda: MODALITIES)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}")
        self.modalities = tuple(self.modalities)
        from edge_mla.validate import numbers

        # A checkpoint's model_config is untrusted: hop 0 or a 100000-point FFT failed
        # deep in torch (or allocated 37 GiB), a 0 Hz or negative rate ran with NaN.
        numbers(self, MODEL_NUMBERS, where="model_config")
        if self.n_fft > self.window or self.hop > self.n_fft or self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"audio front end: need hop <= n_fft <= window and n_mels <= n_fft / 2 + 1 (got hop {self.hop}, n_fft {self.n_fft}, window {self.window}, n_mels {self.n_mels})")
        if not self.dim:
            self.dim = 64 if self.preset == "tiny" else 512

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _backbone(preset: str, dim: int, stem_stride: int) -> nn.Module:
    if preset == "tiny":
        return TinyCNN(dim)
    return ResNet18(stem_stride=stem_stride, dim=dim)


class MultimodalClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc = {}
        if "image" in cfg.modalities:
            enc["image"] = ImageEncoder(_backbone(cfg.preset, cfg.dim, 1))
        if "audio" in cfg.modalities:
            enc["audio"] = AudioEncoder(
                LogMel(cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels), _backbone(cfg.preset, cfg.dim, 2 if cfg.preset == "resnet18" else 1)
            )
        self.encoders = nn.ModuleDict(enc)
        m = len(self.encoders)
        if cfg.head == "shared":
            self.head = nn.Linear(cfg.dim, cfg.num_classes)
        elif cfg.head in ("concat", "concat_aux"):
            self.head = nn.Linear(cfg.dim * m, cfg.num_classes)
        if cfg.head == "concat_aux":
            self.aux_heads = nn.ModuleDict({k: nn.Linear(cfg.dim, cfg.num_classes) for k in self.encoders})
        elif cfg.head == "separate":
            self.heads = nn.ModuleDict({k: nn.Linear(cfg.dim, cfg.num_classes) for k in self.encoders})

    @property
    def modalities(self) -> list:
        return list(self.encoders)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.encoders[modality](x)

    def head_logits(self, modality: str, h: torch.Tensor) -> torch.Tensor:
        """Modality m's logits from its embedding, for every head kind."""
        if self.cfg.head == "shared":
            return self.head(h)
        if self.cfg.head == "separate":
            return self.heads[modality](h)
        i = self.modalities.index(modality)
        d = self.cfg.dim
        w = self.head.weight[:, i * d : (i + 1) * d]
        return h @ w.t() + self.head.bias / len(self.encoders)

    def aux_logits(self, modality: str, h: torch.Tensor) -> torch.Tensor:
        """Modality m's unimodal-head logits (concat_aux only: MMPareto's unimodal losses)."""
        return self.aux_heads[modality](h)

    def logits(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(modality, self.embed(modality, x))

    def forward(self, inputs: dict) -> dict:
        """Per-modality logits for whichever modalities are present in ``inputs``."""
        return {m: self.logits(m, x) for m, x in inputs.items()}

    def head_parameters(self) -> list:
        if self.cfg.head == "separate":
            return list(self.heads.parameters())
        aux = list(self.aux_heads.parameters()) if self.cfg.head == "concat_aux" else []
        return list(self.head.parameters()) + aux


def build_model(cfg: ModelConfig) -> MultimodalClassifier:
    return MultimodalClassifier(cfg)
