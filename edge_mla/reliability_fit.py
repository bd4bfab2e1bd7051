"""Fitting reliability constants for a trained model (post hoc, needs torch).

The Gaussian comes from clean training features, the temperature from clean and
perturbed validation logits, the logistic map from clean validation vs the *train*
corruption families on validation, and the fusion power per rule from the same
validation inputs (``select_power``). Held-out families are never touched here.
The result is cached as ``RUN/reliability.json`` (every candidate), which
``edge-mla eval`` and ``edge-mla export`` share.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import read_json
from edge_mla.reliability import (CANDIDATES, DEFAULT_SIGNAL, DEFAULT_THRESHOLD, FORMAT, POWER_CLEAN_TOLERANCE, POWERS, REFERENCE_QUANTILES, RELIABILITY_NAME,
                                  FitData, Reliability, clean_reference, default_weighting, fit_modality)

if TYPE_CHECKING:
    from edge_mla.data.augment import AudioAugment

log = logging.getLogger(__name__)


FIT_TRAIN_PAIRS = 4000  # clean training pairs for the Gaussian
FIT_VAL_PAIRS = 2000  # validation pairs for the temperature and the logistic map


def _stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n >= len(labels):
        return np.arange(len(labels))
    from edge_mla.calib.select import stratified_indices

    return np.sort(stratified_indices(labels, n, seed))


def fit_val_indices(labels: np.ndarray, seed: int, n: int = FIT_VAL_PAIRS) -> np.ndarray:
    """The validation pairs the maps are fitted on (the export refits the INT8
    engine's map on the same ones)."""
    return _stratified(labels, n, seed + 1)


def fit_data(model, ds, seed: int = 0, train_limit: int = FIT_TRAIN_PAIRS, val_limit: int = FIT_VAL_PAIRS,
             augment: Optional[AudioAugment] = None, temperature_on_augmented: bool = True) -> dict:
    """modality -> FitData from a PairedDataset.

    ``augment`` (the AudioAugment the run was trained with) perturbs the training
    audio the Gaussian is fitted on: the encoder was taught that another level,
    speed or offset is the same digit, so "the training distribution" a clean input
    is measured against includes them. Fitted on centred clips at their recorded
    level, the Gaussian called a quieter new voice far from home (BENCHMARKS.md
    section 8) although the encoder reads it well.

    ``temperature_on_augmented`` (the default) also draws the validation audio
    through ``augment`` and fits the temperature on clean and perturbed validation
    together (``FitData.calibration_set``): fitted on the validation recordings
    alone, the audio temperature fits that split's one voice, and on held-out
    speakers it left the audio ECE at 0.08 (0.05 with this; BENCHMARKS.md section 8,
    "Fitted weighting"). False is the fit before it, kept for comparison."""
    from edge_mla.corruptions import suite
    from edge_mla.evaluate import collect

    train = ds.train.subset(_stratified(ds.train.labels, train_limit, seed))
    val = ds.val.subset(fit_val_indices(ds.val.labels, seed, val_limit))
    th, _, ty = collect(model, train, ds.window, seed=seed, augment=augment)
    vh, vz, vy = collect(model, val, ds.window)
    aug_z: dict = {}
    aug_h: dict = {}
    if augment is not None and "audio" in vz:  # the perturbation is the microphone's: the image stays clean
        ah, az, _ = collect(model, val, ds.window, seed=seed + 50, augment=augment, modalities=["audio"])
        aug_h["audio"] = ah["audio"]  # clean to the fault gate in any case: a quiet voice is not a dead microphone
        if temperature_on_augmented:
            aug_z["audio"] = az["audio"]
    bad_h: dict = {m: [] for m in vh}
    bad_z: dict = {m: [] for m in vh}
    names: dict = {m: [] for m in vh}
    for i, c in enumerate(suite(held_out=False, modalities=tuple(vh))):
        ch, cz, _ = collect(model, val, ds.window, corrupt=c, seed=seed + 100 + i, modalities=[c.modality], sample_rate=ds.sample_rate)
        bad_h[c.modality].append(ch[c.modality])
        bad_z[c.modality].append(cz[c.modality])
        names[c.modality].append(c.name)
    return {m: FitData(th[m], ty, vh[m], vz[m], vy, np.concatenate(bad_h[m]), np.concatenate(bad_z[m]), aug_z.get(m), tuple(names[m]), aug_h.get(m)) for m in vh}


def fit_candidates(data: dict, num_classes: int, rule: str, candidates=tuple(CANDIDATES), threshold: float = DEFAULT_THRESHOLD) -> dict:
    """candidate -> Reliability, sharing the temperature and Gaussian per modality;
    each carries a power fitted for every fusion rule (``select_power``) and is
    weighted for ``rule`` (the fusion rule of the run's method)."""
    from edge_mla.fusion import FUSION_RULES

    pre = {m: {} for m in data}
    out = {}
    for c in candidates:
        rel = Reliability(c, threshold, {m: fit_modality(d, c, num_classes, pre[m]) for m, d in data.items()})
        rel.power_fit = {r: select_power(data, rel, r) for r in FUSION_RULES}
        out[c] = rel.for_rule(rule)
    return out


def with_reference_quantile(data: dict, rel: Reliability, rule: str, quantile: Optional[float]) -> Reliability:
    """``rel`` refitted with every rule's reference at ``quantile`` of each
    modality's clean validation r (None: no reference) instead of the rule's own
    (``REFERENCE_QUANTILES``), the power selected again under it, weighted for
    ``rule``: how the bench scores the other quantiles from one fit."""
    from edge_mla.fusion import FUSION_RULES

    out = dataclasses.replace(rel, power_fit={r: select_power(data, rel, r, quantile=quantile) for r in FUSION_RULES})
    return out.for_rule(rule)


def _corrupted_validation(data: dict) -> list:
    """(modality, rows of its ``bad_h``/``bad_z``) per train corruption family:
    ``FitData.bad_z`` holds the validation inputs once per family, in order, so each
    block of len(val_y) rows pairs with the other modalities' clean validation rows."""
    n = len(next(iter(data.values())).val_y)
    if n == 0 or any(len(d.val_y) != n for d in data.values()):
        return []
    return [(m, slice(i * n, (i + 1) * n)) for m, d in data.items() if len(d.bad_z) % n == 0 for i in range(len(d.bad_z) // n)]


_RULES_OWN = "rule's own"  # select_power's default quantile: REFERENCE_QUANTILES[rule]


def select_power(data: dict, rel: Reliability, rule: str, powers=POWERS, tolerance: float = POWER_CLEAN_TOLERANCE, quantile=_RULES_OWN) -> dict:
    """The power for fusion ``rule`` that validation alone picks: among those whose
    clean fused accuracy is within ``tolerance`` points of the calibrated plain
    rule's, the lowest worst regret over the train corruption families (regret: points
    by which fused falls short of the better single modality); ties go to the lower
    power. Returns {"power", "table": {power: [clean points, worst regret]}} and,
    when the rule weighs against a reference r (``REFERENCE_QUANTILES``, or
    ``quantile``), "reference": {modality: that quantile of its clean validation r},
    under which the powers were scored.

    Why fitted: the power is the counterweight to the temperature. Where calibration
    already softens an input the detector doubts (a new voice), a steep power
    penalises it twice; where the encoder stays confident on a corrupted input (a
    smeared camera), only a steep power takes its weight away. Which of the two a run
    needs shows on its own validation pairs, so no held-out family is used."""
    from edge_mla.evaluate import accuracy, regret
    from edge_mla.fusion import fuse

    mods = list(data)
    clean_r = {m: rel.modalities[m].score(data[m].val_h, data[m].val_z) for m in mods}
    q = REFERENCE_QUANTILES[rule] if quantile == _RULES_OWN else quantile
    reference = {m: clean_reference(clean_r[m], q) for m in mods}
    cases = _corrupted_validation(data)
    if not cases:
        return {"power": default_weighting(rule)[0], "table": {}, **({"reference": reference} if q is not None else {})}
    y = data[mods[0]].val_y
    floor = default_weighting(rule)[1]
    clean_z = {m: data[m].val_z for m in mods}
    clean_c = rel.calibrate(clean_z)

    def acc(calibrated: dict, r: Optional[dict], power: float) -> float:
        return accuracy(fuse(calibrated, rule, reliability=r, threshold=floor, power=power, reference=reference)[0], y)

    plain = acc(clean_c, None, 0.0)
    scored = []  # (calibrated logits, reliability, single-modality accuracies) per corrupted case, computed once for every power
    for m, rows in cases:
        z = {**clean_z, m: data[m].bad_z[rows]}
        r = {**clean_r, m: rel.modalities[m].score(data[m].bad_h[rows], z[m])}
        scored.append((rel.calibrate(z), r, {k: accuracy(z[k], y) for k in mods}))
    table = {}
    for p in powers:
        worst = max(regret(single, acc(zc, r, p)) for zc, r, single in scored)
        table[f"{p:g}"] = [round(100 * (acc(clean_c, clean_r, p) - plain), 4), round(worst, 4)]
    ok = [p for p in powers if table[f"{p:g}"][0] >= -tolerance] or [max(powers, key=lambda p: table[f"{p:g}"][0])]
    pick = min(ok, key=lambda p: (table[f"{p:g}"][1], p))
    log.debug("rule %s: power %g picked on validation %s (reference %s)", rule, pick, table, reference)
    out = {"power": float(pick), "table": table}
    if q is not None:
        out["reference"] = reference
    return out


def _describe(data) -> str:
    if not isinstance(data, dict):
        return repr(data)
    return f"{data.get('dataset')} {data.get('data') or ''} split {data.get('split')} seed {data.get('seed')}".replace("  ", " ")


def fitted_on(ds, seed: int) -> dict:
    """Which data constants were fitted on, as reliability.json records it: an export
    or eval with --dataset/--data-dir fitted on other data, and the cache then served
    those constants to every later eval and export of the run without a word."""
    info = ds.info or {}
    where = info.get("data_dir") or info.get("root") or info.get("path")
    return {"dataset": ds.name, "data": os.path.realpath(where) if where else None, "split": info.get("split"), "seed": int(seed),
            "pairs": [len(ds.train), len(ds.val)]}


def save(run_dir: Path, fitted: dict, data: Optional[dict] = None) -> Path:
    path = Path(run_dir) / RELIABILITY_NAME
    from edge_mla.staging import replace_file

    text = json.dumps({"format": FORMAT, "fitted_on": data, "candidates": {c: r.to_dict() for c, r in fitted.items()}}) + "\n"
    replace_file(path, lambda tmp: tmp.write_text(text), "the fitted reliability constants")  # a fixed temp name was written through a link
    return path


def load(run_dir: Path, signal: str, rule: str, data: Optional[dict] = None) -> Optional[Reliability]:
    """The cached constants for ``signal`` weighted for ``rule`` (the power fitted
    for it, its floor), or None when the run has none yet, another edge-mla
    version fitted them, or they were fitted on other data than ``data`` (a
    ``fitted_on`` record; a file from before the record is taken as it is): the
    caller refits."""
    path = Path(run_dir) / RELIABILITY_NAME
    if path.exists() and not path.is_file():
        raise EdgeMlaError(f"{path}: is not a file; delete it and the next eval or export refits it")
    if not path.is_file():
        return None
    try:
        d = read_json(path)
    except EdgeMlaError as exc:
        raise EdgeMlaError(f"{exc}; delete it and the next eval or export refits it") from None
    if isinstance(d, dict) and isinstance(d.get("format"), str) and d["format"].startswith("edge-mla-reliability/") and d["format"] != FORMAT:
        log.info("%s was fitted by another edge-mla version (%s; this one reads %s); refitting", path, d["format"], FORMAT)
        return None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise EdgeMlaError(f"{path}: not an edge-mla reliability file (expected format {FORMAT})")
    if data is not None and d.get("fitted_on") is not None and d["fitted_on"] != data:
        log.info("%s was fitted on other data (%s); refitting on %s", path, _describe(d["fitted_on"]), _describe(data))
        return None
    candidates = d.get("candidates", {})
    if not isinstance(candidates, dict):
        raise EdgeMlaError(f"{path}: corrupt reliability constants (candidates: expected an object, got {type(candidates).__name__}); "
                           "delete it and the next eval or export refits it")
    block = candidates.get(signal)
    if block is None:
        return None
    return Reliability.from_dict(block, str(path)).for_rule(rule)


def _check_fits_model(path: Path, rel: Reliability, model, num_classes: int) -> None:
    """A cached file's constants are this model's: one block per modality it has, and
    class means of its feature size. Why: the file is run-folder input, and constants
    copied from another run (other classes, another feature size, another modality)
    were used as they were (a matmul traceback, or figures for a model not evaluated)."""
    want = set(model.modalities)
    if set(rel.modalities) != want:
        raise EdgeMlaError(f"{path}: holds constants for {', '.join(sorted(rel.modalities)) or 'no modality'}, but the model has {', '.join(sorted(want))}; "
                           "delete it and the next eval or export refits it")
    dim = model.cfg.dim
    for m, mr in rel.modalities.items():
        if mr.means is not None and tuple(mr.means.shape) != (num_classes, dim):
            raise EdgeMlaError(f"{path}: the {m} class means are {tuple(mr.means.shape)}, but the model has {num_classes} classes of {dim} features; "
                               "delete it and the next eval or export refits it")


def load_or_fit(run_dir, model, payload: dict, ds, rule: str, signal: str = DEFAULT_SIGNAL, refit: bool = False, seed: int = 0) -> Reliability:
    """The run's reliability constants for ``signal``, weighted for fusion ``rule``,
    fitting (and caching) every candidate when the run has none or ``refit``, on
    training audio drawn as the checkpoint ``payload`` says the run was trained
    (see ``fit_data``)."""
    if signal not in CANDIDATES:
        raise EdgeMlaError(f"--signal {signal!r}: choose one of {', '.join(CANDIDATES)}")
    data = fitted_on(ds, seed)
    rel = None if refit else load(Path(run_dir), signal, rule, data)
    if rel is not None:
        _check_fits_model(Path(run_dir) / RELIABILITY_NAME, rel, model, len(ds.classes))
    if rel is None:
        log.info("fitting reliability constants (%s) on the validation split", ", ".join(CANDIDATES))
        from edge_mla.checkpoint import CHECKPOINT_NAME
        from edge_mla.train.config import TrainConfig

        augment = TrainConfig.audio_augment_of(payload, str(Path(run_dir) / CHECKPOINT_NAME))
        fitted = fit_candidates(fit_data(model, ds, seed, augment=augment), len(ds.classes), rule)
        save(Path(run_dir), fitted, data)
        rel = fitted[signal]
    return rel
