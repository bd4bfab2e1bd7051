"""Running ONNX engines for the export's checks (through the runtime's backend
Runners, so the gate measures what a device runs): batched logits, parity against
PyTorch, and single-thread batch-1 latency.

Latency of the two precisions is measured interleaved (fp32, int8, fp32, ...) in one
process so that load from other processes on a shared machine hits both equally.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np


from edge_mla.runtime.engine import cpu_session as session  # noqa: F401  (one session recipe for export and runtime)


def run_logits(runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """First output of ``runner`` over ``x`` in batches."""
    outs = [runner.run1(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)]
    return np.concatenate(outs).astype(np.float32)


def run_outputs(runner, x: np.ndarray, batch_size: int = 256) -> list:
    """Every output of the engine over ``x`` (batched), float32, in graph order."""
    name = runner.input_names[0]
    parts = [runner.run({name: x[s : s + batch_size]}) for s in range(0, x.shape[0], batch_size)]
    return [np.concatenate([p[o] for p in parts]).astype(np.float32) for o in runner.output_names]


@dataclass
class Parity:
    samples: int
    max_abs_diff: float
    top1_agreement: float  # fraction of samples whose argmax matches

    def to_dict(self) -> dict:
        return asdict(self)


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if reference.size else 1.0
    return Parity(int(reference.shape[0]), diff, agree)


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def interleaved_latency(runners: Sequence, x1: np.ndarray, repeats: int = 200, warmup: int = 10) -> list:
    """Median/p90 ms per runner for one batch-1 input ``x1`` (shape (1, ...))."""
    x1 = np.ascontiguousarray(x1, np.float32)
    for _ in range(warmup):
        for r in runners:
            r.run1(x1)
    times = [[] for _ in runners]
    clock: Callable[[], int] = time.perf_counter_ns
    for _ in range(max(1, repeats)):
        for i, r in enumerate(runners):
            t0 = clock()
            r.run1(x1)
            times[i].append((clock() - t0) / 1e6)
    return [Latency(float(np.median(t)), float(np.percentile(t, 90)), len(t)) for t in times]
