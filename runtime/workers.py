"""Encoder workers: one thread per modality, each with its own engine, running on
the newest data at its own pace.

The video worker runs on new frames as they arrive, at most ``limit`` times per
second (the decision rate: a frame the fusion would not decide on is not worth an
engine call, and one that waited for the next decision would only add latency), or
paced at ``video_rate`` Hz; the audio worker on a sliding window every ``hop``
seconds. A worker never queues work: it takes whatever is newest when it is free, so
a slow engine lowers its own rate instead of building a backlog. Each Result keeps the stage timestamps
(capture -> preprocess -> engine -> done) that the latency report is built from.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edge_mla.preprocess import image_to_tensor
from edge_mla.runtime.clock import FlowLimiter, Pacer, now
from edge_mla.runtime.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class Result:
    modality: str
    logits: np.ndarray  # (1, C)
    t_capture: float  # when the sensor data was captured
    t_pre: float  # preprocessing started
    t_engine: float  # engine started
    t_done: float  # engine finished
    seq: int  # the source item's sequence number
    reliability: Optional[float] = None  # the engine's second output, when it has one


def image_preprocessor(size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Frame (BGR or grey, any size) -> (1, S, S) float32, via the shared code."""
    return lambda frame: image_to_tensor(frame, size)


class Worker:
    """Runs ``engine`` on items from ``take(last_seq)``; publishes the latest Result."""

    def __init__(
        self,
        modality: str,
        engine: Engine,
        take: Callable[[int, float], Optional[object]],
        preprocess: Callable[[np.ndarray], np.ndarray],
        rate: Optional[float],
        stop: threading.Event,
        gate: Optional[Callable[[np.ndarray], bool]] = None,
        on_result: Optional[Callable[[str], None]] = None,
        limit: Optional[float] = None,
    ) -> None:
        self.modality = modality
        # limit: an unpaced worker runs on items captured at most this many times per
        # second and passes over the ones in between (counted in ``limited``)
        self._limiter = FlowLimiter(limit if not rate else None)
        # gate(x) False: the input carries no signal (a muted mic), so no result is
        # published and the last one ages out of fusion instead of voting garbage.
        self._gate = gate
        self.gated = 0
        self._on_result = on_result  # e.g. FusionLoop.notify: decide as soon as a result is fresh
        self.engine = engine
        self._take = take
        self._preprocess = preprocess
        self.rate = rate
        self._stop = stop
        self._lock = threading.Lock()
        self._latest: Optional[Result] = None
        self.results = 0
        self.errors = 0
        self.skipped = 0  # paced ticks that found no new data
        self.pacer: Optional[Pacer] = None
        self.history: Optional[list] = None  # set to a list to keep every Result (profiling)
        self.busy_since: Optional[float] = None  # when the engine call in progress began (a hung engine shows here)
        self._thread = threading.Thread(target=self._run, name=f"{modality}-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def latest(self) -> Optional[Result]:
        with self._lock:
            return self._latest

    def _run(self) -> None:
        pacer = self.pacer = Pacer(self.rate, self._stop) if self.rate else None
        last_seq = 0
        while not self._stop.is_set():
            if pacer is not None:
                if not pacer.wait():
                    break
                # wait up to one period for data that arrives after the tick, so the
                # engine runs on just-captured input (sources that have no such wait
                # return their newest item at once)
                item = self._take(last_seq, pacer.period)
                if item is None:
                    self.skipped += 1
                    continue
            else:
                item = self._take(last_seq, 0.2)
                if item is None:
                    continue
            last_seq = item.seq
            if not self._limiter.admit(item.t_capture):
                continue  # sooner than the rate: the next decision would not use it
            t_pre = now()
            try:
                x = self._preprocess(item.data)
                if self._gate is not None and not self._gate(x):
                    self.gated += 1
                    continue
                t_engine = self.busy_since = now()
                infer = getattr(self.engine, "infer", None)
                try:
                    logits, rel = infer(x) if infer is not None else (self.engine.run(x), None)
                finally:
                    self.busy_since = None
            except Exception:
                self.errors += 1
                log.exception("%s worker: inference failed", self.modality)
                if self._stop.wait(0.5):
                    break
                continue
            if not (np.all(np.isfinite(logits)) and (rel is None or np.all(np.isfinite(rel)))):
                # an engine that passed its warm-up can still give NaN on some input:
                # such a result would vote (argmax of NaN is class 0) and break the JSON
                # lines, so it is an error and the last good result ages out instead
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning("%s worker: the engine gave non-finite output; result dropped (%d errors so far)", self.modality, self.errors)
                continue
            r = Result(self.modality, logits, item.t_capture, t_pre, t_engine, now(), item.seq, rel)
            with self._lock:
                self._latest = r
            self.results += 1
            if self._on_result is not None:
                self._on_result(self.modality)
            if self.history is not None:
                self.history.append(r)

    @property
    def limited(self) -> int:
        """Items passed over by the rate limit (not a loss: see ``limit``)."""
        return self._limiter.refused

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s worker did not stop within %.0fs", self.modality, timeout)
