"""TensorRT's text calibration cache: write it from our scales, parse it back.

Format (what TensorRT's IInt8Calibrator::writeCalibrationCache produces):

    TRT-8601-EntropyCalibration2
    image: 3c010a14
    /features/Conv_output_0: 3d1b2c4e

one ``tensor: hex`` line per activation, the hex being the big-endian bytes of the
float32 scale (amax / 127). A Jetson builds an implicit-INT8 plan from the FP32 ONNX
plus this file (``trtexec --int8 --calib=FILE``) without the calibration data.
trtexec's own calibrator is EntropyCalibration2, so the header names that algorithm
whichever ORT method produced the ranges: the scales are ours either way.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Mapping

DEFAULT_TRT_VERSION = 8601  # NV_TENSORRT_VERSION of the header (JetPack 5: 8.6.1 -> 8601; TRT 10.3 -> 100300)
DEFAULT_ALGORITHM = "EntropyCalibration2"


class CalibrationCacheError(ValueError):
    """The file is not a TensorRT text calibration cache."""


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def format_trt_cache(scales: Mapping[str, float], trt_version: int = DEFAULT_TRT_VERSION, algorithm: str = DEFAULT_ALGORITHM) -> str:
    lines = [f"TRT-{int(trt_version)}-{algorithm}"]
    for name, scale in scales.items():
        s = float(scale)
        if not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale of tensor {name!r} must be a positive finite number, got {scale}")
        if ":" in name and name.rsplit(":", 1)[1].strip() == "":
            raise ValueError(f"tensor name {name!r} cannot end with ':'")
        lines.append(f"{name}: {scale_to_hex(s)}")
    return "\n".join(lines) + "\n"


def write_trt_cache(path: str | os.PathLike, scales: Mapping[str, float], trt_version: int = DEFAULT_TRT_VERSION, algorithm: str = DEFAULT_ALGORITHM) -> Path:
    """Write ``scales`` (tensor name -> float32 scale) as a TensorRT text cache."""
    path = Path(path)
    path.write_text(format_trt_cache(scales, trt_version, algorithm))
    return path


def parse_trt_cache(path_or_text: str | os.PathLike) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a text cache given as a path or its contents.

    Tensor names may contain ':' (ONNX allows it), so each line splits at its last
    ': '."""
    p = Path(path_or_text) if not isinstance(path_or_text, str) or "\n" not in path_or_text else None
    text = p.read_text() if p is not None else str(path_or_text)
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationCacheError(f"{p or 'text'}: not a TensorRT calibration cache (first line must start with 'TRT-')")
    scales: dict[str, float] = {}
    for i, ln in enumerate(lines[1:], start=2):
        name, sep, hexval = ln.rpartition(": ")
        if not sep or not name:
            raise CalibrationCacheError(f"{p or 'text'}:{i}: expected 'tensor: hex', got {ln!r}")
        try:
            scales[name] = hex_to_scale(hexval.strip())
        except (ValueError, struct.error):
            raise CalibrationCacheError(f"{p or 'text'}:{i}: {hexval!r} is not 8 hex digits of a float32") from None
    return lines[0], scales
