"""``export_run(ExportConfig)``: a trained run folder -> an engine folder.

Steps, per modality: ONNX export (FP32) -> ONNX Runtime pre-processing -> parity
against PyTorch -> (INT8) calibration + QDQ quantization + TensorRT calibration
cache -> the gate (validation accuracy per engine and fused, batch-1 single-thread
latency) -> the precision each engine ships with -> metadata, manifest, report ->
(optionally) TensorRT plans or build_engines.sh.

Everything is written into a temporary folder beside the target and renamed into
place at the end, so a failure never leaves a half-written engine folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edge_mla import __version__
from edge_mla.errors import EdgeMlaError
from edge_mla.export import ort_eval
from edge_mla.staging import staged_folder
from edge_mla.validate import not_over_inputs, numbers, writable_location

log = logging.getLogger(__name__)

INT8_MODES = ("off", "on", "auto")
# The INT8 engine's reliability map: refit on its own outputs (export.reliability_int8)
# or the FP32 constants as they are (for comparison; the level drifts).
INT8_RELIABILITY = ("refit", "fp32")
# An INT8 engine must put clean validation inputs on the same side of the reliability
# gate as its FP32 twin this often, or the gate flags it (and --int8 auto keeps FP32).
RELIABILITY_GATE_AGREEMENT = 0.95
ENGINES = ("onnx", "trt")


# Every numeric option and its valid range (edge_mla.validate.number's keywords).
NUMERIC = {
    "calib_size": dict(lo=1, hi=1_000_000, integer=True),
    "tolerance": dict(lo=0, hi=100),
    "opset": dict(lo=13, hi=30, integer=True),
    "eval_limit": dict(lo=0, integer=True),
    "parity_samples": dict(lo=1, integer=True),
    "parity_atol": dict(lo=0, lo_open=True),
    "latency_repeats": dict(lo=1, integer=True),
    "latency_warmup": dict(lo=0, integer=True),
    "calib_batch": dict(lo=1, integer=True),
    "max_batch": dict(lo=1, hi=65536, integer=True),
    "workspace_mb": dict(lo=1, integer=True),
    "dla_core": dict(lo=0, hi=15, integer=True, optional=True),
    "trt_cache_version": dict(lo=1, integer=True),
}


@dataclass
class ExportConfig:
    """Everything ``edge-mla export`` can be told; the CLI maps its flags 1:1."""

    run_dir: Path
    out: Optional[Path] = None  # default RUN_DIR/engines
    int8: str = "off"  # off | on | auto
    calib_method: str = "percentile"  # measured best on avmnist (benchmarks/export.md)
    calib_size: int = 300
    calib_data: Optional[Path] = None  # folder dataset or .npz instead of the run's training split
    engine: str = "onnx"  # onnx | trt
    modalities: Optional[list] = None  # default: all the model has
    tolerance: float = 1.0  # accuracy points INT8 may lose before it is flagged
    force: bool = False
    dataset: Optional[str] = None  # override config.json
    data_dir: Optional[str] = None
    reduce_range: str = "auto"  # auto (7-bit weights where the CPU lacks VNNI), on, off
    activations: str = "auto"  # auto (symmetric for --engine trt, else asymmetric), symmetric, asymmetric
    opset: int = 18
    exporter: str = "auto"  # dynamo, torchscript, auto
    eval_limit: int = 0  # validation pairs for the gate (0: all)
    parity_samples: int = 64
    parity_atol: float = 1e-3  # FP32 ONNX vs PyTorch, relative to the logit range
    latency_repeats: int = 200
    latency_warmup: int = 20
    calib_batch: int = 32
    max_batch: int = 8  # TensorRT optimisation profile
    workspace_mb: int = 1024
    dla_core: Optional[int] = None
    trt_cache_version: int = 8601
    reliability: str = "auto"  # auto (the default signal), off, or a signal name (edge_mla.reliability.CANDIDATES)
    int8_reliability: str = "refit"  # one of INT8_RELIABILITY
    progress: bool = True

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.out = Path(self.out) if self.out else self.run_dir / "engines"
        if self.calib_data is not None:
            self.calib_data = Path(self.calib_data)
        if self.int8 not in INT8_MODES:
            raise EdgeMlaError(f"--int8 {self.int8!r}: choose one of {', '.join(INT8_MODES)}")
        from edge_mla.export.quantize import CALIB_METHODS

        if self.calib_method not in CALIB_METHODS:
            raise EdgeMlaError(f"--calib-method {self.calib_method!r}: choose one of {', '.join(CALIB_METHODS)}")
        if self.reduce_range not in ("auto", "on", "off"):
            raise EdgeMlaError(f"--reduce-range {self.reduce_range!r}: choose auto, on or off")
        if self.activations not in ("auto", "symmetric", "asymmetric"):
            raise EdgeMlaError(f"--int8-activations {self.activations!r}: choose auto, symmetric or asymmetric")
        if self.engine == "trt" and self.activations == "asymmetric":
            raise EdgeMlaError("--int8-activations asymmetric cannot be used with --engine trt: TensorRT needs symmetric INT8 (zero point 0)")
        if self.engine not in ENGINES:
            raise EdgeMlaError(f"--engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        numbers(self, NUMERIC)
        from edge_mla.reliability import CANDIDATES

        if self.reliability not in ("auto", "off", *CANDIDATES):
            raise EdgeMlaError(f"--reliability {self.reliability!r}: choose auto, off or one of {', '.join(CANDIDATES)}")
        if self.int8_reliability not in INT8_RELIABILITY:
            raise EdgeMlaError(f"--int8-reliability {self.int8_reliability!r}: choose one of {', '.join(INT8_RELIABILITY)}")


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    gate: dict
    chosen: dict  # modality -> precision
    table: str  # the summary, plain text
    warnings: list = field(default_factory=list)


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="export", unit="step", disable=not enabled, leave=False)
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, *_a): ...
            def set_description_str(self, *_a): ...
            def close(self): ...

        return _Null()


NOISY_LOGGERS = ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx", "torch.export", "torch._export")


class _DropLibraryChatter(logging.Filter):
    """ORT's quantization logs its advice through the root logger; keep errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_libraries():
    """Exporter and quantizer libraries log pages at INFO; the export logs its own
    steps instead. Restored afterwards."""
    saved = {}
    for name in NOISY_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.ERROR)
    flt = _DropLibraryChatter()
    logging.getLogger().addFilter(flt)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(flt)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _check_out(cfg: ExportConfig) -> None:
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise EdgeMlaError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not cfg.force:
        raise EdgeMlaError(f"--out {out}: folder exists and is not empty; pass --force to replace it")
    writable_location(out, "--out")
    not_over_inputs(out, {"the run folder": cfg.run_dir, "--calib-data": cfg.calib_data})


def _pick_modalities(cfg: ExportConfig, model) -> list:
    have = list(model.modalities)
    if not cfg.modalities:
        return have
    unknown = [m for m in cfg.modalities if m not in have]
    if unknown:
        raise EdgeMlaError(f"--modalities: unknown modality {', '.join(map(repr, unknown))}; this model has {', '.join(have)}")
    return list(dict.fromkeys(cfg.modalities))


def _inputs(split, idx: np.ndarray, modality: str, window: int) -> np.ndarray:
    return split.image_batch(idx).astype(np.float32) if modality == "image" else split.audio_batch(idx, window)


def _torch_logits(model, modality: str, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            outs.append(model.logits(modality, torch.from_numpy(np.ascontiguousarray(x[s : s + batch]))).numpy())
    return np.concatenate(outs).astype(np.float32)


def _set_metadata(path: Path, facts: dict) -> None:
    """The manifest's facts as ``metadata_props`` (json strings), so a lone .onnx
    file still says what it is."""
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in facts.items():
        p = m.metadata_props.add()
        p.key = f"edge_mla.{k}"
        p.value = v if isinstance(v, str) else json.dumps(v)
    m.producer_name = "edge-mla"
    m.producer_version = __version__
    onnx.save_model(m, str(path), save_as_external_data=False)


def export_run(cfg: ExportConfig) -> ExportResult:
    """Export ``cfg.run_dir`` into ``cfg.out``; see the module docstring."""
    from edge_mla.checkpoint import load_checkpoint
    from edge_mla.data.registry import data_folder_of, load_for_model
    from edge_mla.export.rundata import dataset_spec

    run_dir = cfg.run_dir
    if not run_dir.is_dir():
        raise EdgeMlaError(f"{run_dir}: run folder not found")
    _check_out(cfg)
    spec = dataset_spec(run_dir, cfg.dataset, cfg.data_dir)  # config.json checked before the checkpoint loads
    not_over_inputs(cfg.out, {"the data folder": data_folder_of(spec["dataset"], spec["data_dir"])})
    model, payload = load_checkpoint(run_dir)
    modalities = _pick_modalities(cfg, model)
    mcfg = model.cfg
    calib = None
    if cfg.int8 != "off" and cfg.calib_data is not None:  # checked before the (slower) dataset load
        from edge_mla.calib import sources

        calib = sources.from_path(cfg.calib_data, modalities, mcfg, cfg.calib_size, spec["seed"])
    log.info("loading %s data (seed %d) for parity, calibration and the gate", spec["dataset"], spec["seed"])
    ds = load_for_model(spec, mcfg, payload.get("classes"))
    if len(ds.val) == 0:
        raise EdgeMlaError(f"dataset {spec['dataset']}: the validation split is empty; the gate needs it")
    if cfg.int8 != "off" and calib is None:
        from edge_mla.calib import sources

        calib = sources.from_split(ds.train, modalities, mcfg.window, cfg.calib_size, spec["seed"], source=f"{spec['dataset']} training split")
    if calib is not None:
        log.info("calibration set: %d samples from %s (%s)", calib.size(modalities[0]), calib.source, cfg.calib_method)
    rel = None
    if cfg.reliability != "off":
        from edge_mla.reliability import DEFAULT_SIGNAL
        from edge_mla.reliability_fit import load_or_fit
        from edge_mla.train.config import fusion_rule_of

        rel = load_or_fit(run_dir, model, payload, ds, fusion_rule_of(payload.get("method")),
                          DEFAULT_SIGNAL if cfg.reliability == "auto" else cfg.reliability, seed=spec["seed"])

    with staged_folder(cfg.out) as tmp, _quiet_libraries():
        result = _export_into(cfg, tmp, model, payload, modalities, ds, spec, calib, rel)
    result.out = cfg.out
    log.info("engines written to %s", cfg.out)
    return result


@dataclass
class _Plan:
    """What every step of one export shares: the inputs, the validation samples the
    gate and parity use, and the INT8 settings resolved once."""

    cfg: ExportConfig
    tmp: Path  # the staging folder everything is written into
    model: object
    payload: dict
    modalities: list
    ds: object
    spec: dict
    calib: object
    rel: object  # edge_mla.reliability.Reliability, or None (--reliability off)
    rule: str  # the training method's fusion rule
    n_eval: int
    eval_idx: np.ndarray  # validation pairs of the gate
    labels: np.ndarray
    par_idx: np.ndarray  # validation pairs of the parity checks
    do_int8: bool
    reduce_range: bool
    symmetric: bool
    warnings: list = field(default_factory=list)


@dataclass
class _Fp32:
    """Step 1's output for one modality: the FP32 engine and what later steps reuse."""

    path: Path
    info: object  # onnx_export's ExportInfo
    mrel: object  # the modality's reliability constants, or None
    xp: np.ndarray  # parity inputs
    ref: np.ndarray  # PyTorch's logits on them
    session: object
    parity: object
    rel_parity: Optional[float]


def _plan(cfg: ExportConfig, tmp: Path, model, payload: dict, modalities: list, ds, spec: dict, calib, rel) -> _Plan:
    """Resolve the settings every step needs (and log the INT8 weight range once)."""
    from edge_mla.calib.select import stratified_indices
    from edge_mla.export.quantize import resolve_reduce_range
    from edge_mla.train.config import fusion_rule_of

    val = ds.val
    n_eval = len(val) if cfg.eval_limit <= 0 else min(cfg.eval_limit, len(val))
    eval_idx = stratified_indices(val.labels, n_eval, spec["seed"]) if n_eval < len(val) else np.arange(len(val))
    par_idx = stratified_indices(val.labels, min(cfg.parity_samples, len(val)), spec["seed"] + 1)
    do_int8 = cfg.int8 != "off"
    reduce_range = resolve_reduce_range(cfg.reduce_range) if do_int8 else False
    if do_int8 and cfg.reduce_range == "auto":
        log.info("INT8 weights: %s", "7-bit (reduce_range: this CPU has no VNNI, full 8-bit saturates int16 accumulation)" if reduce_range else "8-bit")
    symmetric = cfg.activations == "symmetric" or (cfg.activations == "auto" and cfg.engine == "trt")
    return _Plan(cfg, tmp, model, payload, modalities, ds, spec, calib, rel, fusion_rule_of(payload.get("method")), int(n_eval), eval_idx, val.labels[eval_idx], par_idx, do_int8, reduce_range, symmetric)


def _export_into(cfg: ExportConfig, tmp: Path, model, payload: dict, modalities: list, ds, spec: dict, calib, rel=None) -> ExportResult:
    """Steps 1-6 of the module docstring, written into ``tmp``."""
    p = _plan(cfg, tmp, model, payload, modalities, ds, spec, calib, rel)
    bar = _progress(len(modalities) * (4 if p.do_int8 else 3), cfg.progress)
    engines: dict = {}
    gate: dict = {"split": "val", "samples": p.n_eval, "tolerance_points": cfg.tolerance, "engines": {}, "fused": {}}
    logits: dict = {"fp32": {}, "int8": {}}  # precision -> modality -> validation logits
    rel_out: dict = {"fp32": {}, "int8": {}}  # precision -> modality -> reliability on clean / corrupted inputs
    try:
        for mod in modalities:
            engines[mod] = _export_modality(p, mod, gate, logits, rel_out, bar)
    finally:
        bar.close()
    chosen = _choose_precisions(p, gate)
    _measure_references(p, rel_out, chosen)
    _fused_gate(p, gate, logits, rel_out, chosen)
    model_info, classes = _stamp_engines(p, engines, chosen)
    manifest = _manifest(p, engines, model_info, classes, gate)
    if cfg.engine == "trt":
        manifest["tensorrt"] = _tensorrt_step(cfg, tmp, engines, p.warnings)
    return _write_outputs(p, manifest, gate, chosen)


def _export_modality(p: _Plan, mod: str, gate: dict, logits: dict, rel_out: dict, bar) -> dict:
    """Steps 1-3 for one modality: its manifest entry (variants with their gate figures)."""
    fp = _fp32_step(p, mod, bar)
    entry = _entry(p, mod, fp)
    variants = {"fp32": {"file": fp.path.name, "format": "onnx", "precision": "fp32", "exporter": fp.info.exporter, "opset": fp.info.opset, "parity": fp.parity.to_dict()}}
    sessions = {"fp32": fp.session}
    if p.do_int8:
        variants["int8"], sessions["int8"] = _int8_step(p, mod, fp, bar)
    g = _gate_step(p, mod, fp.mrel, variants, sessions, logits, rel_out, bar)
    gate["engines"][mod] = g
    bar.update()
    for prec in variants:
        variants[prec].update({"accuracy": g[prec]["accuracy"], "latency_ms": g[prec]["latency"]["median_ms"]})
        if g[prec]["flags"]:
            variants[prec]["flags"] = g[prec]["flags"]
    entry["variants"] = variants
    return entry


def _fp32_step(p: _Plan, mod: str, bar) -> _Fp32:
    """1. FP32: export, ORT pre-processing (the graph INT8 and TensorRT's cache refer
    to), parity against PyTorch (logits, and the reliability output)."""
    from edge_mla.export.onnx_export import export_modality
    from edge_mla.export.quantize import preprocess

    cfg, tmp = p.cfg, p.tmp
    bar.set_description_str(f"{mod}: ONNX export")
    raw = tmp / f"{mod}.raw.onnx"
    mrel = p.rel.modalities.get(mod) if p.rel is not None else None
    info = export_modality(p.model, mod, raw, cfg.opset, cfg.exporter, reliability=mrel)
    fp32 = tmp / f"{mod}.fp32.onnx"
    preprocess(raw, fp32)
    raw.unlink()
    bar.update()

    bar.set_description_str(f"{mod}: parity")
    xp = _inputs(p.ds.val, p.par_idx, mod, p.model.cfg.window)
    ref = _torch_logits(p.model, mod, xp)
    if mrel is not None:
        ref = ref / np.float32(mrel.temperature)  # the engine's logits are calibrated (export.onnx_export)
    s32 = ort_eval.session(fp32, threads=0)
    par32 = ort_eval.parity(ref, ort_eval.run_logits(s32, xp))
    scale = max(1.0, float(np.max(np.abs(ref))))
    log.info("%s fp32 parity vs PyTorch on %d samples: max |diff| %.2e, top-1 agreement %.1f%%", mod, par32.samples, par32.max_abs_diff, 100 * par32.top1_agreement)
    if par32.max_abs_diff > cfg.parity_atol * scale or par32.top1_agreement < 1.0:
        raise EdgeMlaError(f"{mod}: the FP32 ONNX engine disagrees with PyTorch (max |diff| {par32.max_abs_diff:.3g}, top-1 agreement {100 * par32.top1_agreement:.1f}%); not writing engines")
    rel_parity = None
    if mrel is not None:
        rel_parity = _reliability_parity(p.model, mod, mrel, s32, xp)
        log.info("%s fp32 reliability vs the numpy reference: max |diff| %.2e", mod, rel_parity)
        if rel_parity > RELIABILITY_ATOL:
            raise EdgeMlaError(f"{mod}: the engine's reliability output disagrees with the reference (max |diff| {rel_parity:.3g} > {RELIABILITY_ATOL}); not writing engines. "
                               "The fitted distance is ill-conditioned for this model (too little or too uniform training data?); "
                               "--reliability msp (or off) exports without it")
    bar.update()
    return _Fp32(fp32, info, mrel, xp, ref, s32, par32, rel_parity)


def _entry(p: _Plan, mod: str, fp: _Fp32) -> dict:
    """The manifest entry's tensors and the input facts the runtime preprocesses by."""
    info, mcfg = fp.info, p.model.cfg
    entry = {
        "input": {"name": info.input_name, "shape": info.input_shape, "dtype": "float32"},
        "output": {"name": info.output_name, "shape": info.output_shape, "dtype": "float32"},
    }
    if info.reliability_name:
        entry["reliability_output"] = {"name": info.reliability_name, "shape": ["batch"], "dtype": "float32", "range": [0.0, 1.0], "parity_max_abs_diff": fp.rel_parity}
    if mod == "image":
        entry["image"] = {"size": mcfg.image_size, "colour": "grey", "range": [0.0, 1.0], "layout": "NCHW"}
    else:
        entry["audio"] = {"sample_rate": mcfg.sample_rate, "window": mcfg.window, "dtype": "float32", "range": [-1.0, 1.0], "frontend": "log-mel inside the engine"}
    return entry


def _int8_step(p: _Plan, mod: str, fp: _Fp32, bar) -> tuple:
    """2. INT8: calibrate + quantize, TensorRT cache from the same scales, parity.
    Returns (the int8 variant, its session)."""
    from edge_mla.calib.readers import ArrayCalibrationReader
    from edge_mla.calib.trt_cache import write_trt_cache
    from edge_mla.export.quantize import quantize_int8

    cfg, tmp, calib, symmetric = p.cfg, p.tmp, p.calib, p.symmetric
    bar.set_description_str(f"{mod}: INT8 calibration ({cfg.calib_method})")
    q = tmp / f"{mod}.int8.onnx"
    reader = ArrayCalibrationReader(fp.info.input_name, calib.inputs[mod], cfg.calib_batch)
    qres = quantize_int8(fp.path, q, reader, cfg.calib_method, p.reduce_range, symmetric_activations=symmetric)
    cache = tmp / f"{mod}.calib.cache"
    write_trt_cache(cache, qres.trt_scales, cfg.trt_cache_version)
    recal = None
    if fp.mrel is not None and cfg.int8_reliability == "refit":
        bar.set_description_str(f"{mod}: INT8 reliability map")
        recal = _refit_int8_reliability(p, mod, fp, q)
    s8 = ort_eval.session(q, threads=0)
    par8 = ort_eval.parity(fp.ref, ort_eval.run_logits(s8, fp.xp))
    log.info("%s int8 vs PyTorch: max |diff| %.3g, top-1 agreement %.1f%% (%d QDQ nodes, %d float nodes kept)", mod, par8.max_abs_diff, 100 * par8.top1_agreement, qres.qdq_nodes, len(qres.excluded_nodes))
    variant = {
        "file": q.name, "format": "onnx", "precision": "int8", "quant_format": "QDQ", "activations": "int8 symmetric per-tensor" if symmetric else "uint8 asymmetric per-tensor (ONNX Runtime CPU; not for TensorRT)",
        "symmetric_activations": symmetric,
        "weights": "int8 symmetric per-channel" + (" (7-bit range)" if p.reduce_range else ""), "reduce_range": p.reduce_range, "calibration": {"method": cfg.calib_method, "samples": calib.size(mod), "source": calib.source},
        "calib_cache": cache.name, "float_nodes": qres.excluded_nodes, "parity": par8.to_dict(),
    }
    if recal is not None:
        variant["reliability_map"] = recal
    bar.update()
    return variant, s8


def _refit_int8_reliability(p: _Plan, mod: str, fp: _Fp32, q: Path) -> Optional[dict]:
    """2b. Platt-refit the INT8 engine's reliability map on its own outputs: the
    validation pairs the FP32 map was fitted on, clean against the train corruption
    families (export.reliability_int8)."""
    from edge_mla.corruptions import suite
    from edge_mla.export.reliability_int8 import recalibrate, refit_fault_gate
    from edge_mla.reliability_fit import fit_val_indices

    idx = fit_val_indices(p.ds.val.labels, p.spec["seed"])
    x = _inputs(p.ds.val, idx, mod, p.model.cfg.window)
    rng = np.random.default_rng(p.spec["seed"] + 100)
    families = suite(held_out=False, modalities=(mod,))
    bad = [c.apply(x, rng, p.ds.sample_rate) for c in families]
    gate = None
    if fp.mrel.fault is not None:  # first the gate's prototypes, then the level of the map
        gate = refit_fault_gate(q, fp.mrel, _gate_clean_inputs(p, mod, idx, x), {c.name: b for c, b in zip(families, bad)})
    rec = recalibrate(q, fp.info.reliability_name, x, bad, p.rel.threshold)
    if rec is not None:
        rec["fitted_on"] = "validation: clean vs the train corruption families"
        if gate is not None:
            rec["fault_gate"] = gate
    return rec


def _gate_clean_inputs(p: _Plan, mod: str, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What the INT8 fault gate must not doubt, as for the FP32 one
    (``FitData.clean_features``): the clean validation inputs ``x`` (rows ``idx`` of the
    validation split) and, for audio of a run trained with a perturbation, the same
    inputs perturbed that way."""
    from edge_mla.checkpoint import CHECKPOINT_NAME
    from edge_mla.train.config import TrainConfig

    augment = TrainConfig.audio_augment_of(p.payload, str(p.cfg.run_dir / CHECKPOINT_NAME)) if mod == "audio" else None
    if augment is None:
        return x
    return np.concatenate([x, p.ds.val.audio_batch(idx, p.model.cfg.window, np.random.default_rng([p.spec["seed"], 50]), augment)])


def _gate_step(p: _Plan, mod: str, mrel, variants: dict, sessions: dict, logits: dict, rel_out: dict, bar) -> dict:
    """3. The gate: validation accuracy and batch-1, single-thread latency per
    precision (fills ``logits`` and ``rel_out`` for the fused figures)."""
    bar.set_description_str(f"{mod}: accuracy + latency")
    xv = _inputs(p.ds.val, p.eval_idx, mod, p.model.cfg.window)
    g: dict = {}
    for prec, sess in sessions.items():
        outs = ort_eval.run_outputs(sess, xv)
        lg = outs[0]
        logits[prec][mod] = lg
        if mrel is not None:
            rel_out[prec][mod] = _corruption_reliability(sess, xv, outs[1], mod, p.ds.sample_rate, p.spec["seed"])
        g[prec] = {"accuracy": float(np.mean(lg.argmax(1) == p.labels)), "size_bytes": (p.tmp / variants[prec]["file"]).stat().st_size, "flags": []}
    single = {prec: ort_eval.session(p.tmp / variants[prec]["file"], threads=1) for prec in sessions}
    lats = ort_eval.interleaved_latency(list(single.values()), xv[:1], p.cfg.latency_repeats, p.cfg.latency_warmup)
    for prec, lat in zip(single, lats):
        g[prec]["latency"] = lat.to_dict()
    if p.do_int8:
        _flag_int8(p, mod, mrel, g, rel_out)
    return g


def _flag_int8(p: _Plan, mod: str, mrel, g: dict, rel_out: dict) -> None:
    """The INT8 engine against its FP32 twin: accuracy drop, speed-up and (with a
    reliability output) agreement of the reliability gate; each failure is a flag."""
    drop = 100 * (g["fp32"]["accuracy"] - g["int8"]["accuracy"])
    speed = g["fp32"]["latency"]["median_ms"] / g["int8"]["latency"]["median_ms"]
    g["int8"]["accuracy_drop_points"] = drop
    g["int8"]["speedup"] = speed
    if drop > p.cfg.tolerance:
        g["int8"]["flags"].append(f"loses {drop:.2f} points (> {p.cfg.tolerance:g})")
    if speed < 1.0:
        g["int8"]["flags"].append(f"slower than fp32 ({speed:.2f}x)")
    if mrel is not None:
        # the second output is part of the engine: an INT8 engine whose
        # reliability gate disagrees with FP32 on clean inputs would report a
        # healthy sensor degraded (or the reverse), so the gate guards it too
        thr = p.rel.threshold
        r32, r8 = rel_out["fp32"][mod]["clean"], rel_out["int8"][mod]["clean"]
        agree = float(np.mean((r32 >= thr) == (r8 >= thr)))
        g["int8"]["reliability_gate_agreement"] = agree
        g["int8"]["reliability_mean_abs_diff"] = float(np.mean(np.abs(r32 - r8)))
        if agree < RELIABILITY_GATE_AGREEMENT:
            g["int8"]["flags"].append(f"reliability gate disagrees with fp32 on {100 * (1 - agree):.1f}% of clean inputs (> {100 * (1 - RELIABILITY_GATE_AGREEMENT):.0f}%)")


def _choose_precisions(p: _Plan, gate: dict) -> dict:
    """4. Which precision each engine ships with (--int8 off / on / auto)."""
    chosen: dict = {}
    for mod in p.modalities:
        g = gate["engines"][mod]
        if not p.do_int8:
            chosen[mod] = "fp32"
        elif p.cfg.int8 == "on":
            chosen[mod] = "int8"
            for f in g["int8"]["flags"]:
                msg = f"{mod} int8 {f}; shipping it anyway (--int8 on; --int8 auto would keep fp32)"
                p.warnings.append(msg)
                log.warning(msg)
        else:
            chosen[mod] = "fp32" if g["int8"]["flags"] else "int8"
            if g["int8"]["flags"]:
                log.info("%s: keeping fp32 (int8 %s)", mod, "; ".join(g["int8"]["flags"]))
    return chosen


def _measure_references(p: _Plan, rel_out: dict, chosen: dict) -> None:
    """4a. A rule that weighs against a reference r (``REFERENCE_QUANTILES``: the sum
    rule) gets it measured again on the engine each modality ships, on the gate's
    clean validation inputs: an INT8 refit moves r, and the run's fit measured it on
    PyTorch features. The manifest's ``power_fit`` keeps the fit's figures."""
    from edge_mla.reliability import REFERENCE_QUANTILES

    q = REFERENCE_QUANTILES.get(p.rule)
    if p.rel is None or q is None:
        return
    shipped = {m: rel_out[chosen[m]][m]["clean"] for m in p.modalities if m in rel_out.get(chosen[m], {})}
    p.rel = p.rel.with_references(shipped, q)


def _fused_gate(p: _Plan, gate: dict, logits: dict, rel_out: dict, chosen: dict) -> None:
    """4b. Fused accuracy per precision (and with the reliability weighting), and of the
    engines actually shipped; a fused loss beyond the tolerance is a warning."""
    from edge_mla.fusion import fuse

    rule, labels, modalities = p.rule, p.labels, p.modalities
    gate["rule"] = rule
    for prec in ("fp32", "int8"):
        if len(logits[prec]) == len(modalities):
            fused, _ = fuse(logits[prec], rule)
            gate["fused"][prec] = float(np.mean(fused.argmax(1) == labels))
            if len(rel_out[prec]) == len(modalities):
                fused, _ = fuse(logits[prec], rule, reliability={m: v["clean"] for m, v in rel_out[prec].items()}, **p.rel.weighting)
                gate.setdefault("fused_reliable", {})[prec] = float(np.mean(fused.argmax(1) == labels))
    if rel_out["fp32"]:
        gate["reliability_auroc"] = {prec: {m: v["auroc"] for m, v in r.items()} for prec, r in rel_out.items() if r}
    if p.do_int8:
        mix = {m: logits[chosen[m]][m] for m in modalities}
        fused, _ = fuse(mix, rule)
        gate["fused"]["chosen"] = float(np.mean(fused.argmax(1) == labels))
        gate["fused_drop_points"] = 100 * (gate["fused"]["fp32"] - gate["fused"]["int8"])
        chosen_drop = 100 * (gate["fused"]["fp32"] - gate["fused"]["chosen"])
        if chosen_drop > p.cfg.tolerance:
            msg = f"fused accuracy with the shipped engines is {chosen_drop:.2f} points below all-fp32 (> {p.cfg.tolerance:g})"
            p.warnings.append(msg)
            log.warning(msg)


def _stamp_engines(p: _Plan, engines: dict, chosen: dict) -> tuple:
    """5. Metadata into every ONNX file, then hashes and sizes; each entry names the
    chosen variant as its default file. Returns (model facts, classes)."""
    from edge_mla.checkpoint import CHECKPOINT_NAME, file_sha256
    from edge_mla.manifest import FORMAT, sha256_of

    cfg, tmp, model, payload = p.cfg, p.tmp, p.model, p.payload
    model_info = {
        "preset": model.cfg.preset, "method": payload.get("method"), "head": model.cfg.head, "run_dir": str(cfg.run_dir.resolve()),
        "checkpoint_sha256": file_sha256(cfg.run_dir / CHECKPOINT_NAME), "epoch": payload.get("epoch"),
    }
    classes = list(payload.get("classes") or p.ds.classes)
    for mod in p.modalities:
        e = engines[mod]
        for prec, v in e["variants"].items():
            facts = {
                "format": FORMAT, "version": __version__, "modality": mod, "precision": prec, "classes": classes,
                "input": e["input"], "output": e["output"], "fusion": {"rule": p.rule}, "model": model_info,
            }
            for k in ("image", "audio"):
                if k in e:
                    facts[k] = e[k]
            _set_metadata(tmp / v["file"], facts)
            v["sha256"] = sha256_of(tmp / v["file"])
            v["size_bytes"] = (tmp / v["file"]).stat().st_size
            if prec == "int8":
                v["calib_cache_sha256"] = sha256_of(tmp / v["calib_cache"])
        pick = e["variants"][chosen[mod]]
        engines[mod] = {"file": pick["file"], "precision": chosen[mod], "sha256": pick["sha256"], "format": "onnx", **e}
    return model_info, classes


def _manifest(p: _Plan, engines: dict, model_info: dict, classes: list, gate: dict) -> dict:
    """The manifest.json content (written, after step 6, by ``_write_outputs``)."""
    from edge_mla.manifest import FORMAT

    cfg, spec, do_int8 = p.cfg, p.spec, p.do_int8
    return {
        "format": FORMAT,
        "edge_mla_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model_info,
        "classes": classes,
        "fusion": _fusion_block(p.rule, p.payload.get("method"), p.rel, gate),
        "engines": engines,
        "data": {"dataset": spec["dataset"], "split": spec["split"], "seed": spec["seed"], "gate_split": "val", "gate_samples": p.n_eval},
        "int8": {
            "mode": cfg.int8, "calib_method": cfg.calib_method if do_int8 else None, "calib_size": cfg.calib_size if do_int8 else None,
            "tolerance_points": cfg.tolerance, "reduce_range": p.reduce_range, "symmetric_activations": p.symmetric if do_int8 else None,
        },
        "gate": {"fused": gate["fused"]},
    }


def _write_outputs(p: _Plan, manifest: dict, gate: dict, chosen: dict) -> ExportResult:
    """manifest.json (checked against the schema the readers use), report.json, report.md."""
    from edge_mla.export.report import markdown_table, summary_rows, text_table
    from edge_mla.manifest import write_manifest

    cfg, tmp, warnings = p.cfg, p.tmp, p.warnings
    rows = summary_rows(gate, chosen)
    table = text_table(rows)
    write_manifest(tmp, manifest)
    (tmp / "report.json").write_text(json.dumps({"config": _config_dict(cfg), "gate": gate, "chosen": chosen, "warnings": warnings}, indent=2) + "\n")
    (tmp / "report.md").write_text(f"# Export of {cfg.run_dir}\n\n{markdown_table(rows)}\n" + "".join(f"\n- warning: {w}" for w in warnings) + "\n")
    return ExportResult(cfg.out, manifest, gate, chosen, table, warnings)


RELIABILITY_ATOL = 1e-3  # FP32 engine vs the float64 numpy reference, on r in (0, 1)
EXPORT_CORRUPTIONS_SEVERITY = 3  # the export's AUROC check: every held-out family at this severity


def _reliability_parity(model, modality: str, mrel, sess, x: np.ndarray) -> float:
    """max |r_engine - r_reference| over ``x``: the graph's second output against
    ModalityReliability.score on PyTorch's features."""
    import torch

    with torch.no_grad():
        h = model.embed(modality, torch.from_numpy(np.ascontiguousarray(x)))
        z = model.head_logits(modality, h)
    ref = mrel.score(h.numpy(), z.numpy())
    got = ort_eval.run_outputs(sess, x)[1].reshape(-1)
    return float(np.max(np.abs(ref - got))) if len(ref) else 0.0


def _corruption_reliability(sess, x: np.ndarray, r_clean: np.ndarray, modality: str, sample_rate: int, seed: int) -> dict:
    """The engine's reliability on clean ``x`` and its AUROC against every held-out
    corruption family of ``modality`` (severity EXPORT_CORRUPTIONS_SEVERITY): the
    figure the manifest carries per precision."""
    from edge_mla.corruptions import suite
    from edge_mla.reliability import auroc

    rng = np.random.default_rng(seed)
    bad = [ort_eval.run_outputs(sess, c.apply(x, rng, sample_rate))[1].reshape(-1) for c in suite(True, (modality,), (EXPORT_CORRUPTIONS_SEVERITY,))]
    r_clean = r_clean.reshape(-1)
    return {"clean": r_clean, "auroc": auroc(r_clean, np.concatenate(bad)) if bad else float("nan")}


def _fusion_block(rule: str, method: Optional[str], rel, gate: dict) -> dict:
    """The manifest's "fusion": the training method's rule, and (when exported) the
    reliability signal, gate threshold, constants and measured AUROC per precision."""
    block = {"rule": rule, "method": method}
    if rel is not None:
        block["logits"] = "calibrated"  # each engine's logits are divided by its modality's temperature
        block["reliability"] = {**rel.to_dict(), "output": "reliability", "auroc": gate.get("reliability_auroc", {})}
    return block


def _tensorrt_step(cfg: ExportConfig, tmp: Path, engines: dict, warnings: list) -> dict:
    from edge_mla.export import trt
    from edge_mla.manifest import sha256_of

    specs = trt.plan_specs(engines)
    version = trt.trt_version()
    script = trt.write_build_script(tmp, specs, cfg.max_batch, cfg.workspace_mb, cfg.dla_core)
    if version is None:
        msg = f"TensorRT is not installed here: no plans built; run {cfg.out / script.name} on the device (needs trtexec)"
        warnings.append(msg)
        log.warning(msg)
        return {"available": False, "script": script.name, "plans": [asdict(s) for s in specs]}
    built = []
    for s in specs:
        if s.calib_cache and cfg.dla_core is None:
            continue  # the cache path is for DLA; the GPU uses the QDQ engine
        facts = trt.build_plan(tmp, s, cfg.max_batch, cfg.workspace_mb, cfg.dla_core if s.calib_cache else None)
        facts["sha256"] = sha256_of(tmp / s.plan_file)
        key = "trt" if s.precision == "int8" and not s.calib_cache else f"trt_{s.precision}" + ("_dla" if s.calib_cache else "")
        engines[s.modality]["variants"][key] = facts
        built.append(s.plan_file)
    return {"available": True, "version": version, "script": script.name, "plans": built}


def _config_dict(cfg: ExportConfig) -> dict:
    d = asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
