"""Measurements the runtime keeps about itself: per-stage timestamps of every
result at the first decision that used it, and process CPU / memory samples.

Both are bounded (deques), so keeping statistics never grows memory on a device
that runs for weeks; the profiler (issue 5) reads the same records.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Optional

import numpy as np

from edge_mla.runtime.clock import now
from edge_mla.runtime.memory import malloc_trim

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "engine", "done", "fused", "output")


class StageRecorder:
    """One record per (modality, result) at its first use: the six timestamps
    capture -> preprocess start -> engine start -> engine done -> fused -> written."""

    def __init__(self, maxlen: int = 5000) -> None:  # bounded: ~4 min of records at 20/s (the soak in BENCHMARKS.md section 11)
        self.records: collections.deque = collections.deque(maxlen=maxlen)
        self._seen: dict = {}

    def add(self, results: dict, used: list, t_fuse: float, t_fused: float, t_output: float) -> None:
        for m in used:
            r = results.get(m)
            if r is None or self._seen.get(m) == r.seq:
                continue
            self._seen[m] = r.seq
            self.records.append((m, r.t_capture, r.t_pre, r.t_engine, r.t_done, t_fused, t_output))

    def as_dicts(self) -> list:
        return [dict(zip(("modality",) + STAGES, rec)) for rec in self.records]

    def summary(self) -> dict:
        """Per modality: n, p50/p99 of capture->output, engine, overhead (= the
        difference: everything the runtime adds around the engine), and the mean
        of each stage gap."""
        out = {}
        by = collections.defaultdict(list)
        for rec in self.records:
            by[rec[0]].append(rec[1:])
        for m, rows in by.items():
            a = np.asarray(rows, np.float64)
            e2e = (a[:, 5] - a[:, 0]) * 1000
            eng = (a[:, 3] - a[:, 2]) * 1000
            ovh = e2e - eng
            gaps = np.diff(a, axis=1).mean(axis=0) * 1000
            out[m] = {
                "n": int(len(rows)),
                "e2e_p50_ms": float(np.percentile(e2e, 50)),
                "e2e_p99_ms": float(np.percentile(e2e, 99)),
                "engine_p50_ms": float(np.percentile(eng, 50)),
                "engine_p99_ms": float(np.percentile(eng, 99)),
                "overhead_p50_ms": float(np.percentile(ovh, 50)),
                "overhead_p99_ms": float(np.percentile(ovh, 99)),
                "mean_ms": {f"{STAGES[i]}->{STAGES[i + 1]}": float(g) for i, g in enumerate(gaps)},
            }
        return out


class ResourceSampler:
    """Thread sampling this process's CPU time and RSS once per ``period`` s."""

    def __init__(self, stop: threading.Event, period: float = 1.0, maxlen: int = 600, trim_every: float = 60.0) -> None:
        """Keeps the last ``maxlen`` samples (10 minutes at 1 s: the report's RSS
        curve); CPU % and peak RSS cover the whole run. A window of 100,000 samples
        cost a runtime meant to run for months about 0.5 MB per hour. Every
        ``trim_every`` s it also hands freed heap pages back to the OS (glibc's
        malloc_trim): the decode, resample and engine threads free many short-lived
        buffers, and glibc otherwise keeps the fragments, which showed as a slow RSS
        rise in the soak benchmark (BENCHMARKS.md section 11)."""
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._stop = stop
        self.period = period
        self.samples: collections.deque = collections.deque(maxlen=maxlen)  # (t, cpu_seconds, rss_bytes)
        self.peak_rss = 0
        self.trim_every = trim_every
        self._trim = malloc_trim()
        self._last_trim = 0.0
        self._t0: Optional[float] = None
        self._cpu0 = 0.0
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)

    def _sample(self) -> None:
        ct = self._proc.cpu_times()
        rss = self._proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        self.samples.append((now(), ct.user + ct.system, rss))

    def start(self) -> None:
        ct = self._proc.cpu_times()
        self._t0, self._cpu0 = now(), ct.user + ct.system
        self._sample()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._sample()
            except Exception as exc:  # psutil reads /proc: out of file descriptors, it raised and the thread died
                log.debug("resources: sample skipped (%s)", exc)
                continue
            if self._trim is not None and self.trim_every > 0 and now() - self._last_trim >= self.trim_every:
                self._last_trim = now()
                self._trim(0)

    def finish(self) -> dict:
        self._thread.join(2.0)
        self._sample()
        t1, cpu1, _ = self.samples[-1]
        wall = max(t1 - (self._t0 or t1), 1e-9)
        try:
            import resource

            peak = max(self.peak_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        except Exception:  # pragma: no cover - non-POSIX
            peak = self.peak_rss
        return {"cpu_percent": 100.0 * (cpu1 - self._cpu0) / wall, "peak_rss_mb": peak / 2**20, "rss_mb": [(round(t - self._t0, 2), round(r / 2**20, 2)) for t, _, r in self.samples]}

