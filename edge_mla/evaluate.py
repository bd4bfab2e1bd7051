"""Accuracy of a trained model: each modality alone, fused (entropy, mean, sum), with
one modality missing or corrupted, and (with reliability constants) the corruption
suite of ``edge_mla.corruptions``. Fusion goes through edge_mla.fusion, the same code
the runtime runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from edge_mla.data.pairs import PairedSplit, iterate_batches
from edge_mla.errors import EdgeMlaError
from edge_mla.fusion import fuse

if TYPE_CHECKING:
    from edge_mla.data.augment import AudioAugment

CORRUPTIONS = ("image_black", "audio_silence", "audio_noise")


def _legacy_corrupt(case: Optional[str], img: np.ndarray, aud: np.ndarray, rng: np.random.Generator) -> tuple:
    if case == "image_black":
        img = np.zeros_like(img)
    elif case == "audio_silence":
        aud = np.zeros_like(aud)
    elif case == "audio_noise":
        aud = rng.normal(0.0, 0.1, aud.shape).astype(np.float32)
    return img, aud


def collect(model, split: PairedSplit, window: int, batch_size: int = 256, corrupt=None, seed: int = 0, modalities: Optional[list] = None,
            sample_rate: int = 8000, augment: Optional[AudioAugment] = None) -> tuple[dict, dict, np.ndarray]:
    """(features h per modality (N, D), logits z per modality (N, C), labels).

    ``corrupt``: one of CORRUPTIONS (the three legacy cases) or an
    ``edge_mla.corruptions.Corruption``; ``modalities`` limits which encoders run;
    ``augment`` (an AudioAugment, seeded by ``seed``) perturbs the audio as training did.
    The model runs on its own device (a GPU while training there); the arrays
    returned are always host numpy."""
    import torch

    from edge_mla.train.device import module_device

    device = module_device(model)

    rng = np.random.default_rng(seed)
    mods = list(modalities or model.modalities)
    feats: dict = {m: [] for m in mods}
    outs: dict = {m: [] for m in mods}
    labels = []
    model.eval()
    with torch.no_grad():
        aug_rng = np.random.default_rng([seed, 2]) if augment is not None else None
        for img, aud, y in iterate_batches(split, batch_size, window, rng=aug_rng, augment=augment):
            if isinstance(corrupt, str) or corrupt is None:
                img, aud = _legacy_corrupt(corrupt, img, aud, rng)
            elif corrupt.modality == "image":
                img = corrupt.apply(img, rng, sample_rate)
            else:
                aud = corrupt.apply(aud, rng, sample_rate)
            inputs = {"image": img, "audio": aud}
            for m in mods:
                h = model.embed(m, torch.from_numpy(np.ascontiguousarray(inputs[m])).to(device))
                feats[m].append(h.cpu().numpy())
                outs[m].append(model.head_logits(m, h).cpu().numpy())
            labels.append(y)
    return {m: np.concatenate(v) for m, v in feats.items()}, {m: np.concatenate(v) for m, v in outs.items()}, np.concatenate(labels)


def collect_logits(model, split: PairedSplit, window: int, batch_size: int = 256, corrupt: Optional[str] = None, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Per-modality logits (N, C) over a split, optionally with a corrupted input."""
    _, z, y = collect(model, split, window, batch_size, corrupt, seed)
    return z, y


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else float("nan")


def fused_accuracy(logits: dict, labels: np.ndarray, rule: str, drop: Optional[str] = None) -> tuple[float, dict]:
    n = len(labels)
    available = {m: np.full(n, m != drop) for m in logits}
    z, w = fuse(logits, rule, available)
    return accuracy(z, labels), {m: float(np.mean(v)) for m, v in w.items()}


@dataclass
class SuiteData:
    """Clean features/logits and, per corruption, the corrupted modality's features
    and logits: everything the suite's figures are computed from, so several
    reliability candidates can be scored on one set of encoder passes."""

    labels: np.ndarray
    clean_h: dict
    clean_z: dict
    corrupted: dict = field(default_factory=dict)  # name -> (Corruption, h, z)
    groups: dict = field(default_factory=dict)  # modality -> (N,) id of the distinct input behind each row (ECE noise floor)


def collect_suite(model, split: PairedSplit, window: int, sample_rate: int, corruptions: list, batch_size: int = 256, seed: int = 0) -> SuiteData:
    h, z, y = collect(model, split, window, batch_size)
    data = SuiteData(y, h, z, groups={"image": split.image_index, "audio": split.clip_index})
    for i, c in enumerate(corruptions):
        if c.modality not in z:
            continue
        ch, cz, _ = collect(model, split, window, batch_size, corrupt=c, seed=seed + 1000 + i, modalities=[c.modality], sample_rate=sample_rate)
        data.corrupted[c.name] = (c, ch[c.modality], cz[c.modality])
    return data


def regret(single: dict, fused: float) -> float:
    """Points by which the ``fused`` accuracy falls short of the better single
    modality's (accuracies in ``single``); 0 when fusion is at least as good."""
    return max(0.0, 100 * (max(single.values()) - fused))


def score_suite(data: SuiteData, rule: str, rel=None) -> dict:
    """The suite's figures for fusion ``rule`` with (``rel``: a Reliability) or
    without reliability. With ``rel``, ``fused``/``regret`` are what an engine folder
    exported with those constants decides: the rule on temperature-calibrated logits,
    gated by reliability; ``fused_base``/``regret_base`` are the plain rule on raw
    logits (before this), and the clean ``fused_calibrated`` is calibration alone."""
    from edge_mla.reliability import HARD_DROP, auroc, ece, ece_floor

    y = data.labels
    mods = list(data.clean_z)
    weighting = rel.weighting if rel is not None else {}
    r_clean = {m: rel.modalities[m].score(data.clean_h[m], data.clean_z[m]) for m in mods if m in rel.modalities} if rel is not None else None

    def fused_acc(z: dict, r: Optional[dict], calibrated: bool = True) -> tuple[float, float]:
        from edge_mla.fusion import reliable_mask

        if rel is not None and calibrated:
            z = rel.calibrate(z)
        f, _ = fuse(z, rule, reliability=r, **(weighting if r is not None else {}))
        abstain = float(np.mean(reliable_mask(list(z), len(y), None, r, weighting["threshold"])[1])) if r is not None else 0.0
        return accuracy(f, y), abstain

    out: dict = {"rule": rule, "signal": rel.signal if rel is not None else None, "threshold": rel.threshold if rel is not None else None,
                 "power": rel.power if rel is not None else None, "floor": rel.floor if rel is not None else None}
    clean = {m: accuracy(data.clean_z[m], y) for m in mods}
    out["clean"] = {**clean, "fused_base": fused_acc(data.clean_z, None, calibrated=False)[0]}
    out["clean"]["fused"], out["clean"]["abstain"] = fused_acc(data.clean_z, r_clean) if rel is not None else (out["clean"]["fused_base"], 0.0)
    if rel is not None:
        out["clean"]["fused_calibrated"] = fused_acc(data.clean_z, None)[0]
    if rel is not None:
        out["ece"] = {}
        for m in mods:
            if m in rel.modalities:
                t = rel.modalities[m].temperature
                fl = ece_floor(data.clean_z[m], y, t, data.groups.get(m))
                out["ece"][m] = {"raw": ece(data.clean_z[m], y), "calibrated": fl["ece"], "temperature": t,
                                 "floor": fl["floor"], "floor_p90": fl["floor_p90"], "p": fl["p"], "distinct": fl["distinct"]}
    rows: dict = {}
    scores: dict = {}  # modality -> {"held_out"/"train"/"held_out_hard": [r arrays]}
    for name, (c, ch, cz) in data.corrupted.items():
        z = dict(data.clean_z)
        z[c.modality] = cz
        single = {m: accuracy(z[m], y) for m in mods}
        base, _ = fused_acc(z, None, calibrated=False)
        row = {"modality": c.modality, "held_out": c.held_out, "severity": c.severity, **single}
        if rel is not None and c.modality in rel.modalities:
            r = dict(r_clean)
            r[c.modality] = rel.modalities[c.modality].score(ch, cz)
            row["fused"], row["abstain"] = fused_acc(z, r)
            row["auroc"] = auroc(r_clean[c.modality], r[c.modality])
            row["unreliable"] = float(np.mean(r[c.modality] < rel.threshold))  # judged unreliable (the degraded state)
            kinds = ["held_out" if c.held_out else "train"]
            if c.held_out and clean[c.modality] - single[c.modality] > HARD_DROP:
                kinds.append("held_out_hard")
            for k in kinds:
                scores.setdefault(c.modality, {}).setdefault(k, []).append(r[c.modality])
        else:
            row["fused"] = base
        row["fused_base"] = base
        row["regret"] = regret(single, row["fused"])
        row["regret_base"] = regret(single, base)
        rows[name] = row
    out["corruptions"] = rows
    summary = {}
    for part in ("held_out", "train"):
        names = [n for n, r in rows.items() if r["held_out"] == (part == "held_out")]
        sel = [rows[n] for n in names]
        if sel:
            summary[part] = {
                "mean_regret": float(np.mean([r["regret"] for r in sel])), "worst_regret": float(np.max([r["regret"] for r in sel])),
                "worst": max(names, key=lambda n: rows[n]["regret"]),
                "mean_regret_base": float(np.mean([r["regret_base"] for r in sel])), "worst_regret_base": float(np.max([r["regret_base"] for r in sel])),
            }
    out["summary"] = summary
    if rel is not None:
        out["auroc"] = {m: {k: auroc(r_clean[m], np.concatenate(v)) for k, v in parts.items()} for m, parts in scores.items()}
    return out


def evaluate(model, split: PairedSplit, window: int, batch_size: int = 256, full: bool = True, corrupt: bool = True, reliability=None, rule: str = "entropy", sample_rate: int = 8000, seed: int = 0) -> dict:
    """The metrics `edge-mla eval --json` prints. ``full=False`` (per-epoch
    validation) gives accuracies and fusion only; ``corrupt=False`` keeps the
    missing-modality cases but skips the corrupted-input passes. With
    ``reliability`` (a Reliability) and ``corrupt``, the corruption suite runs
    with fusion ``rule`` (the training method's) gated by reliability."""
    logits, y = collect_logits(model, split, window, batch_size)
    res: dict = {"n": int(len(y))}
    for m in logits:
        res[m] = accuracy(logits[m], y)
    res["fused"], w = fused_accuracy(logits, y, "entropy")
    res["fused_mean"], _ = fused_accuracy(logits, y, "mean")
    res["fused_sum"], _ = fused_accuracy(logits, y, "sum")
    res["weights"] = {"clean": w}
    if not full or len(logits) < 2:
        return res
    for m in logits:
        res[f"{m}_missing"], _ = fused_accuracy(logits, y, "entropy", drop=m)
    for case in CORRUPTIONS if corrupt else ():
        if case.split("_")[0] not in logits:
            continue
        c_logits, _ = collect_logits(model, split, window, batch_size, corrupt=case)
        res[case], res["weights"][case] = fused_accuracy(c_logits, y, "entropy")
        res[f"{case}_mean"], _ = fused_accuracy(c_logits, y, "mean")
    if corrupt and reliability is not None:
        from edge_mla.corruptions import suite

        data = collect_suite(model, split, window, sample_rate, suite(modalities=tuple(logits)), batch_size, seed)
        s = score_suite(data, rule, reliability)
        res["rule"] = rule
        res["fused_reliable"] = s["clean"]["fused"]
        res["fused_calibrated"] = s["clean"]["fused_calibrated"]
        res["fused_rule"] = s["clean"]["fused_base"]
        res["reliability"] = {"signal": s["signal"], "threshold": s["threshold"], "power": s["power"], "floor": s["floor"], "auroc": s["auroc"],
                              "clean_abstain": s["clean"]["abstain"],
                              # modality -> the r from which it weighs fully (1: r ** power itself; the sum rule's: a quantile of its clean validation r)
                              "reference": {m: r.reference for m, r in reliability.modalities.items()},
                              # modality -> the train-family blocks its fault gate stands on (none: the distance sees them all)
                              "fault_gate": {m: list(r.fault.blocks) for m, r in reliability.modalities.items() if r.fault is not None}}
        res["ece"] = s["ece"]
        res["corruptions"] = s["corruptions"]
        res["corruption_summary"] = s["summary"]
    return res


def evaluate_run(run_dir: str, data_dir: Optional[str] = None, split_name: str = "test", corrupt: bool = True, signal: Optional[str] = None, refit: bool = False, limit: int = 0, suite: bool = False) -> dict:
    """The eval figures of a run folder; ``suite`` adds the corruption suite with
    reliability weighting (fits RUN_DIR/reliability.json when missing)."""
    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data.registry import load_for_model
    from edge_mla.manifest import load_run_config
    from edge_mla.reliability import DEFAULT_SIGNAL
    from edge_mla.reliability_fit import load_or_fit
    from edge_mla.train.config import fusion_rule_of

    if limit < 0:
        raise EdgeMlaError(f"--limit must be >= 0 (got {limit})")
    from edge_mla.reliability import CANDIDATES

    if signal is not None and signal not in CANDIDATES:  # checked even when --no-corrupt leaves it unused
        raise EdgeMlaError(f"--signal {signal!r}: choose one of {', '.join(CANDIDATES)}")
    conf = load_run_config(run_dir)
    name = conf.need_dataset(" (which data should the run be scored on?)")
    model, payload = load_checkpoint(run_dir)
    ds = load_for_model({"dataset": name, "data_dir": data_dir or conf.data_dir, "seed": conf.seed, "split": conf.split}, model.cfg, payload.get("classes"))
    split = ds.split(split_name)
    if len(split) == 0:
        raise EdgeMlaError(f"dataset {ds.name}: the {split_name} split has no pairs; nothing to score")
    if limit and limit < len(split):
        from edge_mla.calib.select import stratified_indices

        split = split.subset(np.sort(stratified_indices(split.labels, limit, conf.seed)))
    rule = fusion_rule_of(payload.get("method"))
    rel = None
    if suite and corrupt and len(model.modalities) > 1:
        rel = load_or_fit(run_dir, model, payload, ds, rule, signal or DEFAULT_SIGNAL, refit, conf.seed)
    res = evaluate(model, split, ds.window, corrupt=corrupt, reliability=rel, rule=rule, sample_rate=ds.sample_rate, seed=conf.seed)
    res.update({"split": split_name, "method": payload.get("method"), "epoch": payload.get("epoch"), "dataset": ds.name})
    return res
