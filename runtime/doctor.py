"""`edge-mla doctor`: what this machine offers the runtime, one OK/WARN/FAIL line each.

Why: on a factory device the first question after "it does not run" is what the
box has: a camera and a mic the runtime can see, which ONNX Runtime execution
providers and TensorRT, whether the CPU has VNNI (INT8 engines are only faster
than FP32 with it), room for clips, and what the engine folder would run on.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    status: str
    what: str
    detail: str

    def line(self) -> str:
        """One line always: a path holding a newline must not forge a second OK line."""
        return f"{self.status:<4}  {self.what}: " + " ".join(self.detail.split("\n")).replace("\r", " ")


def cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def check_cpu() -> Check:
    flags = cpu_flags()
    vnni = sorted(f for f in flags if "vnni" in f)
    simd = [f for f in ("avx512f", "avx2", "neon", "asimd") if f in flags]
    if vnni:
        return Check(OK, "cpu", f"{os.cpu_count()} cores, {', '.join(simd + vnni)}: INT8 engines run faster than FP32 here")
    return Check(WARN, "cpu", f"{os.cpu_count()} cores, {', '.join(simd) or 'no AVX2/AVX-512/NEON flags'}, no VNNI: INT8 may be no faster than FP32 (compare with `edge-mla profile`)")


def check_cameras() -> Check:
    devs = sorted(glob.glob("/dev/video*"))
    if devs:
        return Check(OK, "cameras", ", ".join(devs))
    return Check(WARN, "cameras", "no /dev/video* device (a file or stream URL still works)")


def check_mics() -> Check:
    try:
        import sounddevice as sd

        names = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d.get("max_input_channels", 0) > 0]
    except Exception as exc:  # PortAudio missing or broken
        return Check(FAIL, "microphones", f"sounddevice/PortAudio unusable ({str(exc).splitlines()[0]})")
    if names:
        return Check(OK, "microphones", "; ".join(names))
    return Check(WARN, "microphones", "no input device (a WAV file still works)")


def onnxruntime_providers() -> list:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort

        return Check(OK, "onnxruntime", f"{ort.__version__}, providers: {', '.join(onnxruntime_providers())}")
    except Exception as exc:
        return Check(FAIL, "onnxruntime", f"cannot import ({exc}); pip install -e '.[runtime]'")


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:
        return None


def check_tensorrt() -> Check:
    v = tensorrt_version()
    if v:
        return Check(OK, "tensorrt", v)
    return Check(WARN, "tensorrt", "not installed (CPU engines only; on a Jetson it comes with JetPack)")


def check_disk(path: Path) -> Check:
    p = Path(path)
    if p.exists() and not p.is_dir():
        return Check(FAIL, "disk for clips", f"{p}: exists and is not a folder")
    probe = p if p.exists() else next((q for q in p.parents if q.exists()), Path("/"))
    if not probe.is_dir():  # a file above it: the folder can never be made
        return Check(FAIL, "disk for clips", f"{p}: {probe} is a file, not a folder")
    free = shutil.disk_usage(probe).free / 2**30
    writable = os.access(probe, os.W_OK)
    status = FAIL if not writable or free < 0.05 else WARN if free < 1.0 else OK
    return Check(status, "disk for clips", f"{p}: {free:.1f} GB free{'' if writable else ', not writable'}")


def check_engines(folder: Optional[Path]) -> Check:
    if folder is None:
        return Check(WARN, "engines", "no --engines folder given")
    from edge_mla.errors import EdgeMlaError
    from edge_mla.manifest import load_manifest

    from edge_mla.runtime.engine import Engine
    from edge_mla.runtime.hot_swap import warm_up

    try:  # what `run` checks before its first frame: a folder it refuses fails here too
        m = load_manifest(folder)
        m.reliability()
        for mod in m.modalities:
            if m.doc.engines[mod].format == "onnx":
                warm_up(Engine(m.engine(mod), len(m.classes), backend="onnxruntime"), len(m.classes))
    except EdgeMlaError as exc:
        return Check(FAIL, "engines", str(exc))
    providers = []
    try:
        providers = onnxruntime_providers()
    except Exception:
        pass
    parts = []
    status = OK
    for mod in m.modalities:
        e = m.doc.engines[mod]
        fmt = e.format
        if fmt == "onnx":
            where = "ONNX Runtime CPU" + (" (CUDA available)" if "CUDAExecutionProvider" in providers else "")
        else:
            where = "TensorRT" if tensorrt_version() else "TensorRT engine but no TensorRT here"
            status = status if tensorrt_version() else FAIL
        variants = ", ".join(sorted(e.variants)) or e.precision
        parts.append(f"{mod} {e.precision} ({fmt}) -> {where} [variants: {variants}]")
        if e.precision == "int8" and not any("vnni" in f for f in cpu_flags()) and status == OK:
            status = WARN
    return Check(status, "engines", f"{folder}: " + "; ".join(parts))


def run_checks(engines: Optional[Path], clips: Path) -> list:
    from edge_mla.runtime import graph

    return [k.doctor() for k in graph.SENSORS if k.doctor is not None] + [check_onnxruntime(), check_tensorrt(), check_cpu(), check_disk(clips), check_engines(engines)]
