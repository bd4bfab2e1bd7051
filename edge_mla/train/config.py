"""The one config object of `edge-mla train`; every CLI flag maps onto a field, and a
JSON config file (--config) can set any of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from edge_mla.errors import EdgeMlaError
from edge_mla.validate import flag, not_empty_path, number, numbers

if TYPE_CHECKING:
    from edge_mla.data.augment import AudioAugment

METHODS = ("mla", "joint", "unimodal", "ogm_ge", "mmpareto")
HEAD_GRADS = ("owm", "owm_norm", "none")
# Where training runs: auto = cuda when torch.cuda.is_available() else cpu (resolved at
# training time by edge_mla.train.device, never here: a run trained on a GPU must still
# load its config on a machine without one).
DEVICES = ("auto", "cpu", "cuda")
# Each method's fusion rule for its own "fused" prediction (used for checkpoint
# selection): MLA fuses by entropy; late fusion sums the concat head's parts
# (MMPareto predicts with its multimodal concat head, so its rule is also the sum).
NATIVE_FUSION = {"mla": "entropy", "joint": "sum", "ogm_ge": "sum", "unimodal": "mean", "mmpareto": "sum"}


def fusion_rule_of(method: Optional[str]) -> str:
    """The rule a checkpoint of ``method`` is fused with (entropy for a checkpoint
    that names no method: MLA's, the default)."""
    return NATIVE_FUSION.get(method, "entropy")


HEAD_KIND = {"mla": "shared", "joint": "concat", "ogm_ge": "concat", "unimodal": "separate", "mmpareto": "concat_aux"}
# Named recipes: the fields a recipe sets unless a flag or the config file sets them.
# "default" is what `edge-mla train` does with no flags (BENCHMARKS.md section 12 measured
# it best on fused accuracy while keeping each modality alone within a point of unimodal
# training); "paper" is the MLA paper's exact form (OWM projection as published).
RECIPES = {
    "default": {"method": "mla", "head_grad": "owm_norm"},
    "paper": {"method": "mla", "head_grad": "owm", "owm_alpha": "auto"},
}


# Every numeric field and its valid range (edge_mla.validate.number's keywords).
NUMERIC = {
    "epochs": dict(lo=1, hi=100_000, integer=True),
    "batch_size": dict(lo=1, hi=65_536, integer=True),
    "lr": dict(lo=0, lo_open=True, hi=100),
    "momentum": dict(lo=0, hi=1, hi_open=True),
    "weight_decay": dict(lo=0, hi=1),  # an L2 factor; 1e300 overflowed inside torch's SGD
    "lr_step": dict(lo=0, hi=1),  # a fraction of the epochs
    "seed": dict(lo=0, hi=2**32 - 1, integer=True),
    "limit": dict(lo=1, integer=True, optional=True),
    "val_limit": dict(lo=1, integer=True, optional=True),
    "ogm_alpha": dict(lo=0),
    "mmpareto_gamma": dict(lo=0, lo_open=True, hi=100),  # not checked before: NaN trained a model of NaN and published it
    "ogm_start": dict(lo=0, integer=True),
    "ogm_end": dict(lo=0, integer=True, optional=True),
    "threads": dict(lo=0, hi=1024, integer=True),
    "nproc": dict(lo=1, hi=1024, integer=True),
    "aug_speed": dict(lo=0, hi=0.5),
}
AUG_GAIN_DB_RANGE = (-60.0, 40.0)  # a gain outside it drowns speech in the log floor or clips it flat


@dataclass
class TrainConfig:
    method: str = RECIPES["default"]["method"]
    recipe: Optional[str] = None  # a name in RECIPES; fills the fields not set explicitly
    preset: str = "tiny"
    dataset: str = "avmnist"
    data_dir: Optional[str] = None
    split: str = "official"  # avmnist: official | speaker
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05  # tiny encoders on log-mel learn 3x faster than at the paper's 1e-3..1e-2 (measured)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: float = 0.7  # LR x0.1 after this fraction of the epochs (authors: 70 of 100)
    seed: int = 0
    limit: Optional[int] = None  # training pairs used (seeded subsample); None = all
    val_limit: Optional[int] = 5000  # validation pairs scored each epoch
    out: Optional[str] = None
    head_grad: str = RECIPES["default"]["head_grad"]  # MLA head gradient modification: owm | owm_norm | none
    owm_alpha: Union[str, float] = "auto"  # auto: 0.1 ** (1 + b / N) within each epoch
    modality_order: tuple = ("audio", "image")
    ogm_alpha: float = 0.5
    ogm_start: int = 0  # OGM-GE modulates from this epoch ...
    ogm_end: Optional[int] = None  # ... until this one (None: all)
    mmpareto_gamma: float = 1.5  # MMPareto's final gradient scale (authors: 1.5)
    nproc: int = 1  # training processes (torch.distributed); batch_size is the global batch
    augment: bool = True  # training-time audio augmentation: random placement, plus the two below
    # Level and voice augmentation (edge_mla.data.augment; BENCHMARKS.md section 8 measured
    # it: audio on held-out speakers 27% -> 80%): a gain uniform in dB in this range ...
    aug_gain_db: tuple = (-24.0, 6.0)
    aug_speed: float = 0.1  # ... and a speed factor in [1 - s, 1 + s]
    threads: int = 0  # torch threads; 0 = all cores
    device: str = "auto"  # one of DEVICES
    progress: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        mo = self.modality_order
        if not isinstance(mo, (list, tuple)) or not all(isinstance(m, str) for m in mo) or sorted(mo) != ["audio", "image"]:
            raise EdgeMlaError(f"modality_order must list audio and image once each (got {self.modality_order!r})")
        self.modality_order = tuple(self.modality_order)
        self.validate()

    def validate(self) -> None:
        from edge_mla.data.registry import DATASETS

        if self.recipe is not None and (not isinstance(self.recipe, str) or self.recipe not in RECIPES):
            raise EdgeMlaError(f"unknown --recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.method not in METHODS:
            raise EdgeMlaError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.preset not in ("tiny", "resnet18"):
            raise EdgeMlaError(f"unknown preset {self.preset!r}; choose tiny or resnet18")
        if self.dataset not in DATASETS:
            raise EdgeMlaError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.head_grad not in HEAD_GRADS:
            raise EdgeMlaError(f"unknown --head-grad {self.head_grad!r}; choose one of {', '.join(HEAD_GRADS)}")
        if self.device not in DEVICES:
            raise EdgeMlaError(f"unknown --device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.split not in ("official", "speaker"):
            raise EdgeMlaError(f"unknown --split {self.split!r}; choose official or speaker")
        numbers(self, NUMERIC)
        if self.ogm_end is not None and self.ogm_end < self.ogm_start:
            raise EdgeMlaError(f"--ogm-end {self.ogm_end} is before --ogm-start {self.ogm_start}: OGM-GE would never modulate")
        for name in ("augment", "progress", "force"):
            if not isinstance(getattr(self, name), bool):
                raise EdgeMlaError(f"{name} must be true or false (got {getattr(self, name)!r})")
        for name in ("data_dir", "out"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, Path)):
                raise EdgeMlaError(f"{flag(name)} must be a path (got {v!r})")
            not_empty_path(v, name)
        g = self.aug_gain_db
        if not isinstance(g, (list, tuple)) or len(g) != 2:
            raise EdgeMlaError(f"--aug-gain-db takes two numbers, LOW HIGH in dB (got {g!r})")
        lo, hi = (number(v, "aug_gain_db", lo=AUG_GAIN_DB_RANGE[0], hi=AUG_GAIN_DB_RANGE[1]) for v in g)
        if lo > hi:
            raise EdgeMlaError(f"--aug-gain-db LOW HIGH: LOW must not exceed HIGH (got {lo:g} {hi:g})")
        self.aug_gain_db = (float(lo), float(hi))
        if self.batch_size % self.nproc:
            raise EdgeMlaError(f"--batch-size {self.batch_size} is the global batch and must be a multiple of --nproc {self.nproc}")
        if self.owm_alpha != "auto":
            if isinstance(self.owm_alpha, str):
                try:
                    self.owm_alpha = float(self.owm_alpha)
                except ValueError:
                    raise EdgeMlaError(f"--owm-alpha must be 'auto' or a positive number, not {self.owm_alpha!r}") from None
            self.owm_alpha = number(self.owm_alpha, "owm_alpha", lo=0, lo_open=True)

    @property
    def native_fusion(self) -> str:
        return NATIVE_FUSION[self.method]

    @property
    def head_kind(self) -> str:
        return HEAD_KIND[self.method]

    def audio_augment(self) -> Optional[AudioAugment]:
        """The training-time audio perturbation (an AudioAugment), or None with augment off."""
        from edge_mla.data.augment import AudioAugment

        return AudioAugment(True, self.aug_gain_db, float(self.aug_speed)) if self.augment else None

    @staticmethod
    def audio_augment_of(payload: dict, where: str) -> Optional[AudioAugment]:
        """The audio perturbation a checkpoint was trained with, from the config the
        trainer saved in it (one from before gain and speed existed was trained with
        placement only); None (centred clips) for a checkpoint with no saved config,
        whose training is unknown. ``where`` names the file in the one-line error
        for a malformed value."""
        saved = (payload.get("extra") or {}).get("config") if isinstance(payload.get("extra"), dict) else None
        if not isinstance(saved, dict):
            return None
        keys = {k: saved[k] for k in ("augment", "aug_gain_db", "aug_speed") if k in saved}
        keys.setdefault("aug_gain_db", (0.0, 0.0))
        keys.setdefault("aug_speed", 0.0)
        try:
            return TrainConfig(**keys).audio_augment()
        except EdgeMlaError as exc:
            raise EdgeMlaError(f"{where}: training config {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modality_order"] = list(self.modality_order)
        d["aug_gain_db"] = list(self.aug_gain_db)
        return d

    @classmethod
    def from_file(cls, path: str, overrides: dict) -> "TrainConfig":
        """A JSON config file, with explicit CLI flags taking precedence."""
        from edge_mla.manifest import read_json

        p = Path(path)
        data = read_json(p)
        if not isinstance(data, dict):
            raise EdgeMlaError(f"{p}: a config file holds one JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgeMlaError(f"{p}: unknown config key(s) {', '.join(unknown)}")
        try:  # the file's own values first, so an error there names the file
            cls(**data)
        except EdgeMlaError as exc:
            raise EdgeMlaError(f"{p}: {exc}") from None
        data.update(overrides)
        return cls.build(data)

    @classmethod
    def build(cls, values: dict) -> "TrainConfig":
        """A config from explicit values; a named recipe fills the fields they leave unset."""
        recipe = values.get("recipe")
        preset = RECIPES.get(recipe, {}) if isinstance(recipe, str) else {}
        return cls(**{**preset, **values})  # an unknown or malformed name fails in validate()
