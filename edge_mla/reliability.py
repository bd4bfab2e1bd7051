"""Per-modality reliability: is this input one the encoder can be trusted on?

Fitted after training (post hoc, no retraining) from each encoder's embedding ``h``
and logits ``z``; every engine computes it as a second output from constants baked
into its graph (``edge_mla.export.onnx_export``), so FP32, INT8 and TensorRT agree
without Python. This module is the numpy reference, the fitting, and the manifest
form of the constants (pure numpy: the runtime can read it).

Signals (features of one sample, higher = more in-distribution):
  msp          max softmax(z / T), T fitted on clean validation and, for audio, the
               same clips drawn through the training augmentation (temperature scaling)
  energy       T * logsumexp(z / T)  (negative free energy)
  mahalanobis  -log(1 + min_c (h - mu_c)' P (h - mu_c) / D): class-conditional
               Gaussians with one shared covariance (P its inverse), fitted on
               clean training features
Candidates are one signal or a pair; each is mapped to a probability
``r = sigmoid(w . f + b)`` by a logistic fit separating clean validation inputs from
the *train* corruption families (``edge_mla.corruptions``), never the held-out ones.
A distance to the training distribution cannot see a dead sensor when the training
perturbations approach it (a microphone level augmented down to -24 dB makes
digital silence the limit of quiet speech: it scored *more* typical than 88-95%
of clean official test audio). So a Mahalanobis candidate also gets a **fault gate**
(``fit_fault_gate``): the train-family inputs on validation that cost the encoder
more than ``HARD_DROP`` yet pass the map become prototypes, and
``r = sigmoid(min(w . f + b, a * log(1 + d_fault / D) + c))``, with d_fault the
distance to the nearest prototype: it doubts at most ``FAULT_CLEAN_ALARM`` of clean
(and training-perturbed) validation inputs and puts the core of each fault below
every fusion floor. Far from every prototype the gate is inert, so held-out
corruptions are judged by the distance as before.
A modality with ``r < threshold`` is judged unreliable (its sensor reported
``degraded`` when that lasts). Fusion weighs each modality by its rule's own weight
times ``r ** power`` and leaves out one below ``floor`` (``fusion_weights``; the
floor is the rule's, ``WEIGHTINGS``, and the power is fitted per rule on validation,
``reliability_fit.select_power``): a corrupted input (r near 0) drops out, a clean
input the detector merely doubts (r 0.2-0.5; 4-5% of clean official test audio)
still votes instead of being cut off. The sum rule weighs against a reference r per
modality instead of 1, ``min(1, r / reference) ** power`` (``REFERENCE_QUANTILES``):
its halves are partial logits that need each other, and the audio map tops out well
below 1 on clean inputs.
Engine folders exported before the weighting existed carry neither constant and keep
the hard gate they were exported with (power 0, floor = threshold).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError

log = logging.getLogger(__name__)

FEATURES = ("msp", "energy", "mahalanobis")
# candidate name -> the features its logistic map uses
CANDIDATES = {
    "msp": ("msp",),
    "energy": ("energy",),
    "mahalanobis": ("mahalanobis",),
    "energy+mahalanobis": ("energy", "mahalanobis"),
}
# Chosen by benchmarks/reliability_bench.py (BENCHMARKS.md section 8): lowest worst
# held-out regret and highest held-out AUROC; energy+mahalanobis over-fits the train
# families (one seed: audio crackle AUROC 0.78), msp and energy miss most corruptions.
DEFAULT_SIGNAL = "mahalanobis"
DEFAULT_THRESHOLD = 0.5  # the logistic map is class-balanced: below 0.5, likelier corrupted than clean
# Soft weighting per fusion rule: (power, floor). Fusion multiplies the rule's own
# weight by r ** power and leaves out a modality below floor. The floor is policy per
# rule; the power is fitted per run on validation (``reliability_fit.select_power``)
# from POWERS, because what it has to balance is the run's own temperature: an audio
# temperature fitted on perturbed validation (the default fit) leaves a new voice
# softer, and power 3 on top of that took 1.8 clean fused points on held-out speakers
# while the same runs need power 3 against a smeared camera on the official split
# (BENCHMARKS.md section 8, "Fitted weighting"). WEIGHTINGS' power is the fallback
# for a fit with nothing to select on (no corrupted validation inputs). The values:
#   entropy (MLA): power 3 / floor 0.1 kept clean fused accuracy at the plain rule's
#     and had the lowest worst held-out regret on both splits with the clean-only
#     temperature (a hard gate at 0.5, the old rule, cost 2 clean points);
#   sum (joint, OGM-GE, MMPareto): power 1.5 / floor 0.1. The sum's halves are
#     complementary partial logits (54% and 70% alone, 95% summed), so power 3 took
#     too much from a clean half the detector doubts (-2.7 clean points);
#   mean (unimodal): entropy's, not benchmarked on its own.
WEIGHTINGS = {"entropy": (3.0, 0.1), "sum": (1.5, 0.1), "mean": (3.0, 0.1)}
POWERS = (1.0, 1.5, 2.0, 3.0, 4.0)  # what select_power chooses from
POWER_CLEAN_TOLERANCE = 0.5  # points of clean validation accuracy a power may cost against the calibrated plain rule
# A train-family block becomes a fault prototype when it costs the encoder more than
# HARD_DROP on validation (the suite's "hard" corruption, one home) and the map judges
# most of it reliable. The gate doubts at most FAULT_CLEAN_ALARM of clean validation
# (r < 0.5) and gives FAULT_COVER of each fault block at most FAULT_R: below every
# rule's floor (WEIGHTINGS), so a dead sensor is left out of the fusion, not just
# weighed down.
HARD_DROP = 0.20
FAULT_CLEAN_ALARM = 0.01
FAULT_COVER = 0.99
FAULT_R = 0.05
assert FAULT_R < min(floor for _, floor in WEIGHTINGS.values())
# The weighting's reference r per fusion rule: from this quantile of a modality's r
# on clean validation inputs up it weighs fully, below it by (r / reference) ** power
# (None: no reference, r ** power itself). Chosen by the numbers (BENCHMARKS.md
# section 8, "A reference r for the sum rule"): the audio map tops out low (clean
# validation audio at a median r of 0.59-0.71, clean images at 0.90-0.96), so r ** power
# alone took a clean microphone's vote; the sum rule's clean cost bound its power to
# 1-1.5, where a corrupted half kept its say (official worst held-out regret: joint
# 4.1, MMPareto 9.8). With the reference its validation picks 3-4 and every
# method-split's mean worst regret falls to 0.4-1.6. MLA's entropy rule keeps none: it
# already weighs by confidence, and a reference gave a talking-over voice (r near the
# clean median) back its vote (held-out speakers, one seed: worst regret 1.5 -> 6.0).
REFERENCE_QUANTILES = {"entropy": None, "sum": 0.9, "mean": None}
assert set(REFERENCE_QUANTILES) == set(WEIGHTINGS)


def clean_reference(r_clean: np.ndarray, quantile: Optional[float]) -> float:
    """The reference r of a modality: ``quantile`` of its r on clean inputs, kept in
    (0, 1]; 1 (the weighting is then r ** power) without a quantile or inputs."""
    r = np.asarray(r_clean, np.float64).reshape(-1)
    r = r[np.isfinite(r)]
    if quantile is None or not len(r):
        return 1.0
    return float(np.clip(np.quantile(r, quantile), 1e-3, 1.0))


def default_weighting(rule: str) -> tuple:
    """(power, floor) for a fusion rule: the floor is policy; the power is the
    fallback when a fit has nothing to select it on (see ``Reliability.for_rule``)."""
    try:
        return WEIGHTINGS[rule]
    except KeyError:
        raise ValueError(f"no reliability weighting for fusion rule {rule!r}; known: {', '.join(WEIGHTINGS)}") from None


RELIABILITY_NAME = "reliability.json"  # in a run folder
FORMAT = "edge-mla-reliability/4"  # /2: temperature on perturbed validation, power fitted per rule; /3: the fault gate; /4: the sum rule's reference r


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=-1)
    return m + np.log(np.sum(np.exp(z - m[..., None]), axis=-1))


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The T minimising validation NLL of softmax(z / T) (a 1-D search on log T)."""
    z = np.asarray(z, np.float64)

    def nll(t: float) -> float:
        return float(-np.mean(log_softmax(z / t)[np.arange(len(y)), y]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    lo, hi = best / 1.12, best * 1.12
    for _ in range(30):  # golden-section refinement
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float((lo + hi) / 2)


def fit_gaussian(h: np.ndarray, y: np.ndarray, num_classes: int, shrink: float = 1e-3) -> tuple:
    """Class means (C, D) and the shared precision matrix (D, D)."""
    h = np.asarray(h, np.float64)
    means = np.stack([h[y == c].mean(0) if np.any(y == c) else h.mean(0) for c in range(num_classes)])
    r = h - means[y]
    cov = r.T @ r / max(len(h) - 1, 1)
    d = cov.shape[0]
    # the ridge is relative to the within-class spread; with one training pair per
    # class that spread is 0 (a Singular matrix traceback), and then the ridge is a
    # millionth of the features' total spread (or 1 when every feature is constant)
    ridge = shrink * np.trace(cov) / d
    if not ridge > 0:
        total = float(np.sum((h - h.mean(0)) ** 2) / max(len(h) - 1, 1)) / d
        ridge = 1e-6 * total if total > 0 else 1.0
    cov += ridge * np.eye(d)
    return means, np.linalg.inv(cov)


def min_mahalanobis(h: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min over classes of (h - mu_c)' P (h - mu_c), as the graph computes it:
    h'Ph - 2 h'P mu_c + mu_c'P mu_c."""
    h = np.asarray(h, np.float64)
    hp = h @ precision
    quad = np.sum(hp * h, axis=1, keepdims=True) - 2 * hp @ means.T + np.sum((means @ precision) * means, axis=1)[None]
    return np.maximum(np.min(quad, axis=1), 0.0)


@dataclass
class ModalityReliability:
    """The constants one engine bakes into its graph."""

    temperature: float
    features: tuple  # names from FEATURES, in coefficient order
    coef: list
    bias: float
    means: Optional[np.ndarray] = None  # (C, D), mahalanobis only
    precision: Optional[np.ndarray] = None  # (D, D)
    fault: Optional["FaultGate"] = None  # mahalanobis only; None: no fault the map misses (or an older fit)
    reference: float = 1.0  # r at and above which the modality weighs fully (clean_reference); 1: r ** power itself

    def raw_features(self, h: np.ndarray, z: np.ndarray) -> np.ndarray:
        return feature_matrix(self.features, h, z, self.temperature, self.means, self.precision)

    def logit(self, h: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The map's logit, capped by the fault gate's: r = sigmoid(logit). One
        Sigmoid at the end is what the INT8 refit rescales (export.reliability_int8)."""
        out = self.raw_features(h, z) @ np.asarray(self.coef, np.float64) + self.bias
        if self.fault is not None:
            out = np.minimum(out, self.fault.logit(h, self.precision))
        return out

    def score(self, h: np.ndarray, z: np.ndarray) -> np.ndarray:
        """r in (0, 1), shape (N,)."""
        return 1.0 / (1.0 + np.exp(-self.logit(h, z)))

    def to_dict(self) -> dict:
        d = {"temperature": self.temperature, "features": list(self.features), "coef": [float(c) for c in self.coef], "bias": float(self.bias)}
        if self.means is not None:
            d["means"] = np.asarray(self.means, np.float32).tolist()
            d["precision"] = np.asarray(self.precision, np.float32).tolist()
        if self.fault is not None:
            d["fault"] = self.fault.to_dict()
        if self.reference != 1.0:
            d["reference"] = float(self.reference)
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "ModalityReliability":
        try:
            feats = tuple(d["features"])
            if not feats or any(f not in FEATURES for f in feats):
                raise ValueError(f"features must be among {', '.join(FEATURES)}")
            coef = [float(c) for c in d["coef"]]
            if len(coef) != len(feats):
                raise ValueError("coef and features differ in length")
            t = float(d["temperature"])
            if not TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]:  # 1e-300 divided logits into overflow
                raise ValueError(f"temperature {t:g} is outside {TEMPERATURE_RANGE[0]:g}-{TEMPERATURE_RANGE[1]:g}")
            means = precision = None
            if "mahalanobis" in feats:
                means = np.asarray(d["means"], np.float64)
                precision = np.asarray(d["precision"], np.float64)
                if means.ndim != 2 or precision.shape != (means.shape[1], means.shape[1]):
                    raise ValueError("means/precision have inconsistent shapes")
            vals = coef + [float(d["bias"]), t]
            if not np.all(np.isfinite(vals)) or (means is not None and not (np.all(np.isfinite(means)) and np.all(np.isfinite(precision)))):
                raise ValueError("non-finite constants")
            fault = None
            if d.get("fault") is not None:
                if precision is None:
                    raise ValueError("a fault gate needs the mahalanobis constants")
                fault = FaultGate.from_dict(d["fault"], precision.shape[0])
            reference = d.get("reference", 1.0)
            if isinstance(reference, bool) or not isinstance(reference, (int, float)) or not 0.0 < float(reference) <= 1.0:
                raise ValueError(f"reference {reference!r}: expected a number in (0, 1]")
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeMlaError(f"{where}: corrupt reliability constants ({exc.__class__.__name__}: {exc})") from None
        return cls(t, feats, coef, float(d["bias"]), means, precision, fault, float(reference))


TEMPERATURE_RANGE = (1e-2, 1e2)  # what a fit on validation can give (measured 0.6-3); beyond it a file is corrupt


@dataclass
class FaultGate:
    """Known faults the distance misses: prototypes in the encoder's feature space
    (the mean feature of each such train-family block on validation) and a logistic
    map of the distance to the nearest one, under the Gaussian's precision. The logit
    ``coef * log(1 + d / D) + bias`` rises with the distance (coef > 0), so the gate
    only lowers r near a prototype."""

    means: np.ndarray  # (J, D)
    coef: float
    bias: float
    blocks: tuple = ()  # which train-family blocks became prototypes (the manifest says why)

    def logit(self, h: np.ndarray, precision: np.ndarray) -> np.ndarray:
        d = min_mahalanobis(h, self.means, precision)
        return self.coef * np.log1p(d / self.means.shape[1]) + self.bias

    def to_dict(self) -> dict:
        return {"means": np.asarray(self.means, np.float32).tolist(), "coef": float(self.coef), "bias": float(self.bias), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, d: Mapping, dim: int) -> "FaultGate":
        """Raises ValueError/KeyError/TypeError (ModalityReliability.from_dict turns
        them into one line naming the file)."""
        if not isinstance(d, Mapping):
            raise ValueError("fault: expected an object")
        means = np.asarray(d["means"], np.float64)
        if means.ndim != 2 or not len(means) or means.shape[1] != dim:
            raise ValueError(f"fault means: expected (prototypes, {dim}), got {means.shape}")
        coef, bias = float(d["coef"]), float(d["bias"])
        if not (np.all(np.isfinite(means)) and np.isfinite(coef) and np.isfinite(bias)):
            raise ValueError("non-finite fault constants")
        if not coef > 0:
            raise ValueError(f"fault coef {coef:g}: must be positive (the gate doubts inputs near a fault, not far from it)")
        blocks = d.get("blocks", [])
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise ValueError("fault blocks: expected a list of names")
        return cls(means, coef, bias, tuple(blocks))


def feature_matrix(features: tuple, h: np.ndarray, z: np.ndarray, temperature: float, means=None, precision=None) -> np.ndarray:
    """(N, len(features)) raw feature values."""
    z = np.asarray(z, np.float64) / temperature
    cols = []
    for f in features:
        if f == "msp":
            cols.append(np.exp(np.max(log_softmax(z), axis=1)))
        elif f == "energy":
            cols.append(temperature * logsumexp(z))
        elif f == "mahalanobis":
            cols.append(-np.log1p(min_mahalanobis(h, means, precision) / means.shape[1]))
        else:
            raise ValueError(f"unknown reliability feature {f!r}")
    return np.stack(cols, axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> tuple:
    """Class-balanced logistic regression by Newton's method on standardised
    features; returns (coef, bias) on the raw features."""
    x = np.asarray(x, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    sw = np.where(y == 1, 0.5 / max(np.sum(y == 1), 1), 0.5 / max(np.sum(y == 0), 1)) * len(y)
    w = np.zeros(xs.shape[1])
    reg = l2 * np.eye(xs.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -50, 50)))
        g = xs.T @ (sw * (p - y)) / len(y) + reg @ w
        hess = (xs * (sw * p * (1 - p))[:, None]).T @ xs / len(y) + reg
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    coef = w[:-1] / sd
    bias = w[-1] - float(np.sum(coef * mu))
    return coef, float(bias)


@dataclass
class Reliability:
    """The manifest's / run folder's reliability block: which signal, the
    judged-unreliable threshold, the fusion weighting (power, floor) and per-modality
    constants."""

    signal: str
    threshold: float
    modalities: dict = field(default_factory=dict)  # modality -> ModalityReliability
    auroc: dict = field(default_factory=dict)  # measured figures carried along (optional)
    power: float = WEIGHTINGS["entropy"][0]  # fusion weight multiplier r ** power; 0: a hard gate at floor
    floor: float = WEIGHTINGS["entropy"][1]  # below it a modality is left out of the fusion
    # fusion rule -> {"power": the fitted power, "table": {power: [clean points vs the
    # calibrated plain rule, worst train-family regret]}} on validation (select_power)
    power_fit: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"signal": self.signal, "threshold": self.threshold, "power": self.power, "floor": self.floor,
             "modalities": {m: r.to_dict() for m, r in self.modalities.items()}, "auroc": self.auroc}
        if self.power_fit:
            d["power_fit"] = self.power_fit
        return d

    def for_rule(self, rule: str) -> "Reliability":
        """These constants weighted for fusion ``rule``: its floor, the power fitted
        for it (the rule's fallback power when none was fitted) and the reference r
        that fit measured per modality (1 when the rule has none)."""
        power, floor = default_weighting(rule)
        fit = self.power_fit.get(rule)
        refs: Mapping = {}
        if isinstance(fit, Mapping) and "power" in fit:
            power = _number(fit, "power", power, 0.0, 16.0, f"power_fit[{rule}]")
            refs = fit.get("reference") or {}
        mods = {m: dataclasses.replace(r, reference=float(refs.get(m, 1.0))) for m, r in self.modalities.items()}
        return dataclasses.replace(self, power=power, floor=floor, modalities=mods)

    @property
    def weighting(self) -> dict:
        """Keyword arguments of ``edge_mla.fusion.fuse`` / ``fusion_weights``: the one
        place evaluation, the export gate and the runtime take them from."""
        return {"threshold": self.floor, "power": self.power, "reference": {m: r.reference for m, r in self.modalities.items()}}

    def with_references(self, r_clean: Mapping[str, np.ndarray], quantile: Optional[float]) -> "Reliability":
        """These constants with each modality's reference measured on ``r_clean`` (its
        r on clean inputs; a modality not in it keeps its own): the export measures it
        again on the engine each modality ships, whose r an INT8 refit has moved."""
        mods = {m: dataclasses.replace(r, reference=clean_reference(r_clean[m], quantile)) if m in r_clean else r for m, r in self.modalities.items()}
        return dataclasses.replace(self, modalities=mods)

    def calibrate(self, logits: Mapping[str, np.ndarray]) -> dict:
        """Each modality's logits divided by its fitted temperature: what an engine
        with these constants outputs as its logits (see export.onnx_export). Fusion
        then weighs calibrated uncertainties: an encoder that is over-confident on
        validation data (new speakers, other takes) stops out-voting the other one."""
        return {m: np.asarray(z, np.float32) / np.float32(self.modalities[m].temperature) if m in self.modalities else z for m, z in logits.items()}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "Reliability":
        if not isinstance(d, Mapping) or not isinstance(d.get("modalities"), Mapping) or not d["modalities"]:
            raise EdgeMlaError(f"{where}: corrupt reliability constants (no per-modality block)")
        try:
            thr = float(d.get("threshold", DEFAULT_THRESHOLD))
        except (TypeError, ValueError):
            raise EdgeMlaError(f"{where}: corrupt reliability constants (threshold {d.get('threshold')!r})") from None
        if not 0.0 <= thr <= 1.0:
            raise EdgeMlaError(f"{where}: corrupt reliability constants (threshold {thr} outside [0, 1])")
        # a block without the weighting predates it: the hard gate it was made with
        power = _number(d, "power", 0.0, 0.0, 16.0, where)
        floor = _number(d, "floor", thr, 0.0, 1.0, where)
        bad = [m for m in d["modalities"] if not m.isidentifier()]
        if bad:
            raise EdgeMlaError(f"{where}: corrupt reliability constants (modality names must be identifiers such as 'audio'; got {bad[0]!r})")
        mods = {m: ModalityReliability.from_dict(v, f"{where} [{m}]") for m, v in d["modalities"].items()}
        fit = d.get("power_fit", {})
        if not isinstance(fit, Mapping) or not all(isinstance(v, Mapping) for v in fit.values()):
            raise EdgeMlaError(f"{where}: corrupt reliability constants (power_fit: expected an object per fusion rule)")
        for rule, v in fit.items():
            if not rule.isidentifier():
                raise EdgeMlaError(f"{where}: corrupt reliability constants (power_fit: {rule!r} is no fusion rule)")
            _number(v, "power", 0.0, 0.0, 16.0, f"{where} [power_fit {rule}]")
            refs = v.get("reference", {})
            if not isinstance(refs, Mapping) or not all(m.isidentifier() for m in refs):
                raise EdgeMlaError(f"{where} [power_fit {rule}]: corrupt reliability constants (reference: expected an object per modality)")
            for m in refs:
                _number(refs, m, 1.0, 1e-6, 1.0, f"{where} [power_fit {rule} reference]")
        auroc = d.get("auroc", {})
        if not isinstance(auroc, Mapping):
            raise EdgeMlaError(f"{where}: corrupt reliability constants (auroc: expected an object, got {type(auroc).__name__})")
        return cls(str(d.get("signal", "?")), thr, mods, dict(auroc), power, floor, {str(k): dict(v) for k, v in fit.items()})


def _number(d: Mapping, key: str, default: float, lo: float, hi: float, where: str) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise EdgeMlaError(f"{where}: corrupt reliability constants ({key} {v!r}: expected a number in [{lo:g}, {hi:g}])")
    return float(v)


@dataclass
class FitData:
    """What fitting one modality needs: clean training features/labels (Gaussian),
    clean validation logits/labels (temperature), validation features and logits
    under the train corruption families (logistic map; ``bad_h``/``bad_z`` hold the
    validation inputs once per family, in turn, len(val_y) rows each, which is how
    ``reliability_fit.select_power`` pairs them with the other modality's).

    ``aug_z``: the same validation inputs (so the same labels, ``val_y``) drawn
    through the run's training perturbation (level and voice, audio only), or None
    (the image; a run trained without the perturbation; the clean-only fit). When
    present the temperature is fitted on clean and perturbed validation together:
    calibrated on the validation recordings alone, the audio temperature fits that
    split's one voice, and on held-out speakers it leaves the test voice's ECE worse
    than no temperature at all (0.08 against 0.05 raw, BENCHMARKS.md section 8)."""

    train_h: np.ndarray
    train_y: np.ndarray
    val_h: np.ndarray
    val_z: np.ndarray
    val_y: np.ndarray
    bad_h: np.ndarray
    bad_z: np.ndarray
    aug_z: Optional[np.ndarray] = None
    bad_names: tuple = ()  # the corruption behind each block of bad_h, in order (e.g. "audio_silence@3")
    aug_h: Optional[np.ndarray] = None  # features of the validation inputs drawn through the run's training perturbation (or None)

    def clean_features(self) -> np.ndarray:
        """What the fault gate must not doubt: clean validation features and, when the
        run was trained with a perturbation, the same inputs perturbed that way (a
        voice 20 dB quieter is one the encoder was taught to read, not a dead
        microphone; held-out speakers are recorded 14-22 dB quieter than the
        validation one)."""
        return self.val_h if self.aug_h is None else np.concatenate([self.val_h, self.aug_h])

    def calibration_set(self) -> tuple:
        """(logits, labels) the temperature is fitted on."""
        if self.aug_z is None:
            return self.val_z, self.val_y
        return np.concatenate([self.val_z, self.aug_z]), np.concatenate([self.val_y, self.val_y])


def fit_modality(data: FitData, candidate: str, num_classes: int, pre: Optional[dict] = None) -> ModalityReliability:
    """One modality's constants for ``candidate`` (a key of CANDIDATES). ``pre``
    caches the temperature and Gaussian between candidates."""
    if candidate not in CANDIDATES:
        raise ValueError(f"unknown reliability signal {candidate!r}; choose one of {', '.join(CANDIDATES)}")
    pre = pre if pre is not None else {}
    if "t" not in pre:
        pre["t"] = fit_temperature(*data.calibration_set())
    feats = CANDIDATES[candidate]
    means = precision = None
    if "mahalanobis" in feats:
        if "gauss" not in pre:
            pre["gauss"] = fit_gaussian(data.train_h, data.train_y, num_classes)
        means, precision = pre["gauss"]
    t = pre["t"]
    good = feature_matrix(feats, data.val_h, data.val_z, t, means, precision)
    bad = feature_matrix(feats, data.bad_h, data.bad_z, t, means, precision)
    coef, bias = fit_logistic(np.vstack([good, bad]), np.r_[np.ones(len(good)), np.zeros(len(bad))])
    rel = ModalityReliability(t, feats, list(coef), bias, means, precision)
    if precision is not None:
        rel.fault = fit_fault_gate(data, rel)
    return rel


def fit_fault_gate(data: FitData, rel: ModalityReliability, threshold: float = DEFAULT_THRESHOLD,
                   hard_drop: float = HARD_DROP, clean_alarm: float = FAULT_CLEAN_ALARM) -> Optional[FaultGate]:
    """The fault gate for ``rel`` (its map already fitted), or None when every
    train-family block that costs the encoder more than ``hard_drop`` of its clean
    validation accuracy is already judged unreliable (r < ``threshold``) on most of
    its inputs.

    Each block the map misses becomes a prototype: its mean feature
    (``gate_from_blocks``, against clean validation and its perturbed copy,
    ``FitData.clean_features``). The gate doubts at most ``clean_alarm`` of those
    clean inputs, because the distance already judges everything else and the gate
    must not take a quiet but readable voice's weight; far from every prototype it is
    inert: far from a known fault it knows nothing."""
    n = len(data.val_y)
    if n == 0 or len(data.bad_h) % n or len(data.bad_h) == 0:
        return None
    clean_acc = float(np.mean(np.argmax(data.val_z, 1) == data.val_y))
    picked, names = [], []
    for i in range(len(data.bad_h) // n):
        rows = slice(i * n, (i + 1) * n)
        drop = clean_acc - float(np.mean(np.argmax(data.bad_z[rows], 1) == data.val_y))
        missed = float(np.mean(rel.score(data.bad_h[rows], data.bad_z[rows]) >= threshold))
        if drop > hard_drop and missed > 0.5:
            picked.append(rows)
            names.append(data.bad_names[i] if i < len(data.bad_names) else f"block {i}")
    if not picked:
        return None
    return gate_from_blocks(data.clean_features(), [data.bad_h[rows] for rows in picked], rel.precision, names, clean_alarm)


def gate_from_blocks(clean_h: np.ndarray, blocks_h: list, precision: np.ndarray, names: list, clean_alarm: float = FAULT_CLEAN_ALARM,
                     cover: float = FAULT_COVER, fault_r: float = FAULT_R) -> Optional[FaultGate]:
    """A FaultGate with one prototype per block (its mean feature), or None when no
    block is separable from ``clean_h``. With g = log(1 + d / D), d the distance to
    the nearest prototype, the gate's logit is 0 (r = 0.5) at the g below which
    ``clean_alarm`` of the clean inputs lie, and logit(``fault_r``) at the g within
    which ``cover`` of every kept block lies: two quantiles, not a fitted slope,
    because the clean side's edge (quiet voices near a dead microphone's point) and
    the fault's tight core are what the gate must keep apart, and a logistic fit on
    the bulk of both left a dead microphone at r 0.41-0.47, weighed down but still
    voting. A block whose own ``cover`` quantile reaches its clean ``clean_alarm``
    quantile (a spread-out perturbation such as speech 20 dB down, which clean
    quiet voices overlap) is no prototype. Shared by the FP32 fit and the INT8
    engine's refit on its own features (export.reliability_int8)."""
    blocks_h = [np.asarray(b, np.float64) for b in blocks_h]
    dim = blocks_h[0].shape[1]

    def g(h: np.ndarray, means: np.ndarray) -> np.ndarray:
        return np.log1p(min_mahalanobis(h, means, precision) / dim)

    keep = [j for j, b in enumerate(blocks_h)
            if np.quantile(g(b, b.mean(0, keepdims=True)), cover) < np.quantile(g(clean_h, b.mean(0, keepdims=True)), clean_alarm)]
    if not keep:
        log.info("fault gate for %s not kept: no block separable from clean inputs", ", ".join(names))
        return None
    means = np.stack([blocks_h[j].mean(0) for j in keep])
    edge = float(np.quantile(g(clean_h, means), clean_alarm))
    inner = max(float(np.quantile(g(blocks_h[j], means), cover)) for j in keep)
    if not inner < edge:
        log.info("fault gate for %s not kept: its blocks reach the clean inputs", ", ".join(names))
        return None
    coef = float(np.log((1 - fault_r) / fault_r)) / (edge - inner)
    bias = -coef * edge
    log.debug("fault gate: %s (coef %.3g, bias %.3g)", ", ".join(names[j] for j in keep), coef, bias)
    return FaultGate(means, coef, bias, tuple(names[j] for j in keep))


# -- metrics --------------------------------------------------------------------------
def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a clean input > score of a corrupted one), ties counted half."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks over ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((np.sum(ranks[: len(pos)]) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _binned_ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of ``correct`` (draws, N) against one confidence vector (N,)."""
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi] bins, as ece() draws them
    n = max(len(conf), 1)  # no rows: an ECE of 0, as before
    conf_sum = np.bincount(b, weights=conf, minlength=bins)
    corr_sum = np.stack([np.bincount(b, weights=row, minlength=bins) for row in np.atleast_2d(correct)])
    return np.sum(np.abs(corr_sum - conf_sum[None]), axis=1) / n


def _confidence(logits: np.ndarray, labels: np.ndarray, temperature: float) -> tuple:
    """(max softmax(logits / T), 1.0 where its class is the label else 0.0)."""
    p = np.exp(log_softmax(np.asarray(logits, np.float64) / temperature))
    return p.max(1), (p.argmax(1) == labels).astype(np.float64)


def ece(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bins: int = 15) -> float:
    """Expected calibration error of softmax(logits / T), equal-width confidence bins."""
    return float(_binned_ece(*_confidence(logits, labels, temperature), bins)[0])


def ece_floor(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, groups: Optional[np.ndarray] = None,
              bins: int = 15, draws: int = 400, seed: int = 0) -> dict:
    """What the measured ECE can tell apart from sampling noise (consistency resampling).

    A perfectly calibrated encoder with these confidences would still score an ECE
    above 0: each input's correctness is a coin with P(correct) = its confidence.
    This draws those coins ``draws`` times and returns the median and 90th
    percentile of the ECE they give (``floor``, ``floor_p90``) and ``p``, the share
    of draws at or above the observed ECE (small: the miscalibration is real; large:
    the figure is noise). ``groups`` names the distinct input behind each row: rows
    that share one (the same recording paired with several images) share one coin,
    so the floor reflects how many distinct inputs were measured, not how many rows.
    FSDD's test splits hold 300 (official) and 500 (held-out speaker) recordings,
    where the floor is 0.02-0.04 for a confident audio encoder and 0.05-0.07 for a
    less confident one (BENCHMARKS.md section 8): about the size of the 0.03 target."""
    conf, correct = _confidence(logits, labels, temperature)
    observed = float(_binned_ece(conf, correct, bins)[0])
    if groups is None:
        groups = np.arange(len(conf))
    if len(groups) != len(conf):
        raise ValueError(f"groups has {len(groups)} entries for {len(conf)} rows")
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    distinct = int(inv.max()) + 1 if len(inv) else 0
    u = np.random.default_rng(seed).random((draws, distinct))
    sims = _binned_ece(conf, (u[:, inv] < conf[None]).astype(np.float64), bins)
    return {"ece": observed, "floor": float(np.median(sims)), "floor_p90": float(np.percentile(sims, 90)),
            "p": float(np.mean(sims >= observed - 1e-12)), "distinct": distinct}
