"""Latency profiling: what a device will do before it ships.

Engine profiling (per engine, backend, precision, batch, thread count) needs only the
runtime extra (onnxruntime + numpy; `onnx` for counting MACs); PyTorch eager is
timed too when torch and the run folder are there. Runtime profiling runs the real
streaming runtime on a replay and reports latency per stage.
"""

from edge_mla.runtime.profiling.engines import EngineTiming, ProfileConfig, profile_engines
from edge_mla.runtime.profiling.macs import count_macs

__all__ = ["EngineTiming", "ProfileConfig", "profile_engines", "count_macs"]
