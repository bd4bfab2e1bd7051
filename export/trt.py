"""TensorRT plans from the exported ONNX engines, for Jetson-class devices.

``import tensorrt`` happens only inside these functions: the CPU path and the tests
never need it. Where it is absent, ``write_build_script`` writes a ``build_engines.sh``
with the equivalent ``trtexec`` lines to run on the device.

Two ways to an INT8 plan, both written:
- explicit quantization from the QDQ ONNX (GPU): TensorRT 10 with the INT8 and FP16
  builder flags, TensorRT 11 with a strongly typed network (precisions come from the
  Q/DQ nodes, the old flags are gone);
- implicit quantization from the FP32 ONNX plus our text calibration cache: what the
  DLA cores of a Jetson build (TensorRT 10 only; implicit INT8 is removed in 11).
Plans are written raw; their facts go into the manifest.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger(__name__)


def trt_version() -> Optional[str]:
    """TensorRT's version string, or None when the Python package is absent."""
    try:
        import tensorrt  # noqa: F401  (lazy: never on the CPU path)
    except Exception:  # ImportError, or a broken stub package
        return None
    return getattr(tensorrt, "__version__", "unknown")


@dataclass
class PlanSpec:
    """One plan to build: which ONNX, how, and where it goes."""

    modality: str
    onnx_file: str  # relative to the engine folder
    plan_file: str
    precision: str  # "int8" (QDQ or cache), "fp16", "fp32"
    input_name: str
    input_shape: list  # ["batch", ...]
    calib_cache: Optional[str] = None  # implicit INT8 (DLA) only

    def shapes(self, batch: int) -> str:
        return f"{self.input_name}:" + "x".join(str(batch if i == 0 else d) for i, d in enumerate(self.input_shape))


def build_plan(engine_dir: Path, spec: PlanSpec, max_batch: int = 8, workspace_mb: int = 1024, dla_core: Optional[int] = None) -> dict:
    """Build ``spec`` with the TensorRT Python API; returns the facts for the manifest."""
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    if major >= 11 and spec.calib_cache:
        raise RuntimeError(f"{spec.plan_file}: TensorRT {trt.__version__} has no implicit INT8 (calibration cache); use the QDQ engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = major >= 11 and spec.precision == "int8" and spec.calib_cache is None
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(engine_dir / spec.onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {spec.onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if not strongly_typed:
        if spec.precision in ("int8", "fp16"):
            config.set_flag(trt.BuilderFlag.FP16)  # layers left in float run in half precision
        if spec.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if spec.calib_cache:
        config.int8_calibrator = _CacheCalibrator(trt, engine_dir / spec.calib_cache)
    profile = builder.create_optimization_profile()
    shape = [int(d) for d in spec.input_shape[1:]]
    profile.set_shape(spec.input_name, [1] + shape, [1] + shape, [max_batch] + shape)
    config.add_optimization_profile(profile)
    if spec.calib_cache:
        config.set_calibration_profile(profile)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build {spec.plan_file} (see the TensorRT log above)")
    (engine_dir / spec.plan_file).write_bytes(bytes(plan))
    return {
        "format": "trt", "file": spec.plan_file, "precision": spec.precision, "tensorrt": trt.__version__,
        "strongly_typed": strongly_typed, "from": spec.onnx_file, "calib_cache": spec.calib_cache,
        "profile": {"min": 1, "opt": 1, "max": max_batch}, "workspace_mb": workspace_mb, "dla_core": dla_core,
    }


def _CacheCalibrator(trt, cache_path: Path):
    """An entropy calibrator that only reads our cache (never asks for batches)."""

    class CacheOnly(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # no data: the cache must cover the network
            return None

        def read_calibration_cache(self):
            return cache_path.read_bytes()

        def write_calibration_cache(self, cache) -> None:
            return None

    return CacheOnly()


SCRIPT_HEAD = """#!/usr/bin/env bash
# TensorRT plans for the engines in this folder; run on the device (Jetson) where
# trtexec is installed (JetPack: /usr/src/tensorrt/bin/trtexec).
# Written by 'edge-mla export --engine trt' because the TensorRT Python package was
# not importable on the export machine.
#
#   MAX_BATCH=8 WORKSPACE_MB=1024 DLA_CORE=0 ./build_engines.sh
#
# GPU: INT8 plans from the QDQ ONNX (TensorRT 10: --int8 --fp16; TensorRT 11:
# --stronglyTyped) and FP16 plans from the FP32 ONNX. With DLA_CORE set, INT8 plans
# for that DLA core are built from the FP32 ONNX and the calibration cache
# (implicit INT8, TensorRT 10), with GPU fallback for layers the DLA lacks.
# Then add the plans to manifest.json yourself or re-run the export with TensorRT.
set -euo pipefail
case "$0" in */*) cd -- "${0%%/*}" ;; esac  # the engine folder, even when its name ends in a newline ($(dirname) strips it)
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
MAX_BATCH="${MAX_BATCH:-%(max_batch)d}"
WORKSPACE_MB="${WORKSPACE_MB:-%(workspace_mb)d}"
DLA_CORE="${DLA_CORE:-%(dla_core)s}"
if [ ! -x "$TRTEXEC" ]; then echo "trtexec not found (set TRTEXEC=/path/to/trtexec)" >&2; exit 1; fi
TRT_VERSION="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*TensorRT v\\([0-9]*\\).*/\\1/p' | head -n1)"
TRT_MAJOR=$(( ${TRT_VERSION:-100000} / 10000 ))
if [ "$TRT_MAJOR" -lt 10 ]; then TRT_MAJOR=$(( ${TRT_VERSION:-8601} / 1000 )); fi
echo "trtexec: $TRTEXEC (TensorRT major $TRT_MAJOR)"
if [ "$TRT_MAJOR" -ge 11 ]; then INT8_QDQ_FLAGS="--stronglyTyped"; else INT8_QDQ_FLAGS="--int8 --fp16"; fi
# TensorRT ignores a calibration cache whose header names another version: a copy
# stamped with this device's version is what trtexec reads (the scales themselves do
# not change). The shipped caches stay as they are: manifest.json holds their hashes.
CALIB_DIR="$(mktemp -d)"
trap 'rm -rf -- "$CALIB_DIR"' EXIT
for c in *.calib.cache; do
  [ -e "$c" ] || continue
  if [ -n "$TRT_VERSION" ]; then sed "1s/^TRT-[0-9]*-/TRT-${TRT_VERSION}-/" "$c" > "$CALIB_DIR/$c"; else cp -- "$c" "$CALIB_DIR/$c"; fi
done
"""


def _shape_flags(spec: PlanSpec) -> str:
    shape1 = spec.shapes(1)
    shape_max = spec.shapes(0).replace(f"{spec.input_name}:0", f"{spec.input_name}:${{MAX_BATCH}}", 1)
    return f"--minShapes={shape1} --optShapes={shape1} --maxShapes={shape_max}"


def script_lines(specs: Sequence[PlanSpec]) -> list:
    """The trtexec command lines (bash) for ``specs``."""
    lines = []
    for s in specs:
        common = f"{_shape_flags(s)} --memPoolSize=workspace:${{WORKSPACE_MB}}"
        onnx_q, plan_q = shlex.quote(s.onnx_file), shlex.quote(s.plan_file)
        if s.calib_cache:  # implicit INT8 from FP32 ONNX + cache: DLA (TensorRT 10)
            lines += [
                'if [ -n "$DLA_CORE" ]; then',
                f'  if [ "$TRT_MAJOR" -ge 11 ]; then echo "skip {s.plan_file}: TensorRT 11 has no implicit INT8 (calibration cache)" >&2; else',
                f'  "$TRTEXEC" --onnx={onnx_q} --int8 --fp16 --calib="$CALIB_DIR"/{shlex.quote(s.calib_cache)} {common} '
                f'--useDLACore="$DLA_CORE" --allowGPUFallback --saveEngine={plan_q}',
                "  fi",
                "fi",
            ]
        elif s.precision == "int8":
            lines.append(f'"$TRTEXEC" --onnx={onnx_q} $INT8_QDQ_FLAGS {common} --saveEngine={plan_q}')
        elif s.precision == "fp16":
            lines.append(f'"$TRTEXEC" --onnx={onnx_q} --fp16 {common} --saveEngine={plan_q}')
        else:
            lines.append(f'"$TRTEXEC" --onnx={onnx_q} {common} --saveEngine={plan_q}')
    return lines


def write_build_script(engine_dir: Path, specs: Sequence[PlanSpec], max_batch: int = 8, workspace_mb: int = 1024, dla_core: Optional[int] = None) -> Path:
    path = Path(engine_dir) / "build_engines.sh"
    head = SCRIPT_HEAD % {"max_batch": max_batch, "workspace_mb": workspace_mb, "dla_core": "" if dla_core is None else int(dla_core)}
    path.write_text(head + "\n".join(script_lines(specs)) + '\necho "plans written to $(pwd)"\n')
    path.chmod(0o755)
    return path


def plan_specs(engines: dict) -> list:
    """Plans worth building for the manifest's engines: INT8 (QDQ) and FP16 for the
    GPU, INT8 with the cache for DLA, per modality."""
    specs = []
    for mod, e in engines.items():
        var = e["variants"]
        shape = e["input"]["shape"]
        name = e["input"]["name"]
        if "int8" in var and var["int8"].get("symmetric_activations", True):  # TensorRT needs zero point 0
            specs.append(PlanSpec(mod, var["int8"]["file"], f"{mod}.int8.plan", "int8", name, shape))
        specs.append(PlanSpec(mod, var["fp32"]["file"], f"{mod}.fp16.plan", "fp16", name, shape))
        if "int8" in var and var["int8"].get("calib_cache"):
            specs.append(PlanSpec(mod, var["fp32"]["file"], f"{mod}.int8.dla.plan", "int8", name, shape, var["int8"]["calib_cache"]))
    return specs
