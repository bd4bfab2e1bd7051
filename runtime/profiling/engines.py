"""Time every engine of an engine folder under each available backend and precision.

All timings of one profile come from one process run, so the ratios it reports
(INT8 vs FP32, PyTorch eager vs ONNX Runtime, batch N vs batch 1) compare like with
like; absolute times depend on the machine and its load.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.validate import number
from edge_mla.manifest import Manifest, load_manifest
from edge_mla.runtime.backends import OrtRunner, TensorRTRunner, available_backends, plan_for

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 1 << 30  # one timed batch of float32 inputs; more is a mistake, not a profile


@dataclass
class ProfileConfig:
    engines: Path
    batches: list = field(default_factory=lambda: [1, 8])
    threads: list = field(default_factory=lambda: [1, 2])
    warmup: int = 20
    repeats: int = 200
    backends: list = field(default_factory=lambda: ["onnxruntime", "torch", "tensorrt"])
    precisions: Optional[list] = None  # default: every variant in the manifest
    run_dir: Optional[Path] = None  # for PyTorch eager; default: the manifest's model.run_dir

    def __post_init__(self) -> None:
        self.engines = Path(self.engines)
        self.repeats = number(self.repeats, "repeats", lo=1, hi=1_000_000, integer=True)
        self.warmup = number(self.warmup, "warmup", lo=0, hi=1_000_000, integer=True)
        self.batches = [number(b, "batch", lo=1, hi=65536, integer=True) for b in self.batches]
        self.threads = [number(t, "threads", lo=1, hi=256, integer=True) for t in self.threads]


@dataclass
class EngineTiming:
    modality: str
    backend: str
    precision: str
    batch: int
    threads: int
    ms: dict  # min, p50, p90, p99, max, mean
    macs: Optional[int] = None  # per example
    gmacs_per_s: Optional[float] = None  # achieved at p50
    file: Optional[str] = None
    samples_ms: list = field(default_factory=list)  # every timed run, for histograms

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_s: list) -> dict:
    a = np.asarray(samples_s) * 1000.0
    return {
        "min": float(a.min()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean()), "n": int(a.size),
    }


def time_call(fn, warmup: int, repeats: int) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def example_input(spec_entry: dict, batch: int, rng: np.random.Generator) -> np.ndarray:
    """A realistic input: a random image in [0, 1], or speech-level noise PCM."""
    dims = spec_entry["input"]["shape"][1:]
    if not all(isinstance(d, int) for d in dims):
        raise EdgeMlaError(f"{spec_entry['file']}: input shape {spec_entry['input']['shape']} has named axes after the batch; the profiler needs fixed sizes")
    shape = [batch] + dims
    if 4 * int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_BYTES:
        raise EdgeMlaError(f"{spec_entry['file']}: a batch of {batch} inputs of shape {dims} is over {MAX_INPUT_BYTES >> 20} MiB; profile a smaller --batch")
    if "audio" in spec_entry:
        return (rng.normal(0, 0.1, shape)).astype(np.float32)
    return rng.random(shape, dtype=np.float32)


def _variants(manifest: Manifest, modality: str) -> dict:
    """{precision: ONNX file} of ``modality``'s engine, from the checked manifest."""
    e = manifest.doc.engines[modality]
    out = {name: v.file for name, v in e.variants.items() if v.file.endswith(".onnx")}
    out.setdefault(e.precision, e.file)
    return out


def _check_engine(manifest: Manifest, modality: str, precision: str) -> None:
    """Open the engine as the runtime does (names, shapes and classes against the
    manifest) and warm it up on a blank input: a folder that ``edge-mla run`` refuses
    is refused here too, in one line, instead of a traceback from the backend
    mid-profile or a profile of engines that cannot run."""
    from edge_mla.runtime.engine import Engine
    from edge_mla.runtime.hot_swap import warm_up

    engine = Engine(manifest.engine(modality, precision), len(manifest.classes), backend="onnxruntime")
    warm_up(engine, len(manifest.classes))


def _macs(path: Path) -> Optional[int]:
    try:
        from edge_mla.runtime.profiling.macs import count_macs

        return count_macs(path)
    except ImportError:
        log.info("onnx is not installed: MACs not counted")
    except Exception as exc:  # shape inference can fail on exotic graphs
        log.warning("could not count MACs of %s: %s", path.name, exc)
    return None


def profile_engines(cfg: ProfileConfig, progress: bool = True, extra_backends: Sequence[Callable] = ()) -> dict:
    """Returns {"timings": [EngineTiming...], "ratios": {...}, "machine": {...}, "notes": [...]}."""
    manifest = load_manifest(cfg.engines)
    rng = np.random.default_rng(0)
    timings: list = []
    notes: list = []
    jobs = []
    have = {prec for m in manifest.modalities for prec in _variants(manifest, m)}
    missing = [prec for prec in cfg.precisions or [] if prec not in have]
    if missing:
        raise EdgeMlaError(f"--precision {missing[0]}: {cfg.engines} has no {missing[0]} engine (has: {', '.join(sorted(have))})")
    for m in manifest.modalities:
        entry = manifest.data["engines"][m]
        variants = _variants(manifest, m)
        for prec, var in variants.items():
            if cfg.precisions and prec not in cfg.precisions:
                continue
            _check_engine(manifest, m, prec)
            for backend, providers in available_backends(entry, prec):
                if backend not in cfg.backends:
                    continue
                fname = plan_for(entry, prec) if backend == "tensorrt" else var
                for batch in cfg.batches:
                    for threads in cfg.threads:
                        if backend == "tensorrt" and threads != cfg.threads[0]:
                            continue  # intra-op threads mean nothing to a GPU plan
                        jobs.append((backend, providers, m, prec, fname, batch, threads))
    try:
        from tqdm import tqdm

        it = tqdm(jobs, desc="profiling engines", unit="config", disable=None if progress else True)
    except ImportError:  # pragma: no cover - tqdm is optional on a device
        it = jobs
    macs_cache: dict = {}
    for backend, providers, m, prec, fname, batch, threads in it:
        path = manifest.root / fname
        if path not in macs_cache:
            macs_cache[path] = _macs(path) if path.suffix == ".onnx" else None
        runner = TensorRTRunner(path) if backend == "tensorrt" else OrtRunner(path, threads, providers)
        x = example_input(manifest.data["engines"][m], batch, rng)
        samples = time_call(lambda: runner.run1(x), cfg.warmup, cfg.repeats)
        name = backend if backend == "tensorrt" or providers == ["CPUExecutionProvider"] else f"{backend}-{providers[0].replace('ExecutionProvider', '').lower()}"
        timings.append(make_timing(m, name, prec, batch, threads, samples, macs_cache[path], fname))

    for extra in extra_backends:
        # e.g. PyTorch eager, which lives outside the runtime (torch is no runtime
        # dependency); each returns EngineTimings measured in this same process.
        timings.extend(extra(cfg, manifest, timings, rng))
    if "tensorrt" in cfg.backends and not any(j[0] == "tensorrt" for j in jobs):
        notes.append("no TensorRT timings: TensorRT, a CUDA device or a plan in the manifest is missing here (profile on the Jetson)")
    return {
        "engines": str(cfg.engines),
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "timings": [t.to_dict() for t in timings],
        "ratios": ratios(timings),
        "notes": notes,
    }


def make_timing(m, backend, prec, batch, threads, samples, macs, fname) -> EngineTiming:
    ms = summarize(samples)
    per_example_s = ms["p50"] / 1000.0 / batch
    gmacs = (macs / per_example_s / 1e9) if macs else None
    t = EngineTiming(m, backend, prec, batch, threads, ms, macs, gmacs, fname)
    t.samples_ms = [round(x * 1000.0, 4) for x in samples]
    return t


def ratios(timings: list) -> dict:
    """p50 ratios measured in this one run: int8/fp32 (ONNX Runtime) and torch/ORT fp32."""
    by = {(t.modality, t.backend, t.precision, t.batch, t.threads): t.ms["p50"] for t in timings}
    out: dict = {"int8_over_fp32": {}, "torch_over_onnxruntime": {}}
    for (m, backend, prec, b, th), p50 in by.items():
        key = f"{m}/batch{b}/threads{th}"
        if backend == "onnxruntime" and prec == "int8" and (m, backend, "fp32", b, th) in by:
            out["int8_over_fp32"][key] = p50 / by[(m, backend, "fp32", b, th)]
        if backend == "torch" and (m, "onnxruntime", "fp32", b, th) in by:
            out["torch_over_onnxruntime"][key] = p50 / by[(m, "onnxruntime", "fp32", b, th)]
    return out


def machine_info() -> dict:
    import os
    import platform

    cpu = platform.processor() or "unknown"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    info = {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version()}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def save_json(result: dict, path: Path) -> None:
    """Written beside and renamed: a failure never leaves half a profile.json."""
    from edge_mla.staging import replace_file

    text = json.dumps(result, indent=2) + "\n"
    replace_file(path, lambda tmp: tmp.write_text(text))
