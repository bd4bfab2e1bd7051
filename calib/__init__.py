"""Calibration sets for INT8: selection from the training split, readers for ONNX
Runtime's calibrator, and TensorRT's text calibration cache."""

from edge_mla.calib.select import stratified_indices
from edge_mla.calib.trt_cache import parse_trt_cache, write_trt_cache

__all__ = ["stratified_indices", "parse_trt_cache", "write_trt_cache"]
